"""Long Range Arena Image: CIFAR-10 as sequences of 1024 greyscale pixels, as LRA's input pipeline builds them.

- train: the first 90% of CIFAR-10's training set (45000 images; data_batch_1..5 in order); dev: the last
  10% (5000); test: the test set (10000);
- greyscale as tf.image.rgb_to_grayscale (`greyscale`): in float32 x = c / 255 per channel,
  g = 0.2989 r + 0.5870 g + 0.1140 b, back to uint8 as trunc(g * 255.5);
- read row by row (32 x 32 -> 1024 tokens), a token being the pixel value 0..255: pixel 0 (black) is a
  real token and nothing is padded.
Both official layouts are read, the python batches when both are present: cifar-10-batches-py
(data_batch_{1..5}, test_batch; pickled dicts, opened by a restricted unpickler that admits only numpy's
array rebuilders and plain containers) and cifar-10-batches-bin/*.bin (per record 1 label byte, then 1024
red, 1024 green, 1024 blue bytes).
"""

from __future__ import annotations

import io
import pickle
import pickletools
from pathlib import Path

import numpy as np

from effbert.data.lra.split import LraSplit, check_split
from effbert.errors import InputError

RELEASE_DIR = "cifar-10-batches-py"
BINARY_DIR = "cifar-10-batches-bin"
VOCAB_SIZE = 256  # pixel values
PAD_ID = 0  # only fills padded positions; CIFAR sequences are never padded (0 is black, a real pixel)
NUM_CLASSES = 10
SIDE = 32
PIXELS = SIDE * SIDE
RECORD = 1 + 3 * PIXELS
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
TRAIN_PERCENT = 90  # LRA: train = train[:90%] (45000 of 50000), dev = train[90%:]
MAX_BATCH_BYTES = 1 << 27  # 128 MiB: a released batch is ~31 MB; anything far larger is not one
RGB_WEIGHTS = np.asarray([0.2989, 0.5870, 0.1140], dtype=np.float32)

# what a CIFAR python batch may name: numpy's array rebuilders and plain builtin containers, nothing else
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 writes bytes at pickle protocol 2
    *(("builtins", name) for name in ("list", "dict", "tuple", "set", "frozenset", "bytes", "bytearray", "str",
                                       "int", "float", "complex", "bool")),
}


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only the globals in _ALLOWED; anything else (os.system, eval...) is refused."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(module, name)


def restricted_load(data: bytes) -> object:
    """Unpickle `data` (Python 2 strings as bytes) admitting only numpy arrays and plain containers.

    The opcodes are walked first (pickletools, reading nothing beyond `data`), so that a length the file
    only claims (a "bytes" of 2**50) is refused instead of allocated."""
    try:
        for _ in pickletools.genops(io.BytesIO(data)):
            pass
    except ValueError as e:
        raise pickle.UnpicklingError(f"malformed pickle ({e})") from None
    return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()


def greyscale(rgb: np.ndarray) -> np.ndarray:
    """uint8 (..., 3) RGB -> uint8 (...) grey exactly as tf.image.rgb_to_grayscale computes it (float32)."""
    x = np.asarray(rgb, dtype=np.uint8).astype(np.float32) * np.float32(1.0 / 255.0)
    g = x[..., 0] * RGB_WEIGHTS[0] + x[..., 1] * RGB_WEIGHTS[1] + x[..., 2] * RGB_WEIGHTS[2]
    return np.clip(np.trunc(g * np.float32(255.5)), 0, 255).astype(np.uint8)


def _planes_to_grey(rows: np.ndarray) -> np.ndarray:
    """(n, 3072) uint8 channel-planar rows (R plane, G plane, B plane) -> (n, 1024) int64 grey pixels."""
    rgb = rows.reshape(-1, 3, PIXELS).transpose(0, 2, 1)
    return greyscale(rgb).astype(np.int64)


# what unpickling a damaged or hostile file can raise (LookupError: _codecs.encode naming an unknown codec,
# KeyError / IndexError: references to objects the pickle never made); each means "not a CIFAR-10 batch"
_UNPICKLE_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, MemoryError,
                    LookupError, OverflowError, RecursionError)


def _read_batch_bytes(path: Path, kind: str) -> bytes:
    """The bytes of one batch file, or InputError: missing, unreadable (a folder...) or far beyond a batch's size."""
    try:
        size = Path(path).stat().st_size
        if size > MAX_BATCH_BYTES:
            raise InputError(f"{path}: {size} bytes; a CIFAR-10 {kind} batch is about 31 MB, not read")
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such CIFAR-10 {kind} batch") from None
    except OSError as e:  # a folder, no permission...: the OS's reason is the actionable part
        raise InputError(f"{path}: cannot read this CIFAR-10 {kind} batch ({e.strerror or e})") from None


def _batch_dict(path: Path, obj: object) -> dict:
    """The unpickled batch as a dict with str keys ('data', 'labels'), or InputError naming what it is instead."""
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a pickled dict with keys 'data' and 'labels', got {type(obj).__name__}")
    d = {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    if "data" not in d or "labels" not in d:
        # str(): the keys may be of mixed types (1, 'x'), which sorted() alone cannot order
        raise InputError(f"{path}: expected keys 'data' and 'labels', got {sorted(str(k) for k in d)}")
    return d


def _batch_data(path: Path, raw: object) -> np.ndarray:
    """Key 'data': a released batch holds one uint8 (n, 3072) array; anything else is refused, not converted."""
    if isinstance(raw, np.ndarray) and raw.dtype == np.uint8 and raw.ndim == 2 and raw.shape[1] == 3 * PIXELS:
        return raw
    got = f"{raw.dtype} {raw.shape}" if isinstance(raw, np.ndarray) else type(raw).__name__
    raise InputError(f"{path}: key 'data': expected a uint8 (n, {3 * PIXELS}) array, got {got}")


def _is_class_id(value: object) -> bool:
    # bool is an int subclass, but True is no class id: a file of booleans is not a file of labels
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= value < NUM_CLASSES


def _batch_labels(path: Path, raw: object, n: int) -> np.ndarray:
    """Key 'labels' as (n,) int64: a released batch holds a list of n ints 0..9.

    Every item is checked as it is, before any conversion, because numpy would turn 1.5 into class 1, True into
    class 1 and the string '7' into class 7: silently wrong labels."""
    expected = f"{path}: key 'labels': expected a list of {n} integer class ids 0..{NUM_CLASSES - 1}"
    if isinstance(raw, np.ndarray):
        raw = raw.tolist()  # numpy ints become ints; floats, bools and nested rows stay what they are
    if not isinstance(raw, (list, tuple)):
        raise InputError(f"{expected}, got {type(raw).__name__} {raw!r:.40}")
    if len(raw) != n:
        raise InputError(f"{expected} (one per row of 'data'), got {len(raw)}")
    for i, value in enumerate(raw):
        if not _is_class_id(value):
            raise InputError(f"{expected}; item {i} is {type(value).__name__} {value!r:.40}")
    return np.asarray(raw, dtype=np.int64)


def read_python_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One python batch -> ((n, 3072) uint8 planar pixels, (n,) int64 labels)."""
    data = _read_batch_bytes(path, "python")
    try:
        obj = restricted_load(data)
    except _UNPICKLE_ERRORS as e:
        raise InputError(f"{path}: not a CIFAR-10 python batch: {str(e)[:200]}") from None
    d = _batch_dict(path, obj)
    pixels = _batch_data(path, d["data"])
    return pixels, _batch_labels(path, d["labels"], len(pixels))


def read_binary_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch (records of 1 label byte + 3072 pixel bytes) -> (planar pixels, labels)."""
    raw = np.frombuffer(_read_batch_bytes(path, "binary"), dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD:
        raise InputError(f"{path}: {raw.size} bytes is not a whole number of {RECORD}-byte CIFAR-10 records")
    records = raw.reshape(-1, RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= NUM_CLASSES:
        bad = int(np.argmax(labels >= NUM_CLASSES))
        raise InputError(f"{path}: record {bad}: label byte {labels[bad]} is not a class id 0..{NUM_CLASSES - 1}")
    return records[:, 1:], labels


def percent_boundary(n: int, percent: int) -> int:
    """The index where the first `percent`% of n examples end: round(n * percent / 100), halves up."""
    return (n * percent * 2 + 100) // 200


def cifar_folder(lra_dir: Path) -> tuple[Path, str]:
    """(folder, "py" or "bin"): the python batches if present, else the binary ones, else InputError."""
    py, binary = Path(lra_dir) / RELEASE_DIR, Path(lra_dir) / BINARY_DIR
    if py.is_dir():
        return py, "py"
    if binary.is_dir():
        return binary, "bin"
    raise InputError(
        f"{py} (or {binary}): no such folder; expected CIFAR-10's python or binary batches there "
        f"(README.md, 'Real runs: where each dataset goes', says where to get them)"
    )


def _read_batches(folder: Path, kind: str, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    reader = read_python_batch if kind == "py" else read_binary_batch
    parts = [reader(folder / (name if kind == "py" else f"{name}.bin")) for name in names]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def read_split(lra_dir: Path, split: str) -> LraSplit:
    """The LraSplit for "train" (first 90% of the training images), "dev" (the last 10%) or "test" (test_batch)."""
    check_split(split)
    folder, kind = cifar_folder(lra_dir)
    data, labels = _read_batches(folder, kind, (TEST_BATCH,) if split == "test" else TRAIN_BATCHES)
    if split != "test":
        cut = percent_boundary(len(labels), TRAIN_PERCENT)
        data, labels = (data[:cut], labels[:cut]) if split == "train" else (data[cut:], labels[cut:])
    grey = _planes_to_grey(data)
    return LraSplit(inputs=(list(grey),), labels=labels.copy())
