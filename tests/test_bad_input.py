"""Bad input a user can cause gets one line naming the file (and line, byte or key) and exit status 2, never a
traceback: text that is not UTF-8, repeated config keys, files that are not checkpoints, a pickle given as
HuggingFace weights. And what a killed writer left behind is cleaned at the next start."""

from __future__ import annotations

import json

import pytest
import torch

from effbert.cli import main
from effbert.config import load_config
from effbert.data.glue import load_split
from effbert.data.lra.listops import HEADER, load_listops
from effbert.demo.glue import write_demo_glue
from effbert.errors import InputError
from effbert.files import remove_leftovers
from effbert.train.checkpoints import read_checkpoint
from helpers import one_line_exit_2


class Evil:
    """Pickled, it would run print: a file holding it must never be loaded."""

    def __reduce__(self):
        return (print, ("ran code",))


def test_a_config_that_is_not_utf8_or_repeats_a_key(tmp_path, capsys):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_bytes(b'{"description": "caf\xe9"}')
    with pytest.raises(InputError, match=r"config.json: line 1, byte 20: not UTF-8 text"):
        load_config(folder)
    (folder / "config.json").write_text('{"pretraining": {"lr": 1e-4, "steps": 10, "lr": 2e-4}}')
    with pytest.raises(InputError, match=r"config.json: the key 'lr' is given twice"):
        load_config(folder)
    (folder / "config.json").write_bytes(b"\xef\xbb\xbf" + b'{"stages": ["lra"]}')  # a byte-order mark is fine
    assert load_config(folder).stages == ["lra"]
    (folder / "config.json").write_bytes(b'{"description": "\xff"}')
    err = one_line_exit_2(["lra", "--model", str(folder), "--task", "listops", "--gather"], capsys)
    assert "config.json: line 1, byte 17: not UTF-8" in err


def test_glue_and_listops_files_share_one_decoding_policy(tmp_path):
    write_demo_glue(tmp_path / "glue")
    dev = tmp_path / "glue/SST-2/dev.tsv"
    lines = dev.read_bytes().split(b"\n")
    lines[3] = lines[3][:5] + b"\x93" + lines[3][5:]  # a cp1252 quote in a UTF-8 file
    dev.write_bytes(b"\n".join(lines))
    with pytest.raises(InputError, match=r"SST-2/dev.tsv: line 4, byte \d+: not UTF-8 text"):
        load_split(tmp_path / "glue", "SST-2", "dev")

    listops = tmp_path / "basic_val.tsv"
    listops.write_bytes(b"\xef\xbb\xbf" + f"{HEADER}\n[MAX 2 9 ]\t9\n".encode())  # BOM: accepted as GLUE accepts it
    ids, labels = load_listops(listops)
    assert labels.tolist() == [9] and len(ids[0]) == 4
    listops.write_bytes(f"{HEADER}\n[MAX 2 9 ]\t9\n".encode() + b"[MIN 1 \xc3 ]\t1\n")
    with pytest.raises(InputError, match=r"basic_val.tsv: line 3, byte \d+: not UTF-8"):
        load_listops(listops)
    listops.write_bytes(f"{HEADER}\r[MAX 2 9 ]\t9\r".encode() + b"[MIN 1 3 ]\t1\r" * 1000)  # CR-only lines
    with pytest.raises(InputError) as found:
        load_listops(listops)
    assert len(str(found.value)) < 200  # the error does not quote the whole file


def test_files_that_are_not_checkpoints_are_named_without_unsafe_advice(tmp_path):
    pickled = tmp_path / "cp-0001.pt"
    torch.save({"model": {}, "x": Evil()}, pickled)
    text = tmp_path / "passwd"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    for path, expected in ((pickled, "not a readable effbert checkpoint"), (text, "not a readable effbert checkpoint"),
                           (tensor, "not an effbert checkpoint")):
        with pytest.raises(InputError, match=expected) as found:
            read_checkpoint(path)
        assert "weights_only" not in str(found.value) and "trust" not in str(found.value)


def test_a_pickle_given_as_huggingface_weights_is_refused_in_one_line(tmp_path, capsys):
    hf = tmp_path / "bert"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({
        "model_type": "bert", "vocab_size": 8, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 16, "max_position_embeddings": 16}))
    (hf / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c"]) + "\n")
    torch.save({"bert.embeddings.word_embeddings.weight": Evil()}, hf / "pytorch_model.bin")
    err = one_line_exit_2(["import-hf", "--from", str(hf), "--model", str(tmp_path / "m")], capsys)
    assert "pytorch_model.bin: not a file of tensors" in err
    assert "ran code" not in capsys.readouterr().out


def test_a_killed_writers_temporaries_are_removed(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "cp-0002.pt").write_bytes(b"kept")
    (folder / ".cp-0004.pt.tmp-12345").write_bytes(b"half")
    assert [p.name for p in remove_leftovers(folder)] == [".cp-0004.pt.tmp-12345"]
    assert sorted(p.name for p in folder.iterdir()) == ["cp-0002.pt"]
    assert remove_leftovers(tmp_path / "absent") == []


def test_a_device_or_thread_count_the_machine_cannot_give_is_one_line(tmp_path, capsys, monkeypatch):
    """--device is checked where every stage reads it (train/device.pick_device): not a device name, a GPU
    the machine lacks, $EFFBERT_DEVICE likewise; a negative --threads too (set_threads)."""
    from effbert.train.device import pick_device, set_threads

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    no_gpu = "this machine has no CUDA GPU"
    for name, says in (("tpu", "expected cpu, cuda or cuda:N"), ("cuda", no_gpu), ("cuda:1", no_gpu)):
        with pytest.raises(InputError, match=f"device '{name}': {says}"):
            pick_device(name)
    monkeypatch.setenv("EFFBERT_DEVICE", "bogus")
    with pytest.raises(InputError, match=r"device \(from \$EFFBERT_DEVICE\) 'bogus'"):
        pick_device(None)
    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(InputError, match="--threads -1"):
        set_threads(-1)
    lra = ["lra-data", "--out", str(tmp_path / "lra"), "--task", "listops"]
    assert main(lra + ["--train", "2", "--val", "2", "--test", "2"]) == 0
    err = one_line_exit_2(["lra", "--model", str(tmp_path / "m"), "--task", "listops", "--lra_dir",
                           str(tmp_path / "lra"), "--threads", "-1"], capsys)
    assert "--threads -1" in err


def test_a_path_that_is_not_what_it_should_be_is_the_users_to_fix(tmp_path, capsys):
    """An output folder inside a file (or any path that is a file where a folder belongs, missing, or not
    readable): one line naming it and exit status 2, the input's fault; a full disk stays exit 1 (test_disk_full)."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("Hello world. This is a sentence.\n")
    (tmp_path / "afile").write_text("x")
    err = one_line_exit_2(["documents", "--source", "bookcorpus", "--input", str(tmp_path / "in"), "--out",
                           str(tmp_path / "afile" / "out")], capsys)
    assert str(tmp_path / "afile") in err


def test_every_problem_of_a_config_is_on_the_errors_one_line(tmp_path, capsys):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model": {"hidden_sise": 64, "dropout": 2.0}}))
    err = one_line_exit_2(["lra", "--model", str(folder), "--task", "listops", "--lra_dir", str(tmp_path)], capsys)
    assert "config.json: invalid config: model.dropout" in err and "model.hidden_sise: unknown key" in err


def test_bench_pretrain_checks_its_settings_before_building_a_model(tmp_path, capsys):
    """Through the CLI as every other stage: one line and exit 2 for a folder as --out or a device that is not
    one; argparse's own refusal, naming the flag, for counts below 1 (0 timed steps divided by zero at the end)
    and a mechanism that is not registered. Nothing is built or timed first."""
    assert "out" in one_line_exit_2(["bench", "pretrain", "--tiny", "--out", str(tmp_path)], capsys)
    assert "device 'tpu'" in one_line_exit_2(["bench", "pretrain", "--tiny", "--device", "tpu"], capsys)
    for flag, value in (("--steps", "0"), ("--warmup", "-1"), ("--batch-size", "two"), ("--mechanisms", "bogus")):
        with pytest.raises(SystemExit) as stopped:
            main(["bench", "pretrain", "--tiny", flag, value])
        err = capsys.readouterr().err.strip().splitlines()
        assert stopped.value.code == 2 and err[-1].startswith(f"effbert bench pretrain: error: argument {flag}"), err
