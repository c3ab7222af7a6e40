"""The documents stage on one big Wikipedia dump: throughput per core and peak memory, 1 and 2 workers.

A multistream dump as Wikimedia writes one (its header in a stream of its own, 100 pages a stream, the
footer last), or with --single_stream the plain file (one bz2 stream, cut into units at its blocks), is
generated at each size from the demo's article generator, its pages repeated under new ids and titles until
the XML reaches the size. `effbert documents` then runs on it in a fresh process for
every (size, workers), and the shards stage once per size on its documents; each reports wall time, CPU time,
raw XML MB/s per worker and per CPU second, and peak RSS (the main process and its largest child).

    python -m effbert.bench.wiki_dump OUT [--sizes_mb 200 400] [--workers 1 2] [--single_stream]
"""

from __future__ import annotations

import argparse
import bz2
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd

from effbert.data.shard_files import read_manifest
from effbert.files import atomic_path, write_text

PAGES_PER_STREAM = 100  # as Wikimedia's multistream files


def write_dump(path: Path, megabytes: int, seed: int = 0, single_stream: bool = False) -> int:
    """A multistream .bz2 (or one stream) of about `megabytes` MB of XML; returns the exact XML size in bytes."""
    from effbert.demo.wiki import MAX_PAGES, write_demo_wiki

    sample = path.with_suffix(".sample.bz2")
    write_demo_wiki(sample, pages=min(MAX_PAGES, 2000), seed=seed)
    text = bz2.decompress(sample.read_bytes()).decode("utf-8")
    sample.unlink()
    first, last = text.index("<page>"), text.rindex("</page>") + len("</page>\n")
    pages = re.findall(r"<page>.*?</page>\n", text[first:last], re.S)
    header, footer = text[:first], text[last:]
    size, number, stream = len(header) + len(footer), 0, []
    one = bz2.BZ2Compressor(9)
    compress = one.compress if single_stream else (lambda data: bz2.compress(data, 9))
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        out.write(compress(header.encode("utf-8")))
        while size < megabytes << 20:
            page = pages[number % len(pages)]
            number += 1
            page = page.replace("</title>", f" ({number})</title>", 1)
            page = re.sub(r"<id>\d+</id>", f"<id>{number}</id>", page, count=1)
            stream.append(page)
            size += len(page.encode("utf-8"))
            if len(stream) == PAGES_PER_STREAM:
                out.write(compress("".join(stream).encode("utf-8")))
                stream = []
        out.write(compress(("".join(stream) + footer).encode("utf-8")) + (one.flush() if single_stream else b""))
    return size


def _run(command: list[str]) -> dict:
    """Wall seconds, CPU seconds (user + system, the command and every process it waited for) and peak RSS
    (MB) of a command in a fresh process: its own and its largest child's. CPU seconds barely move with other
    load on the machine, where wall seconds do."""
    probe = ("import resource, subprocess, sys, time, json; t = time.perf_counter(); "
             "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
             "r = resource.getrusage(resource.RUSAGE_CHILDREN); "
             "print(json.dumps({'seconds': time.perf_counter() - t, 'cpu_seconds': r.ru_utime + r.ru_stime, "
             "'child_peak_mb': r.ru_maxrss / 1024}))")
    done = subprocess.run([sys.executable, "-c", probe, *command], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench(out: Path, sizes_mb: list[int], workers: list[int], vocab: Path | None, chunk_mb: int,
          single_stream: bool = False) -> pd.DataFrame:
    rows = []
    effbert = [sys.executable, "-m", "effbert"]
    for megabytes in sizes_mb:
        kind = "" if single_stream else "-multistream"
        dump = out / f"enwiki-20990101-pages-articles{kind}-{megabytes}mb.xml.bz2"
        if not dump.is_file():
            write_dump(dump, megabytes, single_stream=single_stream)
        xml_mb = _xml_megabytes(dump)
        for n in workers:
            docs = out / f"text-{megabytes}-{n}"
            measured = _run([*effbert, "documents", "--source", "wiki", "--input", str(dump), "--out", str(docs),
                             "--processes", str(n), "--chunk_mb", str(chunk_mb)])
            rows.append({"stage": "documents", "xml_mb": round(xml_mb), "workers": n, **measured,
                         "mb_per_s": xml_mb / measured["seconds"],
                         "mb_per_s_per_core": xml_mb / measured["seconds"] / n,
                         "mb_per_cpu_s": xml_mb / measured["cpu_seconds"]})
        tok = out / "tokenizer"
        if not tok.exists():
            tokenizer = ["--from", str(vocab)] if vocab else ["--kind", "wordpiece", "--vocab_size", "30522",
                                                              "--text", str(docs), "--lowercase"]
            subprocess.run([*effbert, "tokenizer", *tokenizer, "--out", str(tok)], check=True)
        shards = out / f"shards-{megabytes}"
        measured = _run([*effbert, "shards", "--text", str(docs), "--tokenizer", str(tok / "tokenizer.json"),
                         "--out", str(shards), "--max_seq_len", "512"])
        tokens = _shard_tokens(shards)
        rows.append({"stage": "shards", "xml_mb": round(xml_mb), "workers": 1, **measured,
                     "mb_per_s": xml_mb / measured["seconds"], "mb_per_s_per_core": xml_mb / measured["seconds"],
                     "mb_per_cpu_s": xml_mb / measured["cpu_seconds"], "tokens": tokens,
                     "tokens_per_s": tokens / measured["seconds"],
                     "tokens_per_cpu_s": tokens / measured["cpu_seconds"]})
    return pd.DataFrame(rows)


def _shard_tokens(shards: Path) -> int:
    """The tokens written into the shards' instances, every split, as their manifest counts them."""
    return sum(split["tokens"] for split in read_manifest(shards)["splits"].values())


def _xml_megabytes(dump: Path) -> float:
    decompressor, size = bz2.BZ2Decompressor(), 0
    with open(dump, "rb") as raw:
        data = raw.read(1 << 20)
        while data:
            size += len(decompressor.decompress(data))
            if decompressor.eof:
                data, decompressor = decompressor.unused_data, bz2.BZ2Decompressor()
                continue
            data = raw.read(1 << 20)
    return size / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--sizes_mb", type=int, nargs="+", default=[200, 400])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--vocab", type=Path, help="a vocab.txt to import (default: train a WordPiece)")
    # the generated text repeats itself and compresses about 13:1 (Wikipedia about 4.5:1), so its units are
    # cut smaller than the default 64 MB of compressed bytes to give the workers several each
    parser.add_argument("--chunk_mb", type=int, default=1)
    parser.add_argument("--single_stream", action="store_true",
                        help="the plain dump (one bz2 stream) rather than the multistream one")
    a = parser.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    table = bench(a.out, a.sizes_mb, a.workers, a.vocab, a.chunk_mb, a.single_stream)
    write_text(a.out / "wiki_dump.md", table.round(2).to_markdown(index=False) + "\n")
    print(table.round(2).to_markdown(index=False))


if __name__ == "__main__":
    main()
