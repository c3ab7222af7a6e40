"""Writes that a kill cannot leave half done (effbert.files): the final name holds the old content or the
new, never part of one, and no temporary stays behind when the writer fails."""

from __future__ import annotations

import pytest

from effbert.errors import InputError
from effbert.files import atomic_dir, atomic_path, read_json, write_json


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


def test_read_json_names_the_line_and_column_and_accepts_a_bom(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"a": 1,\n "b": [1, 2,]\n}')  # a BOM, then a trailing comma on line 2
    with pytest.raises(InputError, match=r"a\.json: line 2 column 13: invalid JSON"):
        read_json(path)
    path.write_bytes(b"\xef\xbb\xbf" + b'{"a": {"b": 1, "b": 2}}')
    assert read_json(path) == {"a": {"b": 2}}  # json's own rule: the last of two equal keys
    with pytest.raises(InputError, match=r"a\.json: the key 'b' is given twice"):
        read_json(path, unique_keys=True)
    path.write_bytes(b'{"a": "caf\xe9"}')  # Latin-1, not UTF-8
    with pytest.raises(InputError, match=r"a\.json: line 1"):
        read_json(path)


def test_a_durable_write_is_on_disk_before_its_rename_and_the_rename_before_it_returns(tmp_path, monkeypatch):
    """A checkpoint's bytes are synced before the rename makes them the final file, and the folder after it: a
    machine that crashes in between keeps the old file or the whole new one (a rename that reached the disk
    before the data would be a checkpoint of zeros)."""
    import os
    import stat

    import torch

    from effbert.train.checkpoints import read_checkpoint, save_checkpoint

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(
        ("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file", os.fstat(fd).st_size)) or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append(("rename", 0)) or real_replace(a, b))
    path = tmp_path / "cp-0001.pt"
    save_checkpoint(path, model={"w": torch.ones(3)}, step=1)
    assert [name for name, _ in events] == ["fsync file", "rename", "fsync dir"]
    assert events[0][1] == path.stat().st_size  # the whole file, synced
    assert read_checkpoint(path)["step"] == 1
