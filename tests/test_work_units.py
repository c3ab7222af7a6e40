"""The work-unit engine (data/work_units.py) on a fake stage: each unit squares a number into
`unit-<n>.txt`, its done-marker, written last and atomically. Killed after some units, the next run calls
run_unit only for the units without a marker, and the assembled output is that of an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import pytest

from effbert.data.work_units import clear_others, pending, run_pending
from effbert.files import write_text

UNITS = list(range(7))


def _marker(work: Path, unit: int) -> Path:
    return work / f"unit-{unit}.txt"


def _run_stage(work: Path, calls: list[int], kill_after: int | None = None) -> list[int]:
    """The fake stage: run the pending units in this process, then assemble every unit's result in order."""

    def run_unit(job: tuple[Path, int]) -> int:
        folder, unit = job
        calls.append(unit)
        write_text(_marker(folder, unit), f"{unit * unit}\n")  # the marker: written last, atomically
        return unit * unit

    finished: list[tuple[int, int]] = []

    def on_done(unit: int, result: int) -> None:
        finished.append((unit, result))
        if kill_after is not None and len(finished) == kill_after:
            raise KeyboardInterrupt

    todo = pending(UNITS, lambda unit: _marker(work, unit).is_file())
    run_pending(todo, run_unit=run_unit, job=lambda unit: (work, unit), workers=1, start_method="spawn",
                on_done=on_done)  # fmt: skip
    assert finished == [(unit, unit * unit) for unit in todo]  # each result handed back with its own unit
    return [int(_marker(work, unit).read_text()) for unit in UNITS]


def test_a_resumed_run_calls_only_the_units_without_a_marker(tmp_path):
    calls: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        _run_stage(tmp_path, calls, kill_after=3)
    assert calls == [0, 1, 2]  # in this process a unit starts only when the one before has finished
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unit-0.txt", "unit-1.txt", "unit-2.txt"]

    calls.clear()
    assert _run_stage(tmp_path, calls) == [unit * unit for unit in UNITS]
    assert calls == [3, 4, 5, 6]
    calls.clear()
    assert _run_stage(tmp_path, calls) == [unit * unit for unit in UNITS] and calls == []  # all done: none run


def test_clear_others_keeps_only_this_inputs_work(tmp_path):
    (tmp_path / "old-inputs" / "unit-000000").mkdir(parents=True)
    (tmp_path / "these-inputs" / "unit-000003").mkdir(parents=True)
    clear_others(tmp_path / "these-inputs")
    assert [p.name for p in tmp_path.iterdir()] == ["these-inputs"]
    assert (tmp_path / "these-inputs" / "unit-000003").is_dir()  # this inputs' finished units are kept
    clear_others(tmp_path / "new" / "work")  # a first run: the folder is made
    assert (tmp_path / "new" / "work").is_dir()
