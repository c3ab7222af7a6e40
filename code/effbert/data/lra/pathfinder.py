"""Long Range Arena Pathfinder and Path-X: are the two circles joined by one path? From the release's PNGs.

Release layout, lra_release/pathfinder{32,64,128,256}/<difficulty>/:
- metadata/<b>.npy: text lines despite the name, one per image, space-separated:
  `imgs/<b> sample_<i>.png <i> <label> <continuity> <contour_length> <distractor_length> <paddle_length>
  <paddle_thickness> <paddle_margin> <number of contrasts>` (fields 0, 1 locate the image, field 3 is the label);
- imgs/<b>/sample_<i>.png: a greyscale PNG of resolution x resolution pixels.
Difficulties: curv_baseline (easy, contour length 6), curv_contour_length_9 (intermediate),
curv_contour_length_14 (hard); Path-X is resolution 128 at curv_contour_length_14.

As in LRA's pipeline, a difficulty's examples are split 80 / 10 / 10% (train / dev / test) in the dataset's
order (here the release's: metadata files by number, lines in file order), and examples with an empty image
file are dropped after the split. Tokens are the pixel values 0..255, row by row; pixel 0 (the black
background) is a real token and nothing is padded.
"""

from __future__ import annotations

import io
import tokenize
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from effbert.data.lra.image import greyscale, percent_boundary
from effbert.data.lra.split import LraSplit, check_split, release_folder
from effbert.errors import InputError

RESOLUTIONS = (32, 64, 128, 256)
DIFFICULTIES = ("curv_baseline", "curv_contour_length_9", "curv_contour_length_14")
ALIASES = {"easy": "curv_baseline", "intermediate": "curv_contour_length_9", "hard": "curv_contour_length_14"}
CONTOUR_LENGTH = {"curv_baseline": 6, "curv_contour_length_9": 9, "curv_contour_length_14": 14}
DEFAULT_RESOLUTION = 32
DEFAULT_DIFFICULTY = "curv_contour_length_14"
RELEASE_DIR = "pathfinder32"  # the default; release_dir(resolution) for the others
VOCAB_SIZE = 256  # pixel values
PAD_ID = 0  # only fills padded positions; Pathfinder sequences are never padded (0 is a real pixel)
NUM_CLASSES = 2
SPLIT_PERCENT = {"train": (0, 80), "dev": (80, 90), "test": (90, 100)}
METADATA_FIELDS = 4  # at least: folder, file name, index, label
NPY_MAGIC = b"\x93NUMPY"
# what np.load (allow_pickle=False) raises on a damaged header or body; MemoryError: a header declaring a huge
# shape; TokenError: numpy tokenizes old-style headers
_NPY_ERRORS = (ValueError, OSError, MemoryError, SyntaxError, tokenize.TokenError)
# what PIL raises on a damaged PNG besides OSError (ValueError: e.g. "Truncated IHDR chunk")
_PNG_ERRORS = (OSError, ValueError, SyntaxError)


@dataclass(frozen=True)
class Example:
    """One metadata line: where its image is and its label, and which file and line named it."""

    image: Path
    label: int
    source: Path
    line: int


def release_dir(resolution: int) -> str:
    if resolution not in RESOLUTIONS:
        raise ValueError(f"unknown Pathfinder resolution {resolution}; expected one of {RESOLUTIONS}")
    return f"pathfinder{resolution}"


def difficulty_name(difficulty: str) -> str:
    """The release's folder name for a difficulty (accepts easy / intermediate / hard too)."""
    name = ALIASES.get(difficulty, difficulty)
    if name not in DIFFICULTIES:
        choices = DIFFICULTIES + tuple(ALIASES)
        raise ValueError(f"unknown Pathfinder difficulty {difficulty!r}; expected one of {choices}")
    return name


def pathfinder_dir(lra_dir: Path, resolution: int = DEFAULT_RESOLUTION, difficulty: str = DEFAULT_DIFFICULTY) -> Path:
    """<lra_dir>/pathfinder<resolution>/<difficulty>: the folder holding metadata/ and imgs/."""
    return Path(lra_dir) / release_dir(resolution) / difficulty_name(difficulty)


def _text(value: object) -> str:
    """One array item as text: a bytes item (dtype S) is its decoded text, not "b'...'"."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _beyond_unicode(rows: np.ndarray) -> bool:
    """Whether a unicode (dtype U) array holds a code point no str can hold: a damaged .npy body."""
    if rows.dtype.kind != "U" or rows.size == 0 or rows.dtype.itemsize == 0:
        return False
    native = np.ascontiguousarray(rows, dtype=rows.dtype.newbyteorder("="))
    return int(native.view(np.uint32).max()) > 0x10FFFF


def _npy_lines(path: Path, rows: np.ndarray) -> list[str]:
    """Metadata lines from a .npy array: 2-D, one row of fields per line; 1-D, one whole line per item (items
    holding spaces) or else a single row of fields. Joining 1-D lines into one row would silently keep only the
    first example."""
    if rows.ndim > 2:
        raise InputError(f"{path}: a {rows.ndim}-D .npy array; expected metadata rows (2-D) or lines (1-D)")
    if _beyond_unicode(rows):  # numpy raises SystemError, not ValueError, turning such an item into str
        raise InputError(f"{path}: a .npy text array holding code points beyond U+10FFFF; expected metadata text")
    if rows.ndim == 1 and any(len(_text(v).split()) > 1 for v in rows):
        return [_text(v) for v in rows]
    return [" ".join(_text(v) for v in row) for row in np.atleast_2d(rows)]


def metadata_lines(path: Path) -> list[str]:
    """The lines of one metadata file: text (as released), or a real .npy array of rows (no pickle)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:  # a folder named *.npy, no permission...
        raise InputError(f"{path}: cannot read this metadata file ({e.strerror or e})") from None
    if data.startswith(NPY_MAGIC):
        try:
            rows = np.load(io.BytesIO(data), allow_pickle=False)
        except _NPY_ERRORS as e:
            raise InputError(f"{path}: a .npy file that numpy cannot read without pickle: {str(e)[:200]}") from None
        return _npy_lines(path, rows)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: metadata is neither text nor .npy ({e})") from None
    return text.splitlines()


def _metadata_key(path: Path) -> tuple[int, str]:
    return (int(path.stem), path.name) if path.stem.isdigit() else (1 << 62, path.name)


def read_metadata(folder: Path) -> list[Example]:
    """Every example of one difficulty folder, in the release's order (metadata files by number, then lines)."""
    meta = Path(folder) / "metadata"
    files = sorted(meta.glob("*.npy"), key=_metadata_key) if meta.is_dir() else []
    if not files:
        raise InputError(f"{meta}: no metadata/*.npy files; expected the Pathfinder release layout")
    examples: list[Example] = []
    for path in files:
        for lineno, line in enumerate(metadata_lines(path), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < METADATA_FIELDS:
                raise InputError(
                    f"{path}: line {lineno}: expected 'imgs/<b> sample_<i>.png <i> <label> ...', got {line[:80]!r}"
                )
            if fields[3] not in ("0", "1"):
                raise InputError(f"{path}: line {lineno}: field 4 (label) must be 0 or 1, got {fields[3]!r}")
            examples.append(Example(Path(folder) / fields[0] / fields[1], int(fields[3]), path, lineno))
    return examples


def split_examples(examples: list[Example], split: str) -> list[Example]:
    """LRA's 80/10/10 cut of the examples, in order."""
    lo, hi = SPLIT_PERCENT[check_split(split)]
    n = len(examples)
    return examples[percent_boundary(n, lo) : percent_boundary(n, hi)]


def _check_declared_size(im: Image.Image, example: Example, resolution: int | None) -> None:
    """Refuse an image whose header declares the wrong size, before its pixels are decoded (a 20000 x 10000
    PNG is a few kB on disk and gigabytes decoded). Without a resolution, the largest Pathfinder one bounds it."""
    width, height = im.size
    if resolution is not None and (width, height) != (resolution, resolution):
        expected = f"a {resolution}x{resolution} image"
    elif resolution is None and max(width, height) > max(RESOLUTIONS):
        expected = f"at most {max(RESOLUTIONS)}x{max(RESOLUTIONS)} pixels (the largest Pathfinder resolution)"
    else:
        return
    raise InputError(
        f"{example.image}: expected {expected}, got {width}x{height}; named by {example.source} line {example.line}"
    )


def _decode(im: Image.Image) -> np.ndarray:
    """The opened image's pixels as a uint8 (height, width) grey array (RGB through greyscale, as for CIFAR)."""
    im.load()
    if im.mode in ("L", "P", "1", "LA", "I;16", "I"):
        return np.asarray(im.convert("L"), dtype=np.uint8)
    return greyscale(np.asarray(im.convert("RGB"), dtype=np.uint8))


def read_image(example: Example, resolution: int | None = None) -> np.ndarray | None:
    """The image's pixels row by row as 1-D int64 0..255; None for an empty file (LRA drops those)."""
    path = example.image
    try:
        if path.stat().st_size == 0:
            return None
        with warnings.catch_warnings():
            # PIL only warns below twice its pixel limit; the declared size is refused below, before decoding
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            _check_declared_size(im, example, resolution)
            pixels = _decode(im)
    except FileNotFoundError:
        raise InputError(f"{example.source}: line {example.line}: image {path} does not exist") from None
    except Image.DecompressionBombError as e:  # a declared size beyond PIL's limit, refused when opening
        side = max(RESOLUTIONS)
        raise InputError(f"{path}: declares a far too large image ({e}); expected a Pathfinder image of at most "
                         f"{side}x{side}; named by {example.source} line {example.line}") from None
    except _PNG_ERRORS as e:
        raise InputError(f"{path}: not a readable PNG ({e}); named by {example.source} line {example.line}") from None
    return pixels.reshape(-1).astype(np.int64)


def read_folder_split(folder: Path, split: str, *, resolution: int | None = None) -> LraSplit:
    """The LraSplit of one difficulty folder (metadata/ + imgs/) for "train", "dev" or "test"."""
    chosen = split_examples(read_metadata(folder), split)
    seqs: list[np.ndarray] = []
    labels: list[int] = []
    for ex in tqdm(chosen, desc=f"pathfinder {split}", unit="img", disable=None):
        pixels = read_image(ex, resolution)
        if pixels is not None:
            seqs.append(pixels)
            labels.append(ex.label)
    return LraSplit(inputs=(seqs,), labels=np.asarray(labels, dtype=np.int64))


def read_split(
    lra_dir: Path, split: str, *, resolution: int = DEFAULT_RESOLUTION, difficulty: str = DEFAULT_DIFFICULTY
) -> LraSplit:
    """The LraSplit of <lra_dir>/pathfinder<resolution>/<difficulty> (Path-X: resolution=128, difficulty="hard")."""
    release_folder(lra_dir, release_dir(resolution), f"Pathfinder{resolution}")
    folder = pathfinder_dir(lra_dir, resolution, difficulty)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder; expected one of {DIFFICULTIES} under {folder.parent}")
    return read_folder_split(folder, split, resolution=resolution)
