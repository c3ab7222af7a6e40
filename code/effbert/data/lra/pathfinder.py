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


def metadata_lines(path: Path) -> list[str]:
    """The lines of one metadata file: text (as released), or a real .npy array of rows (no pickle)."""
    data = Path(path).read_bytes()
    if data.startswith(NPY_MAGIC):
        try:
            rows = np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as e:
            raise InputError(f"{path}: a .npy file that numpy cannot read without pickle: {e}") from None
        rows = np.atleast_2d(rows)
        return [" ".join(str(v) for v in row) for row in rows]
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


def read_image(example: Example, resolution: int | None = None) -> np.ndarray | None:
    """The image's pixels row by row as 1-D int64 0..255; None for an empty file (LRA drops those)."""
    path = example.image
    try:
        if path.stat().st_size == 0:
            return None
        with Image.open(path) as im:
            im.load()
            if im.mode in ("L", "P", "1", "LA", "I;16", "I"):
                pixels = np.asarray(im.convert("L"), dtype=np.uint8)
            else:
                pixels = greyscale(np.asarray(im.convert("RGB"), dtype=np.uint8))
    except FileNotFoundError:
        raise InputError(f"{example.source}: line {example.line}: image {path} does not exist") from None
    except OSError as e:
        raise InputError(f"{path}: not a readable PNG ({e}); named by {example.source} line {example.line}") from None
    if resolution is not None and pixels.shape != (resolution, resolution):
        raise InputError(f"{path}: expected a {resolution}x{resolution} image, got {pixels.shape[1]}x{pixels.shape[0]}")
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
