"""Writes that a kill cannot leave half done (effbert.files): the final name holds the old content or the
new, never part of one, and no temporary stays behind when the writer fails."""

from __future__ import annotations

import pytest

from effbert.files import atomic_dir, atomic_path, write_json


class Killed(Exception):
    pass


def test_a_failed_write_leaves_the_previous_file_whole_and_no_temporary(tmp_path):
    path = tmp_path / "result.json"
    write_json(path, {"score": 1})
    with pytest.raises(Killed):
        with atomic_path(path) as tmp:
            tmp.write_text('{"score": 2, "trunc')
            raise Killed
    assert path.read_text() == '{\n  "score": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_a_failed_folder_write_leaves_the_previous_folder_whole(tmp_path):
    out = tmp_path / "shards"
    with atomic_dir(out) as tmp:
        (tmp / "manifest.json").write_text("old")
    with pytest.raises(Killed):
        with atomic_dir(out) as tmp:
            (tmp / "manifest.json").write_text("new, half")
            raise Killed
    assert (out / "manifest.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards"]
