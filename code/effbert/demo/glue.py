"""Two small generated GLUE tasks in the official file layouts, for the demo run and the tests.

SST-2: lower-cased, tokenised sentences about invented places, people and animals whose sentiment is
carried by clear polarity words (one or two, never mixed). MRPC: a templated statement of facts beside
either a reworded version of it (label 1) or the reworded version with one fact changed (label 0), so
the label depends on whether a name, number or year matches across the pair.

The layouts match the files GLUE's download script writes: SST-2 train/dev `sentence\\tlabel` (with the
space before the tab that the real sentences carry), test `index\\tsentence`; MRPC train/dev with a
byte order mark before `Quality\\t#1 ID\\t#2 ID\\t#1 String\\t#2 String`, test with `index` first.
Everything is drawn from seeded generators: the same seed writes byte-identical files.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from effbert.files import atomic_dir

SST2_SIZES = {"train": 2000, "dev": 300, "test": 300}
MRPC_SIZES = {"train": 1500, "dev": 200, "test": 200}

PLACES = ["Varnholt", "Quillmere", "Osterfall", "Brindlecombe", "Tamsk", "Korrath", "Dunmarrow",
          "Elsworth", "Palvane", "Ravensholm", "Kestrin", "Mirrowdale", "Oskarna", "Thistlegate"]
PEOPLE = ["Ada Verrin", "Tomas Kell", "Mirela Osk", "Jonah Brandt", "Ilse Marrow", "Pavel Stroud",
          "Nadia Quell", "Oren Vale", "Greta Lund", "Sami Orrin", "Lena Hart", "Viktor Ames"]
ANIMALS = ["marsh heron", "grey vole", "striped wildcat", "river otter", "copper beetle", "snow hare",
           "long-tailed swift", "cave newt", "spotted toad", "hill goat"]
NOUNS = ["journey", "book", "museum", "harbour", "festival", "film", "garden", "song", "chronicle",
         "voyage", "market", "exhibition", "bridge", "village", "opera", "lecture"]
ADVERBS = ["very", "truly", "rather", "quite", "often", "always", "deeply", "simply"]
POSITIVE = ["beautiful", "charming", "delightful", "wonderful", "splendid", "pleasant", "lovely",
            "brilliant", "moving", "joyful", "excellent", "warm"]
NEGATIVE = ["dreary", "dull", "grim", "awful", "bleak", "miserable", "gloomy", "tedious", "dreadful",
            "ugly", "boring", "clumsy"]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _sst2_sentence(rng: random.Random, positive: bool) -> str:
    words = POSITIVE if positive else NEGATIVE
    adj, adj2 = rng.sample(words, 2)
    adv = rng.choice(ADVERBS)
    noun = rng.choice(NOUNS)
    place = rng.choice(PLACES).lower()
    person = rng.choice(PEOPLE).lower()
    animal = rng.choice(ANIMALS)
    subject = rng.choice([f"the {noun} of {place}", f"the story of {person}", f"the {animal} exhibit",
                          f"{person} 's {noun}", f"the old {noun} near {place}"])
    return rng.choice([
        f"{subject} is {adv} {adj} .",
        f"it 's {_article(adj)} {adj} {noun} about the {animal} of {place} .",
        f"visitors found {subject} {adj} and {adj2} .",
        f"{adv} {adj} {noun}",
        f"{person} wrote that {subject} was {adj} .",
        f"{_article(adj)} {adj} , {adv} {adj2} look at {place}",
        f"the guide to {place} calls {subject} {adj} .",
    ])


def _sst2_split(rng: random.Random, n: int, seen: set[str]) -> list[tuple[str, int]]:
    rows = []
    while len(rows) < n:
        label = rng.randrange(2)
        sentence = _sst2_sentence(rng, positive=bool(label))
        if sentence not in seen:  # no sentence in two splits
            seen.add(sentence)
            rows.append((sentence, label))
    return rows


# MRPC statements: (original, reworded) templates over the same named slots
MRPC_TEMPLATES = [
    ("{person} founded the museum of {place} in {year} .",
     "The museum of {place} was founded by {person} in {year} ."),
    ("The town of {place} has a population of {number} people .",
     "{number} people live in the town of {place} ."),
    ("{person} counted {number} {animal}s near the river in {place} .",
     "Near the river in {place} , {person} counted {number} {animal}s ."),
    ("The {animal} was first described by {person} in {year} .",
     "In {year} , {person} first described the {animal} ."),
    ("The bridge at {place} is {number} metres long and opened in {year} .",
     "Opened in {year} , the bridge at {place} is {number} metres long ."),
    ("{person} moved to {place} in {year} to study the {animal} .",
     "In {year} , {person} moved to {place} to study the {animal} ."),
    ("The festival of {place} drew {number} visitors in {year} .",
     "In {year} , {number} visitors came to the festival of {place} ."),
    ("{person} said the {animal} population of {place} fell to {number} .",
     "The {animal} population of {place} fell to {number} , {person} said ."),
]

SLOTS: dict[str, Callable[[random.Random], str]] = {
    "person": lambda rng: rng.choice(PEOPLE),
    "place": lambda rng: rng.choice(PLACES),
    "animal": lambda rng: rng.choice(ANIMALS),
    "year": lambda rng: str(rng.randrange(1750, 1990)),
    "number": lambda rng: str(rng.choice([12, 40, 75, 120, 300, 450, 800, 1200, 2500, 6000, 9000])),
}


def _mrpc_pair(rng: random.Random, paraphrase: bool) -> tuple[str, str]:
    """A sentence and its rewording (label 1), or a sentence and the rewording of another statement (label 0).

    A negative shares neither the facts nor the template with its partner, so word overlap tells the
    classes apart: learnable by the demo's tiny models in a few epochs.
    """
    original, reworded = rng.choice(MRPC_TEMPLATES)
    if not paraphrase:
        reworded = rng.choice([t for t in MRPC_TEMPLATES if t[0] != original])[1]
    facts = {slot: draw(rng) for slot, draw in SLOTS.items()}
    other = {slot: draw(rng) for slot, draw in SLOTS.items()}
    pair = (original.format(**facts), reworded.format(**(facts if paraphrase else other)))
    return pair if rng.random() < 0.5 else pair[::-1]


def _mrpc_split(rng: random.Random, n: int, seen: set[tuple[str, str]], ids: set[int]) -> list[tuple]:
    rows = []
    while len(rows) < n:
        label = rng.randrange(2)
        a, b = _mrpc_pair(rng, paraphrase=bool(label))
        id_a, id_b = rng.sample(range(100000, 4000000), 2)
        if (a, b) in seen or id_a in ids or id_b in ids:  # no pair or sentence id twice
            continue
        seen.add((a, b))
        ids.update((id_a, id_b))
        rows.append((label, id_a, id_b, a, b))
    return rows


def _write(path: Path, lines: list[str], *, bom: bool = False) -> None:
    text = ("\ufeff" if bom else "") + "".join(line + "\n" for line in lines)
    path.write_bytes(text.encode("utf-8"))


def write_demo_glue(glue_dir: Path, *, seed: int = 0) -> None:
    """Write <glue_dir>/SST-2/{train,dev,test}.tsv and <glue_dir>/MRPC/{train,dev,test}.tsv."""
    glue_dir = Path(glue_dir)

    rng = random.Random(f"effbert-demo-glue-SST-2-{seed}")  # str seeds are hashed with sha512: stable
    seen: set = set()
    splits = {name: _sst2_split(rng, n, seen) for name, n in SST2_SIZES.items()}
    with atomic_dir(glue_dir / "SST-2") as out:
        for name in ("train", "dev"):
            _write(out / f"{name}.tsv", ["sentence\tlabel"] + [f"{s} \t{y}" for s, y in splits[name]])
        rows = [f"{i}\t{s}" for i, (s, _) in enumerate(splits["test"])]
        _write(out / "test.tsv", ["index\tsentence"] + rows)

    rng = random.Random(f"effbert-demo-glue-MRPC-{seed}")
    seen, ids = set(), set()
    splits = {name: _mrpc_split(rng, n, seen, ids) for name, n in MRPC_SIZES.items()}
    with atomic_dir(glue_dir / "MRPC") as out:
        for name in ("train", "dev"):
            rows = [f"{y}\t{i1}\t{i2}\t{a}\t{b}" for y, i1, i2, a, b in splits[name]]
            _write(out / f"{name}.tsv", ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"] + rows, bom=True)
        rows = [f"{k}\t{i1}\t{i2}\t{a}\t{b}" for k, (_, i1, i2, a, b) in enumerate(splits["test"])]
        _write(out / "test.tsv", ["index\t#1 ID\t#2 ID\t#1 String\t#2 String"] + rows)
