"""Running a stage's work units: the part the documents and shards stages share.

Each stage cuts its input into units that depend only on the input (never on the worker count), skips
the units a previous run finished (each stage has its own done-marker: a marker file, a finished folder),
runs the rest here or in a pool, and assembles its output from the units in input order, so the output is
the same for any number of workers and a killed run resumes where it stopped."""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from typing import Any


@contextlib.contextmanager
def unit_results(run_unit: Callable[[Any], Any], jobs: list, *, workers: int, start_method: str,
                 initializer: Callable[..., None] | None = None, initargs: tuple = ()) -> Iterator[Iterable]:
    """`run_unit`'s results over `jobs` in the order they finish: in this process when one worker (or one job)
    is enough, else in a pool of `workers` processes started by `start_method`. An error or an interrupt,
    here or in the body of the `with`, terminates the pool, so the units still running write nothing."""
    if workers <= 1 or len(jobs) <= 1:
        if initializer is not None:
            initializer(*initargs)
        yield map(run_unit, jobs)
        return
    pool = multiprocessing.get_context(start_method).Pool(workers, initializer=initializer, initargs=initargs)
    try:
        yield pool.imap_unordered(run_unit, jobs)
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.close()
        pool.join()
