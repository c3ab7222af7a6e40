"""One writer per folder (effbert.locks): a second writer is refused at once, naming the holder; the lock
goes with its holder, so the next run after a kill takes it over. Pretraining's case, with a killed holder
process, is in test_pretrain.py."""

from __future__ import annotations

import os

import pytest

from effbert.data.shards import build_shards
from effbert.data.sources import build_documents
from effbert.errors import InputError
from effbert.locks import output_lock, writer_lock
from effbert.pipeline_config import DocumentsSettings


def test_a_second_writer_is_refused_naming_the_holder_and_the_lock_goes_with_it(tmp_path):
    with writer_lock(tmp_path, "pretraining"):
        with pytest.raises(InputError, match=rf"another pretraining is writing here \(pid {os.getpid()} on "):
            with writer_lock(tmp_path, "pretraining"):
                pass
    with writer_lock(tmp_path, "pretraining"):  # released with its block
        pass


def test_the_data_stages_lock_their_output_folder(tmp_path):
    text = tmp_path / "text"
    text.mkdir()
    (text / "part-00000.txt").write_text("One sentence here.\nAnother one.\n\nA second document.\n")
    with output_lock(tmp_path / "shards", "shards build"):
        with pytest.raises(InputError, match=r"shards: another shards build is writing here"):
            build_shards([text], tmp_path / "tokenizer.json", tmp_path / "shards", max_seq_len=32)
    books = tmp_path / "books"
    books.mkdir()
    (books / "a.txt").write_text("A sentence.\n")
    with output_lock(tmp_path / "documents", "documents build"):
        with pytest.raises(InputError, match=r"documents: another documents build is writing here"):
            build_documents("bookcorpus", books, tmp_path / "documents")
    assert not (tmp_path / "shards").exists() and not (tmp_path / "documents").exists()


def test_a_killed_builds_half_built_output_is_removed_at_the_next_start(tmp_path):
    half = tmp_path / ".documents.tmp-99999"  # what atomic_dir leaves when its process is killed
    half.mkdir()
    (half / "part-00000.txt").write_text("half")
    other = tmp_path / ".shards.tmp-99999"  # another output's: not this stage's to remove
    other.mkdir()
    books = tmp_path / "books"
    books.mkdir()
    (books / "a.txt").write_text("A sentence here.\nAnother one follows.\n")
    build_documents("bookcorpus", books, tmp_path / "documents", DocumentsSettings(min_words=1))
    assert not half.exists() and other.is_dir() and (tmp_path / "documents" / "stats.json").is_file()
