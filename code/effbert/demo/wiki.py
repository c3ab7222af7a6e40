"""A small generated MediaWiki dump (.xml.bz2, export-0.10 layout) for the demo run and the tests.

The articles describe an invented world of towns, people and animal species. Their wikitext carries real
markup for wikiextractor to remove: '''bold''', [[links|shown text]], == headings ==, {{templates}},
<ref> footnotes and a category link. The text is made to be learnable by a tiny model:
- facts repeat consistently across articles: a town always lies on the same river in the same region, a
  species always has the same colour and food, a person was always born in the same town, and every
  mention of an entity in another article restates one of those facts;
- sentences inside a paragraph follow a fixed order that pronouns and time words tie together ("X is a
  town in Y. It lies on the Z. It was founded in 1820 ..."), so the order of two sentences is learnable;
- most articles hold 140-220 words; every STUB_EVERY-th page is a stub of under 128 words, which the
  Wikipedia length filter drops, so the demo shows it working.
Everything comes from random.Random(seed) and fixed dates: the same seed writes a byte-identical file.
"""

from __future__ import annotations

import bz2
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar
from xml.sax.saxutils import escape

from effbert.files import atomic_path

STUB_EVERY = 12
DEMO_WIKI_NAME = "demowiki-pages-articles.xml.bz2"

COUNTRIES = {
    "Valdoria": ["Ostmark", "Lindra", "Carrow"],
    "Esmerane": ["Tolvane", "Brisk", "Harrowfield"],
    "Norvessa": ["Kelmoor", "Saltreach", "Dunhollow"],
}
SYLLABLES_A = ["Var", "Quil", "Oster", "Brin", "Tam", "Kor", "Dun", "Els", "Pal", "Rav", "Kes", "Mir",
               "Osk", "This", "Hal", "Lor", "Mer", "Fen", "Gal", "Wend", "Ash", "Cal", "Tor", "Bel"]
SYLLABLES_B = ["holt", "mere", "fall", "combe", "ford", "wick", "ton", "by", "stead", "moor", "gate",
               "well", "den", "ley", "bury", "haven"]
RIVER_NAMES = ["Tamsel", "Orrin", "Vell", "Carra", "Maun", "Islet", "Brode", "Kerrow", "Lune", "Dasse",
               "Fenner", "Sallow"]
GIVEN_NAMES = {
    "she": ["Ada", "Mirela", "Ilse", "Nadia", "Greta", "Lena", "Petra", "Sonja", "Elin", "Maren", "Talia",
            "Vera"],
    "he": ["Tomas", "Jonah", "Pavel", "Oren", "Sami", "Viktor", "Anton", "Emil", "Lukas", "Rasmus",
           "Teodor", "Karel"],
}
SURNAMES = ["Verrin", "Kell", "Osk", "Brandt", "Marrow", "Stroud", "Quell", "Vale", "Lund", "Orrin", "Hart",
            "Ames", "Tarn", "Holm", "Reeve", "Castel", "Wren", "Dorne"]
PROFESSIONS = {  # profession -> (field of work, what they made)
    "painter": ("painting", "landscapes of the river valleys"),
    "engineer": ("engineering", "stone bridges and mills"),
    "poet": ("poetry", "long poems about the sea"),
    "botanist": ("botany", "a survey of the wild flowers"),
    "composer": ("music", "songs for choirs"),
    "architect": ("architecture", "town halls and libraries"),
}
INDUSTRIES = {  # what a town is known for -> where its people work
    "wool": "the wool mills", "cheese": "dairy farming", "glass": "the glass works", "timber": "forestry",
    "salt": "the salt pans", "pottery": "the potteries", "cider": "the orchards", "iron": "the iron mines",
}
TERRAINS = ["flat farmland", "low wooded hills", "wet meadows", "rocky moorland"]
ANIMAL_KINDS = {  # kind -> (class, body covering, where it lives)
    "heron": ("bird", "feathers", "marshes"),
    "vole": ("rodent", "fur", "meadows"),
    "otter": ("mammal", "fur", "rivers"),
    "beetle": ("insect", "wing cases", "forests"),
    "toad": ("amphibian", "skin", "ponds"),
    "owl": ("bird", "feathers", "forests"),
    "hare": ("mammal", "fur", "hills"),
    "newt": ("amphibian", "skin", "streams"),
}
COLOURS = ["red", "grey", "brown", "black", "white", "green", "golden", "blue"]
FOODS = ["insects", "fish", "seeds", "grass", "worms", "berries", "snails", "frogs"]

SITEINFO = """  <siteinfo>
    <sitename>Demowiki</sitename>
    <dbname>demowiki</dbname>
    <base>https://demo.invalid/wiki/Main_Page</base>
    <generator>effbert demo generator</generator>
    <case>first-letter</case>
    <namespaces>
      <namespace key="0" case="first-letter" />
      <namespace key="10" case="first-letter">Template</namespace>
      <namespace key="14" case="first-letter">Category</namespace>
      <namespace key="828" case="first-letter">Module</namespace>
    </namespaces>
  </siteinfo>
"""
ROOT_OPEN = (
    '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
    'xsi:schemaLocation="http://www.mediawiki.org/xml/export-0.10/ '
    'http://www.mediawiki.org/xml/export-0.10.xsd" version="0.10" xml:lang="en">\n'
)
FIRST_TIMESTAMP = datetime(2020, 1, 1)
# distinct titles the name lists allow (towns, species and people each need their own)
MAX_PAGES = (len(SYLLABLES_A) * len(SYLLABLES_B) + sum(map(len, COUNTRIES.values())) * len(ANIMAL_KINDS)
             + sum(map(len, GIVEN_NAMES.values())) * len(SURNAMES)) // 2
T = TypeVar("T")


@dataclass(frozen=True)
class Town:
    name: str
    region: str
    country: str
    river: str
    founded: int
    population: int
    known_for: str
    terrain: str
    neighbour: str = ""


@dataclass(frozen=True)
class Person:
    name: str
    pronoun: str
    born: int
    died: int
    town: Town
    profession: str


@dataclass(frozen=True)
class Species:
    name: str
    kind: str
    colour: str
    food: str
    region: str
    country: str
    lifespan: int


def write_demo_wiki(path: Path, *, pages: int = 240, seed: int = 0) -> None:
    """Write `pages` generated articles as a bz2-compressed MediaWiki XML dump at `path` (atomically)."""
    if not 1 <= pages <= MAX_PAGES:
        raise ValueError(f"pages must be between 1 and {MAX_PAGES} (the generator's names run out), got {pages}")
    rng = random.Random(seed)
    towns, people, species = _world(rng, pages)
    articles: list[tuple[str, str]] = []
    order = [("town", t) for t in towns] + [("person", p) for p in people] + [("species", s) for s in species]
    rng.shuffle(order)
    for number, (kind, entity) in enumerate(order[:pages], start=1):
        stub = number % STUB_EVERY == 0
        write = {"town": _town_article, "person": _person_article, "species": _species_article}[kind]
        articles.append((entity.name, write(entity, rng, stub)))
    xml = ROOT_OPEN + SITEINFO + "".join(_page(i, title, text) for i, (title, text) in enumerate(articles, 1))
    xml += "</mediawiki>\n"
    with atomic_path(path) as tmp:
        tmp.write_bytes(bz2.compress(xml.encode("utf-8"), 9))


def _world(rng: random.Random, pages: int) -> tuple[list[Town], list[Person], list[Species]]:
    regions = [(region, country) for country, rs in COUNTRIES.items() for region in rs]
    n_towns = min(round(pages * 0.4), len(SYLLABLES_A) * len(SYLLABLES_B))
    n_species = min(round(pages * 0.25), len(regions) * len(ANIMAL_KINDS))
    n_people = pages - n_towns - n_species  # people fill the rest: their names are plenty
    towns = []
    for name in _unique(rng, n_towns, lambda: rng.choice(SYLLABLES_A) + rng.choice(SYLLABLES_B)):
        region, country = rng.choice(regions)
        towns.append(Town(name, region, country, rng.choice(RIVER_NAMES), rng.randrange(1650, 1900),
                          rng.randrange(8, 400) * 100, rng.choice(sorted(INDUSTRIES)), rng.choice(TERRAINS)))
    towns = [_with_neighbour(t, towns, rng) for t in towns]
    people = []
    for pronoun, name in _unique(rng, n_people, lambda: _person_name(rng)):
        born = rng.randrange(1780, 1950)
        people.append(Person(name, pronoun, born, born + rng.randrange(45, 90), rng.choice(towns),
                             rng.choice(sorted(PROFESSIONS))))
    species = []
    kinds = sorted(ANIMAL_KINDS)
    for (region, country), kind in _unique(rng, n_species, lambda: (rng.choice(regions), rng.choice(kinds))):
        species.append(Species(f"{region} {kind}", kind, rng.choice(COLOURS), rng.choice(FOODS), region,
                               country, rng.randrange(2, 20)))
    return towns, people, species


def _person_name(rng: random.Random) -> tuple[str, str]:
    pronoun = rng.choice(["she", "he"])
    return pronoun, f"{rng.choice(GIVEN_NAMES[pronoun])} {rng.choice(SURNAMES)}"


def _unique(rng: random.Random, count: int, draw: Callable[[], T]) -> list[T]:
    """`count` different draws, in the order first drawn (the caller keeps count within what can be drawn)."""
    drawn: list[T] = []
    while len(drawn) < count:
        item = draw()
        if item not in drawn:
            drawn.append(item)
    return drawn


def _with_neighbour(town: Town, towns: list[Town], rng: random.Random) -> Town:
    same_region = [t.name for t in towns if t.region == town.region and t.name != town.name]
    others = [t.name for t in towns if t.name != town.name]
    neighbour = rng.choice(same_region or others)
    return Town(**{**town.__dict__, "neighbour": neighbour})


def _page(number: int, title: str, text: str) -> str:
    timestamp = (FIRST_TIMESTAMP + timedelta(minutes=7 * number)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        "  <page>\n"
        f"    <title>{escape(title)}</title>\n"
        "    <ns>0</ns>\n"
        f"    <id>{number}</id>\n"
        "    <revision>\n"
        f"      <id>{100000 + number}</id>\n"
        f"      <timestamp>{timestamp}</timestamp>\n"
        "      <contributor>\n        <username>Demo generator</username>\n        <id>1</id>\n"
        "      </contributor>\n"
        "      <model>wikitext</model>\n"
        "      <format>text/x-wiki</format>\n"
        f'      <text xml:space="preserve">{escape(text)}</text>\n'
        "    </revision>\n"
        "  </page>\n"
    )


def _pick(rng: random.Random, *variants: str) -> str:
    return rng.choice(variants)


def _town_article(town: Town, rng: random.Random, stub: bool) -> str:
    industry = INDUSTRIES[town.known_for]
    lead = (
        f"{{{{Infobox settlement|name={town.name}|river={town.river}|founded={town.founded}}}}}\n"
        f"'''{town.name}''' is a town in the [[{town.region}]] region of [[{town.country}]]. "
        f"It lies on the [[{town.river} River|river {town.river}]], not far from [[{town.neighbour}]]. "
        f"It had {town.population} inhabitants in 2010.<ref>Census of {town.country}, 2010.</ref> "
        f"{town.name} is known for its {town.known_for}."
    )
    if stub:
        return lead + f"\n\n{{{{{town.region}-geo-stub}}}}\n[[Category:Towns in {town.region}]]"
    history = (
        f"== History ==\n"
        f"{town.name} was founded in {town.founded} by settlers from {town.neighbour}. "
        f"At first it was a small village of farmers and fishermen. "
        f"{_pick(rng, 'In', 'By')} {town.founded + rng.randrange(20, 60)} a stone bridge was built across "
        f"the {town.river}. After the bridge was built, the village grew into a market town. "
        f"Later the {town.known_for} trade made the town rich, and today most people in {town.name} "
        f"work in {industry}."
    )
    geography = (
        f"== Geography ==\n"
        f"The river {town.river} flows through the centre of {town.name}. "
        f"The land around the town is {town.terrain}. "
        f"{_pick(rng, 'Winters are cold and summers are mild.', 'Winters are mild and summers are warm.')} "
        f"The nearest town is {town.neighbour}, which also lies in {town.region}. "
        f"{{{{convert|12|km|mi}}}}"
    )
    economy = (
        f"== Economy ==\n"
        f"The economy of {town.name} is based on {town.known_for}. "
        f"Most jobs in the town are in {industry}. "
        f"Every autumn the town holds a fair for its {town.known_for} on the banks of the {town.river}. "
        f"Traders come to the fair from {town.neighbour} and from other towns of {town.region}."
    )
    return f"{lead}\n\n{history}\n\n{geography}\n\n{economy}\n\n[[Category:Towns in {town.region}]]"


def _person_article(person: Person, rng: random.Random, stub: bool) -> str:
    they, their = person.pronoun.capitalize(), "her" if person.pronoun == "she" else "his"
    field, works = PROFESSIONS[person.profession]
    town = person.town
    lead = (
        f"{{{{Infobox person|name={person.name}|birth_date={person.born}}}}}\n"
        f"'''{person.name}''' ({person.born} – {person.died}) was a {person.profession} from "
        f"[[{town.name}]] in [[{town.country}]]. "
        f"{they} is best known for {their} {works}.<ref>{town.country} biographical dictionary.</ref>"
    )
    if stub:
        return lead + f"\n\n{{{{{person.profession}-stub}}}}\n[[Category:People from {town.name}]]"
    early = (
        f"== Early life ==\n"
        f"{person.name} was born in {person.born} in [[{town.name}]], a town on the river {town.river}. "
        f"{their.capitalize()} family worked in {INDUSTRIES[town.known_for]}. "
        f"As a child {person.pronoun} {_pick(rng, 'liked to draw', 'read many books', 'walked by the river')}. "
        f"At the age of {rng.randrange(15, 20)} {person.pronoun} left {town.name} to study {field}."
    )
    career = (
        f"== Career ==\n"
        f"{they} returned to {town.name} in {person.born + rng.randrange(22, 30)}. "
        f"There {person.pronoun} began the work that made {their} name: {works}. "
        f"After that {person.pronoun} worked in the [[{town.region}]] region for many years. "
        f"{person.name} died in {person.died} in {town.name}. "
        f"A street in {town.name} is named after {'her' if person.pronoun == 'she' else 'him'}."
    )
    legacy = (
        f"== Legacy ==\n"
        f"The work of {person.name} is still known in {town.country}. "
        f"A small museum in {town.name} shows {their} {works}. "
        f"Students of {field} in {town.region} still read about {their} life. "
        f"Every year the people of {town.name} remember {'her' if person.pronoun == 'she' else 'him'} "
        f"with a walk along the {town.river}."
    )
    return f"{lead}\n\n{early}\n\n{career}\n\n{legacy}\n\n[[Category:People from {town.name}]]"


def _species_article(species: Species, rng: random.Random, stub: bool) -> str:
    group, covering, habitat = ANIMAL_KINDS[species.kind]
    lead = (
        f"{{{{Speciesbox|name={species.name}|status=LC}}}}\n"
        f"The '''{species.name}''' is a {group} found in the [[{species.region}]] region of "
        f"[[{species.country}]]. It has {species.colour} {covering}. "
        f"It lives in {habitat} and eats {species.food}.<ref>Fauna of {species.country}, vol. 2.</ref>"
    )
    if stub:
        return lead + f"\n\n{{{{{species.kind}-stub}}}}\n[[Category:Animals of {species.region}]]"
    description = (
        f"== Description ==\n"
        f"The {species.name} is {_pick(rng, 'a small', 'a mid-sized', 'a common')} {species.kind}. "
        f"Its {covering} {'are' if covering.endswith('s') else 'is'} {species.colour}, "
        f"which makes it easy to tell apart from other animals of the [[{species.region}]] region. "
        f"Young animals are paler, and they become {species.colour} in their first year. "
        f"It can live for {species.lifespan} years."
    )
    behaviour = (
        f"== Behaviour ==\n"
        f"The {species.name} feeds mostly on {species.food}. "
        f"It looks for food {_pick(rng, 'at dawn', 'at night', 'during the day')}. "
        f"In spring it raises its young in the {habitat}. "
        f"In winter it {_pick(rng, 'hides in the ground', 'stays near the water', 'moves to lower land')}. "
        f"The {species.name} is common in [[{species.country}]] and is not in danger."
    )
    range_ = (
        f"== Range ==\n"
        f"The {species.name} is found only in the {species.region} region. "
        f"Its range ends at the borders of {species.country}. "
        f"Farmers in {species.region} often see it in the {habitat}. "
        f"Its {species.colour} {covering} can be seen from far away."
    )
    sections = f"{description}\n\n{behaviour}\n\n{range_}"
    return f"{lead}\n\n{sections}\n\n[[Category:Animals of {species.region}]]"
