"""LRA loaders: the official layouts written by the tests (and the real-format fixtures when present)."""

from __future__ import annotations

import os
import pickle
import subprocess
import zlib

import numpy as np
import pytest
from PIL import Image

from effbert.data.lra import image, listops, pathfinder, retrieval, text
from effbert.data.lra.split import LraSplit, make_split
from effbert.errors import InputError
from effbert.pipeline_config import ListopsSettings

# ---------------------------------------------------------------- the interface


def test_lra_split_checks_shapes_and_subsets():
    s = make_split([[[1, 2, 3], [4]], [[5], [6, 7]]], [1, 0])
    assert s.num_inputs == 2 and len(s) == 2
    assert all(a.dtype == np.int64 and a.ndim == 1 for seqs in s.inputs for a in seqs)
    assert s.lengths(0).tolist() == [3, 1] and s.lengths(1).tolist() == [1, 2]
    sub = s.subset([1])
    assert sub.labels.tolist() == [0] and sub.inputs[1][0].tolist() == [6, 7]
    with pytest.raises(ValueError, match="labels"):
        LraSplit(inputs=([np.zeros(2, np.int64)],), labels=np.zeros(1, np.int32))
    with pytest.raises(ValueError, match="2 sequences for 1 labels"):
        make_split([[[1], [2]]], [0])


@pytest.mark.parametrize("module", [listops, text, retrieval, image, pathfinder])
def test_every_task_module_has_the_constants_and_names_a_missing_release(tmp_path, module):
    assert module.VOCAB_SIZE > module.PAD_ID >= 0 and module.NUM_CLASSES >= 2 and module.RELEASE_DIR
    with pytest.raises(InputError, match="README"):
        module.read_split(tmp_path, "train")


# ---------------------------------------------------------------- ListOps


def test_listops_read_split_maps_dev_to_val(tmp_path):
    settings = ListopsSettings(train=4, val=3, test=2, min_length=5, max_length=60, seed=3)
    listops.generate_listops(tmp_path / "listops-1000", settings)
    dev = listops.read_split(tmp_path, "dev")
    ids, labels = listops.load_split(tmp_path, "val")
    assert len(dev) == 3 and dev.labels.tolist() == labels.tolist()
    assert [a.tolist() for a in dev.inputs[0]] == ids
    assert max(int(a.max()) for a in dev.inputs[0]) < listops.VOCAB_SIZE
    with pytest.raises(ValueError, match="split"):
        listops.read_split(tmp_path, "val")


def _evaluate(tokens: list[str]) -> int:
    """An independent ListOps evaluator over the loader's tokens (X closes an operator)."""
    stack: list[list] = []
    value = None
    for tok in tokens:
        if tok.startswith("["):
            stack.append([tok])
        elif tok == "X":
            op, *args = stack.pop()
            value = {"[MIN": min(args), "[MAX": max(args), "[SM": sum(args) % 10,
                     "[MED": int(np.median(args))}[op]
            if stack:
                stack[-1].append(value)
        else:
            if stack:
                stack[-1].append(int(tok))
            else:
                value = int(tok)
    return value


def test_listops_fixture_conformance(shared_fixtures, tmp_path):
    src = shared_fixtures / "lra" / "listops" / "basic_test.head10.tsv"
    (tmp_path / "listops-1000").mkdir()
    os.symlink(src, tmp_path / "listops-1000" / "basic_test.tsv")
    s = listops.read_split(tmp_path, "test")
    assert len(s) == 10
    for seq, label in zip(s.inputs[0], s.labels, strict=True):
        assert _evaluate([listops.VOCAB[i] for i in seq]) == label


# ---------------------------------------------------------------- Text (aclImdb)

REVIEWS = {
    ("train", "neg"): {"0_3.txt": b"  Bad film.\n", "10_1.txt": b"Awful \xc3\xa9t\xc3\xa9"},
    ("train", "pos"): {"2_9.txt": b"Great!", "1_10.txt": b"Loved it<br />\n"},
    ("test", "neg"): {"5_2.txt": b"Meh"},
    ("test", "pos"): {"7_8.txt": b"\tGood\r\n"},
}


def _write_imdb(root):
    for (split, label), files in REVIEWS.items():
        folder = root / "aclImdb" / split / label
        folder.mkdir(parents=True)
        for name, data in files.items():
            (folder / name).write_bytes(data)
    (root / "aclImdb" / "train" / "unsup").mkdir()
    (root / "aclImdb" / "train" / "unsup" / "0_0.txt").write_bytes(b"unlabelled")


def test_text_reads_aclimdb_bytes_plus_one(tmp_path):
    _write_imdb(tmp_path)
    train = text.read_split(tmp_path, "train")
    # neg first, each folder by review id; the unsup folder is not read
    expected = [b"Bad film.", b"Awful \xc3\xa9t\xc3\xa9", b"Loved it<br />", b"Great!"]
    assert train.labels.tolist() == [0, 0, 1, 1]
    assert [bytes((a - 1).astype(np.uint8)) for a in train.inputs[0]] == expected
    assert train.inputs[0][0].tolist() == [ord(c) + 1 for c in "Bad film."]
    assert max(int(a.max()) for a in train.inputs[0]) == 0xC3 + 1 < text.VOCAB_SIZE == 257
    assert min(int(a.min()) for a in train.inputs[0]) > text.PAD_ID
    dev, test = text.read_split(tmp_path, "dev"), text.read_split(tmp_path, "test")
    assert dev.labels.tolist() == test.labels.tolist() == [0, 1]  # LRA validates on IMDB's test set
    assert bytes((test.inputs[0][1] - 1).astype(np.uint8)) == b"Good"
    assert text.read_split(tmp_path, "train", max_length=3).lengths().tolist() == [3, 3, 3, 3]


# ---------------------------------------------------------------- Retrieval (AAN)


def test_retrieval_reads_two_byte_documents(tmp_path):
    folder = tmp_path / "tsv_data"
    folder.mkdir()
    long_doc = b"x" * 10_050
    rows = [b"1.0\tA00-1\tB00-2\tfirst doc\tsecond", b"0\tA00-3\tB00-4\t" + long_doc + b"\tcaf\xc3\xa9"]
    for name in ("train", "eval", "test"):
        (folder / f"new_aan_pairs.{name}.tsv").write_bytes(b"\n".join(rows) + b"\n")
    s = retrieval.read_split(tmp_path, "dev")
    assert s.num_inputs == 2 and s.labels.tolist() == [1, 0]
    assert s.inputs[0][0].tolist() == [c + 1 for c in b"first doc"]
    assert s.inputs[1][1].tolist() == [c + 1 for c in "café".encode()]
    assert len(s.inputs[0][1]) == 10_000  # LRA cuts each document to 10000 bytes
    assert retrieval.read_split(tmp_path, "test", max_length=4).lengths(1).tolist() == [4, 4]
    (folder / "new_aan_pairs.train.tsv").write_bytes(rows[0] + b"\n2\ta\tb\tc\td\n")
    with pytest.raises(InputError, match=r"new_aan_pairs.train.tsv: line 2: column 'label'"):
        retrieval.read_split(tmp_path, "train")
    (folder / "new_aan_pairs.train.tsv").write_bytes(b"1\ta\tb\tc\n")
    with pytest.raises(InputError, match=r"line 1: expected 5 tab-separated columns"):
        retrieval.read_split(tmp_path, "train")


# ---------------------------------------------------------------- Image (CIFAR-10)


def test_greyscale_against_hand_computation():
    # tf.image.rgb_to_grayscale: trunc((0.2989 r + 0.5870 g + 0.1140 b) / 255 * 255.5)
    rgb = np.array([[0, 0, 0], [255, 255, 255], [100, 150, 200], [0, 255, 0], [0, 0, 255], [10, 20, 30], [1, 0, 0]])
    # 0 ; 0.9999*255.5=255.47 ; 140.74/255*255.5=141.02 ; 0.587*255.5=149.98 (round(0.587*255) would be 150) ;
    # 0.114*255.5=29.13 ; 18.149/255*255.5=18.18 ; 0.2989/255*255.5=0.30
    assert image.greyscale(rgb).tolist() == [0, 255, 141, 149, 29, 18, 0]


def _cifar_arrays(n_per_batch, seed=0):
    rng = np.random.default_rng(seed)
    batches = {name: (rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                      rng.integers(0, 10, n_per_batch).tolist()) for name in (*image.TRAIN_BATCHES, image.TEST_BATCH)}
    batches["data_batch_1"][0][0] = 0  # an all-black image: 1024 real tokens of value 0
    return batches


def _write_cifar(root, batches, *, python=True, binary=True, protocol=2):
    if python:
        (root / "cifar-10-batches-py").mkdir()
        for name, (data, labels) in batches.items():
            obj = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                   b"filenames": [f"{i}.png".encode() for i in range(len(labels))]}
            (root / "cifar-10-batches-py" / name).write_bytes(pickle.dumps(obj, protocol=protocol))
    if binary:
        (root / "cifar-10-batches-bin").mkdir()
        for name, (data, labels) in batches.items():
            records = np.concatenate([np.asarray(labels, np.uint8)[:, None], data], axis=1)
            (root / "cifar-10-batches-bin" / f"{name}.bin").write_bytes(records.tobytes())


@pytest.mark.parametrize("protocol", [2, 4])
def test_image_reads_python_and_binary_batches_alike(tmp_path, protocol):
    batches = _cifar_arrays(4)
    (tmp_path / "py").mkdir(), (tmp_path / "bin").mkdir()
    _write_cifar(tmp_path / "py", batches, binary=False, protocol=protocol)
    _write_cifar(tmp_path / "bin", batches, python=False)
    train_data = np.concatenate([batches[n][0] for n in image.TRAIN_BATCHES])
    train_labels = sum((batches[n][1] for n in image.TRAIN_BATCHES), [])
    for root in (tmp_path / "py", tmp_path / "bin"):
        train, dev, test = (image.read_split(root, s) for s in ("train", "dev", "test"))
        assert (len(train), len(dev), len(test)) == (18, 2, 4)  # LRA: train[:90%], train[90%:], test
        assert train.labels.tolist() + dev.labels.tolist() == train_labels
        assert test.labels.tolist() == batches["test_batch"][1]
        # pixel (row 0, col 1) of training image 5, from its planar R, G, B bytes, by the formula
        r, g, b = (int(train_data[5][c * 1024 + 1]) for c in range(3))
        assert train.inputs[0][5][1] == int(np.float32(np.float32(r / 255) * np.float32(0.2989)
                                                       + np.float32(g / 255) * np.float32(0.5870)
                                                       + np.float32(b / 255) * np.float32(0.1140))
                                            * np.float32(255.5))
        assert train.inputs[0][0].tolist() == [0] * 1024  # black is data, not padding
        assert all(len(a) == 1024 and a.dtype == np.int64 for a in train.inputs[0])


def test_restricted_unpickler_admits_numpy_1_array_paths():
    # the released batches name numpy.core.multiarray._reconstruct (numpy 1); numpy 2 writes numpy._core
    data = pickle.dumps({b"data": np.arange(6, dtype=np.uint8).reshape(2, 3), b"labels": [1, 2]}, protocol=2)
    old = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray\n_reconstruct" in old
    obj = image.restricted_load(old)
    assert obj[b"data"].tolist() == [[0, 1, 2], [3, 4, 5]] and obj[b"labels"] == [1, 2]


class _Evil:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.mark.parametrize("payload", [_Evil(os.system, "echo owned"), _Evil(subprocess.run, ["true"]),
                                     _Evil(eval, "1+1")])
def test_restricted_unpickler_refuses_code(tmp_path, payload):
    data = pickle.dumps({b"data": payload, b"labels": [0]}, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        image.restricted_load(data)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in (*image.TRAIN_BATCHES, image.TEST_BATCH):
        (folder / name).write_bytes(data)
    with pytest.raises(InputError, match="data_batch_1: not a CIFAR-10 python batch"):
        image.read_split(tmp_path, "train")


def test_a_batch_claiming_a_huge_object_is_refused_without_allocating_it(tmp_path):
    import struct

    # protocol 4: BINBYTES8 claims 2**50 bytes (a petabyte) and holds three; unpickled, it would ask for them all
    claims = b"\x80\x04\x8e" + struct.pack("<Q", 1 << 50) + b"abc."
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(claims)
    with pytest.raises(InputError, match=r"test_batch: not a CIFAR-10 python batch: malformed pickle"):
        image.read_python_batch(folder / "test_batch")
    with open(folder / "test_batch", "wb") as f:  # a file far beyond a batch's size: not read at all
        f.truncate(image.MAX_BATCH_BYTES + 1)
    with pytest.raises(InputError, match=r"test_batch: \d+ bytes; a CIFAR-10 python batch is about 31 MB"):
        image.read_python_batch(folder / "test_batch")


def test_image_binary_batch_of_wrong_size_is_named(tmp_path):
    _write_cifar(tmp_path, _cifar_arrays(2), python=False)
    (tmp_path / "cifar-10-batches-bin" / "test_batch.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match="test_batch.bin: 100 bytes"):
        image.read_split(tmp_path, "test")


def _write_one_python_batch(tmp_path, labels, data=None):
    """A python batch file of 10 images whose 'labels' (and optionally 'data') are given as they are."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    data = np.zeros((10, 3072), np.uint8) if data is None else data
    path = folder / "test_batch"
    path.write_bytes(pickle.dumps({b"data": data, b"labels": labels}, protocol=2))
    return path


@pytest.mark.parametrize(("labels", "found"), [
    ("abcdefghij", r"got str 'abcdefghij'"),  # numpy used to raise a ValueError traceback converting it
    ([1.5] * 10, r"item 0 is float 1\.5"),  # used to be truncated to class 1
    ([True] * 10, r"item 0 is bool True"),  # used to be read as class 1
    ([1] * 9 + ["7"], r"item 9 is str '7'"),
    ([[1]] * 10, r"item 0 is list \[1\]"),
    ([-1] * 10, r"item 0 is int -1"),
    ([1 << 70] * 10, r"item 0 is int 1180591620717411303424"),  # used to overflow int64 in a traceback
    (np.full(10, 2.0), r"item 0 is float 2\.0"),
    ([1] * 9, r"\(one per row of 'data'\), got 9"),
])
def test_cifar_labels_that_are_not_class_ids_are_named(tmp_path, labels, found):
    path = _write_one_python_batch(tmp_path, labels)
    expected = r"test_batch: key 'labels': expected a list of 10 integer class ids 0\.\.9"
    with pytest.raises(InputError, match=rf"{expected}.*{found}"):
        image.read_python_batch(path)


def test_cifar_labels_as_numpy_integers_are_read(tmp_path):
    path = _write_one_python_batch(tmp_path, np.arange(10, dtype=np.uint8))
    assert image.read_python_batch(path)[1].tolist() == list(range(10))


def test_cifar_batch_with_odd_data_keys_or_an_unreadable_file_is_named(tmp_path):
    path = _write_one_python_batch(tmp_path, [0] * 2, data=[[0] * 3072, [0]])  # a ragged list, not an array
    with pytest.raises(InputError, match=r"test_batch: key 'data': expected a uint8 \(n, 3072\) array, got list"):
        image.read_python_batch(path)
    path.write_bytes(pickle.dumps({1: 0, b"x": 0}, protocol=2))  # keys no sort can order
    with pytest.raises(InputError, match=r"test_batch: expected keys 'data' and 'labels', got \['1', 'x'\]"):
        image.read_python_batch(path)
    # _codecs.encode naming no codec raised LookupError, not a refusal
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x03\x00\x00\x00zzz\x86R.")
    with pytest.raises(InputError, match=r"test_batch: not a CIFAR-10 python batch: unknown encoding"):
        image.read_python_batch(path)
    path.unlink()
    path.mkdir()  # a folder where the batch should be
    with pytest.raises(InputError, match=r"test_batch: cannot read this CIFAR-10 python batch"):
        image.read_python_batch(path)
    (tmp_path / "cifar-10-batches-bin").mkdir()
    (tmp_path / "cifar-10-batches-bin" / "test_batch.bin").mkdir()
    with pytest.raises(InputError, match=r"test_batch.bin: cannot read this CIFAR-10 binary batch"):
        image.read_binary_batch(tmp_path / "cifar-10-batches-bin" / "test_batch.bin")


# ---------------------------------------------------------------- Pathfinder (release layout)


def _write_pathfinder(folder, labels_per_file, size=32):
    rng = np.random.default_rng(1)
    pixels = {}
    for b, labels in enumerate(labels_per_file):
        (folder / "metadata").mkdir(parents=True, exist_ok=True)
        (folder / "imgs" / str(b)).mkdir(parents=True)
        lines = []
        for i, label in enumerate(labels):
            arr = rng.integers(0, 256, (size, size), dtype=np.uint8)
            Image.fromarray(arr, mode="L").save(folder / "imgs" / str(b) / f"sample_{i}.png")
            pixels[(b, i)] = arr
            lines.append(f"imgs/{b} sample_{i}.png {i} {label} 1.0 14 4 2 0.5 1 1\n")
        (folder / "metadata" / f"{b}.npy").write_text("".join(lines))
    return pixels


def test_pathfinder_reads_release_layout_in_order_80_10_10(tmp_path):
    folder = tmp_path / "pathfinder32" / "curv_contour_length_14"
    # files 0, 1, ..., 10: numeric order (10 after 2), 20 examples in all
    labels = [[i % 2, 1] for i in range(10)]
    pixels = _write_pathfinder(folder, labels)
    order = [(b, i) for b in range(10) for i in range(2)]
    train, dev, test = (pathfinder.read_split(tmp_path, s) for s in ("train", "dev", "test"))
    assert (len(train), len(dev), len(test)) == (16, 2, 2)
    flat = [lab for row in labels for lab in row]
    assert train.labels.tolist() + dev.labels.tolist() + test.labels.tolist() == flat
    assert train.inputs[0][3].tolist() == pixels[order[3]].reshape(-1).tolist()
    assert test.inputs[0][1].tolist() == pixels[order[19]].reshape(-1).tolist()
    assert pathfinder.read_split(tmp_path, "test", difficulty="hard").labels.tolist() == test.labels.tolist()
    # an empty image file is dropped (as LRA filters them); a missing one is an error naming the metadata line
    (folder / "imgs" / "9" / "sample_1.png").write_bytes(b"")
    assert len(pathfinder.read_split(tmp_path, "test")) == 1
    (folder / "imgs" / "9" / "sample_1.png").unlink()
    with pytest.raises(InputError, match=r"9.npy: line 2: image .*sample_1.png does not exist"):
        pathfinder.read_split(tmp_path, "test")
    with pytest.raises(InputError, match="curv_baseline: no such folder"):
        pathfinder.read_split(tmp_path, "train", difficulty="easy")


def test_pathfinder_reads_a_real_npy_metadata_array(tmp_path):
    folder = tmp_path / "pathfinder32" / "curv_baseline"
    _write_pathfinder(folder, [[1, 0, 1, 1, 0, 0, 1, 0, 1, 1]])
    rows = np.array([line.split() for line in (folder / "metadata" / "0.npy").read_text().splitlines()])
    np.save(folder / "metadata" / "0.npy", rows)  # a genuine .npy of strings: read without pickle
    s = pathfinder.read_split(tmp_path, "train", difficulty="curv_baseline")
    assert s.labels.tolist() == [1, 0, 1, 1, 0, 0, 1, 0]


def test_pathfinder_fixture_metadata_conformance(shared_fixtures, tmp_path):
    src = shared_fixtures / "lra" / "pathfinder32" / "curv_baseline" / "metadata" / "0.head20.npy"
    lines = pathfinder.metadata_lines(src)
    assert len(lines) == 20
    folder = tmp_path / "curv_baseline"
    (folder / "metadata").mkdir(parents=True)
    os.symlink(src, folder / "metadata" / "0.npy")
    examples = pathfinder.read_metadata(folder)
    assert [e.image.relative_to(folder).as_posix() for e in examples[:2]] == ["imgs/0/sample_0.png",
                                                                              "imgs/0/sample_1.png"]
    assert [e.label for e in examples] == [int(line.split()[3]) for line in lines]
    assert {e.label for e in examples} == {0, 1}
    # field 6 is the contour length: 6 for the baseline
    assert {line.split()[5] for line in lines} == {"6"}


def _one_image_folder(tmp_path, save_image):
    """A pathfinder32 difficulty folder of one metadata line whose image is written by save_image(path)."""
    folder = tmp_path / "pathfinder32" / "curv_contour_length_14"
    _write_pathfinder(folder, [[1] * 10])
    save_image(folder / "imgs" / "0" / "sample_0.png")
    return folder


def test_pathfinder_png_declaring_a_huge_size_is_refused_before_decoding(tmp_path):
    # 20000 x 10000 one-bit pixels: a few kB on disk, beyond PIL's limit (DecompressionBombError, a traceback)
    _one_image_folder(tmp_path, lambda p: Image.new("1", (20000, 10000)).save(p))
    with pytest.raises(InputError, match=r"sample_0.png: declares a far too large image .*; named by .*0.npy line 1"):
        pathfinder.read_split(tmp_path, "train")
    # 12000 x 12000: only a PIL warning, so the declared size is what refuses it, without decoding it
    _one_image_folder(tmp_path / "b", lambda p: Image.new("1", (12000, 12000)).save(p))
    with pytest.raises(InputError, match=r"sample_0.png: expected a 32x32 image, got 12000x12000; named by .*0.npy"):
        pathfinder.read_split(tmp_path / "b", "train")


def test_pathfinder_png_sizes_are_checked_even_without_a_resolution(tmp_path):
    folder = _one_image_folder(tmp_path, lambda p: Image.new("L", (300, 300)).save(p))
    with pytest.raises(InputError, match=r"sample_0.png: expected at most 256x256 pixels .*, got 300x300"):
        pathfinder.read_folder_split(folder, "train")


def test_pathfinder_png_with_a_truncated_header_is_named(tmp_path):
    def truncated_ihdr(path):
        Image.new("L", (32, 32)).save(path)
        data = path.read_bytes()
        body = data[16:21]  # IHDR holds 13 bytes; 5 of them, under a valid CRC, make PIL raise ValueError
        chunk = (5).to_bytes(4, "big") + b"IHDR" + body + zlib.crc32(b"IHDR" + body).to_bytes(4, "big")
        path.write_bytes(data[:8] + chunk + data[33:])

    _one_image_folder(tmp_path, truncated_ihdr)
    with pytest.raises(InputError, match=r"sample_0.png: not a readable PNG"):
        pathfinder.read_split(tmp_path, "train")


def _npy_header(header: dict) -> bytes:
    text = repr(header).encode()
    text += b" " * (63 - (len(text) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text


@pytest.mark.parametrize(("body", "found"), [
    # a header declaring terabytes: numpy's MemoryError was a traceback
    (_npy_header({"descr": "<f8", "fortran_order": False, "shape": (10**12,)}) + b"x" * 16, "Unable to allocate"),
    (b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f8',\n", "numpy cannot read"),  # tokenize's TokenError
    # code points beyond U+10FFFF: numpy's SystemError turning them into str
    (_npy_header({"descr": "<U2", "fortran_order": False, "shape": (1,)}) + b"\xff" * 8, "beyond U\\+10FFFF"),
])
def test_pathfinder_damaged_npy_metadata_is_named(tmp_path, body, found):
    folder = tmp_path / "pathfinder32" / "curv_contour_length_14"
    _write_pathfinder(folder, [[1] * 10])
    (folder / "metadata" / "0.npy").write_bytes(body)
    with pytest.raises(InputError, match=rf"0.npy: .*{found}"):
        pathfinder.read_split(tmp_path, "train")


def test_pathfinder_metadata_folder_named_npy_is_named(tmp_path):
    folder = tmp_path / "pathfinder32" / "curv_contour_length_14"
    _write_pathfinder(folder, [[1] * 10])
    (folder / "metadata" / "1.npy").mkdir()
    with pytest.raises(InputError, match=r"1.npy: cannot read this metadata file"):
        pathfinder.read_split(tmp_path, "train")


def test_pathfinder_npy_metadata_of_whole_lines_or_bytes_keeps_every_example(tmp_path):
    folder = tmp_path / "pathfinder32" / "curv_baseline"
    _write_pathfinder(folder, [[1, 0, 1, 1, 0, 0, 1, 0, 1, 1]])
    lines = (folder / "metadata" / "0.npy").read_text().splitlines()
    np.save(folder / "metadata" / "0.npy", np.array(lines))  # 1-D: one line per item (was joined into one line)
    assert pathfinder.read_split(tmp_path, "train", difficulty="easy").labels.tolist() == [1, 0, 1, 1, 0, 0, 1, 0]
    np.save(folder / "metadata" / "0.npy", np.array([line.split() for line in lines], dtype="S"))  # was "b'imgs/0'"
    assert pathfinder.read_split(tmp_path, "test", difficulty="easy").labels.tolist() == [1]
