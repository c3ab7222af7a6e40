"""The resumable work-unit engine the documents and shards stages share.

Each stage cuts its input into units that depend only on the input (never on the worker count) and gives
each unit a done-marker (documents: `unit-<key>.json` beside the unit's text; shards: the unit's folder).
The one rule: a unit is done when its marker exists, and a unit writes its marker last and atomically, so
an interrupted unit leaves no marker. A run takes the `pending` units (marker absent), runs them here or in
a pool (`run_pending`), and the stage assembles its output from all units in input order, so the output is
the same for any number of workers and a killed run resumes where it stopped."""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

U = TypeVar("U")


def pending(units: Sequence[U], done: Callable[[U], bool]) -> list[U]:
    """The units still to run, in input order: those whose done-marker (`done`) is absent."""
    return [unit for unit in units if not done(unit)]


def run_pending(units: Sequence[U], *, run_unit: Callable[[Any], Any], job: Callable[[U], Any] | None = None,
                workers: int, start_method: str, initializer: Callable[..., None] | None = None,
                initargs: tuple = (), on_done: Callable[[U, Any], None] | None = None) -> None:  # fmt: skip
    """Run `run_unit(job(unit))` for each of the pending `units` (job: what a worker gets, by default the unit),
    through unit_results; `on_done(unit, result)` is called here as each unit finishes, in the order they
    finish. `run_unit` writes the unit's output and then its done-marker, last and atomically."""
    jobs = [(index, unit if job is None else job(unit)) for index, unit in enumerate(units)]
    with unit_results(functools.partial(_indexed, run_unit), jobs, workers=workers, start_method=start_method,
                      initializer=initializer, initargs=initargs) as results:  # fmt: skip
        for index, result in results:
            if on_done is not None:
                on_done(units[index], result)


def _indexed(run_unit: Callable[[Any], Any], indexed_job: tuple[int, Any]) -> tuple[int, Any]:
    # a result comes back with its unit's index: a pool returns results in the order units finish
    index, job = indexed_job
    return index, run_unit(job)


def clear_others(work: Path) -> None:
    """Remove the other work folders beside `work` and make `work`: units of other inputs (an earlier,
    changed corpus or setting) can never be reused."""
    if work.parent.is_dir():
        for other in work.parent.iterdir():
            if other != work:
                shutil.rmtree(other, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)


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
