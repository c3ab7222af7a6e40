"""Wall time, throughput and peak memory of the shards stage against corpus size and worker count.

A synthetic corpus in the documents format (part-NNNNN.txt, one sentence a line, blank lines between
documents, plus stats.json) is generated once per size, seeded: a Zipf-distributed lexicon of made-up
words (lengths 2-14 letters, distinct, the frequent ones short), sentences of a log-normal number of words (median
~18, as in news and books), documents of a log-normal number of sentences (median ~25). Parts are
generated from (seed, part number) alone, so the larger corpus holds the smaller one's parts plus more.

The tokenizer is imported once (BERT's real 30522-piece vocab.txt when `vocab` is given) or trained once
(WordPiece, 30522) on the first part. Then build_shards runs for every (size, workers) in a fresh
subprocess, so each run starts cold and its peak memory is its own:
- peak_rss_mb: the main process's VmHWM (from /proc/self/status; ru_maxrss where /proc is missing);
- worker_peak_rss_mb: the largest peak of the pool's processes (ru_maxrss of RUSAGE_CHILDREN), 0 with
  one worker. Forked workers count the pages they share with the main process too.
The acceptance check of issue #4: peak memory stays flat (under 1.5 GB) as the corpus doubles.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from effbert.files import atomic_dir, write_json

PART_MB = 25  # megabytes of text per part file
LETTERS = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
LETTER_WEIGHTS = np.array([12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4, 2.2, 2.0,
                           2.0, 1.9, 1.5, 1.0, 0.8, 0.2, 0.2, 0.1, 0.1])  # fmt: skip


def lexicon(seed: int, size: int = 30000) -> list[str]:
    """Made-up words with English letter frequencies; the frequent (low-rank) words are the short ones."""
    rng = np.random.default_rng([seed, 0])
    p = LETTER_WEIGHTS / LETTER_WEIGHTS.sum()
    words: dict[str, None] = {}  # insertion-ordered set: the few short spellings are used up first
    while len(words) < size:
        for n in np.sort(np.clip(rng.poisson(4.0, size) + 2, 2, 14)):
            words.setdefault("".join(rng.choice(LETTERS, n, p=p)))
    return sorted(list(words)[:size], key=len)


def write_part(path: Path, words: list[str], seed: int, number: int, megabytes: float) -> int:
    """One part file of about `megabytes` of documents; returns the number of documents."""
    rng = np.random.default_rng([seed, 1, number])
    ranks = np.arange(1, len(words) + 1)
    zipf = 1.0 / ranks**1.07
    zipf /= zipf.sum()
    words_arr = np.array(words, dtype=object)
    target = int(megabytes * 1e6)
    written = documents = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            sentence_count = max(1, int(rng.lognormal(np.log(25), 0.9)))
            lengths = np.clip(rng.lognormal(np.log(18), 0.5, sentence_count).astype(int), 2, 120)
            drawn = words_arr[rng.choice(len(words), int(lengths.sum()), p=zipf)]
            ends = np.cumsum(lengths)
            lines = []
            for start, end in zip(ends - lengths, ends, strict=True):
                sentence = " ".join(drawn[start:end])
                lines.append(sentence[0].upper() + sentence[1:] + ".")
            text = "\n".join(lines) + "\n\n"
            f.write(text)
            written += len(text)
            documents += 1
    return documents


def make_corpus(folder: Path, megabytes: int, seed: int = 0) -> Path:
    """A documents folder of about `megabytes` MB (reused when it is already there)."""
    folder = Path(folder)
    if (folder / "stats.json").is_file():
        return folder
    words = lexicon(seed)
    parts = max(1, round(megabytes / PART_MB))
    with atomic_dir(folder) as tmp:
        documents = sum(write_part(tmp / f"part-{n:05d}.txt", words, seed, n, megabytes / parts) for n in range(parts))
        write_json(tmp / "stats.json", {"source": "synthetic", "documents": documents, "seed": seed})
    return folder


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(text: str, tokenizer: str, out: str, workers: int, max_seq_len: int) -> dict:
    """One build_shards run, measured from inside its own process (the subprocess's entry point)."""
    from effbert.data.shards import build_shards

    start = time.perf_counter()
    manifest = build_shards([Path(text)], Path(tokenizer), Path(out), max_seq_len=max_seq_len, workers=workers)
    wall = time.perf_counter() - start
    tokens = sum(s["tokens"] for s in manifest["splits"].values())
    return {
        "documents": sum(manifest["documents"].values()),
        "instances": sum(s["instances"] for s in manifest["splits"].values()),
        "tokens": tokens,
        "wall_s": round(wall, 2),
        "tokens_per_s": round(tokens / wall),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "worker_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    }


def _tokenizer(out_dir: Path, text: Path, vocab: Path | None) -> Path:
    from effbert.data.tokenizer import import_tokenizer, train_tokenizer

    folder = out_dir / "tokenizer"
    if (folder / "tokenizer.json").is_file():
        return folder / "tokenizer.json"
    if vocab is not None:
        return import_tokenizer(vocab, folder)
    sample = out_dir / "tokenizer-sample"
    if not sample.is_dir():
        sample.mkdir(parents=True)
        (sample / "part-00000.txt").symlink_to(sorted(text.glob("part-*.txt"))[0].resolve())
    return train_tokenizer("wordpiece", 30522, [sample], folder)


def bench_preprocess(
    out_dir: Path,
    sizes_mb: tuple[int, ...] = (200, 400),
    workers: tuple[int, ...] = (1, 2),
    *,
    max_seq_len: int = 512,
    vocab: Path | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Rows of (size_mb, workers, documents, instances, tokens, wall_s, tokens_per_s, peak_rss_mb,
    worker_peak_rss_mb); also written to <out_dir>/preprocess.csv and printed."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    corpora = {mb: make_corpus(out_dir / f"text-{mb}mb", mb, seed) for mb in sizes_mb}
    tokenizer = _tokenizer(out_dir, corpora[sizes_mb[0]], vocab)
    rows = []
    for mb, text in corpora.items():
        for w in workers:
            out = out_dir / f"shards-{mb}mb-{w}w"
            code = (
                "import json, sys; from effbert.bench.preprocess import run_one; "
                f"print(json.dumps(run_one({str(text)!r}, {str(tokenizer)!r}, {str(out)!r}, {w}, {max_seq_len})))"
            )
            result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise RuntimeError(f"bench preprocess {mb} MB, {w} workers failed:\n{result.stderr[-4000:]}")
            rows.append({"size_mb": mb, "workers": w, **json.loads(result.stdout.strip().splitlines()[-1])})
            shutil.rmtree(out, ignore_errors=True)  # disk: 400 MB of text makes ~1 GB of shards
            pd.DataFrame(rows).to_csv(out_dir / "preprocess.csv", index=False)  # after each run: partial results
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    return table


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--sizes_mb", type=int, nargs="+", default=[200, 400])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--vocab", type=Path, default=None, help="a BERT vocab.txt to import instead of training")
    a = parser.parse_args()
    bench_preprocess(a.out_dir, tuple(a.sizes_mb), tuple(a.workers), vocab=a.vocab)
