"""Generate Pathfinder images in the LRA release's layout, so Pathfinder runs with no download.

An image holds two long curved contours ("snakes": chains of equal short segments whose direction turns by
at most MAX_TURN per segment), several short distractor snakes, and two circular markers at contour ends.
Label 1: both markers sit at the two ends of the same contour (the other long contour is unmarked);
label 0: each long contour carries one marker. Difficulty is the long contours' length in segments, as the
release names it: curv_baseline 6, curv_contour_length_9 9, curv_contour_length_14 14; distractors are a
third as long and number about 20 (32 px; 22 at 64, 35 at 128, 30 at 256) divided by their length, as in
LRA's generation settings.

Unlike the release (drawn with the pathfinder scripts of Linsley et al., whose contours are dashed
"paddles"), contours here are continuous lines, drawn antialiased (ANTIALIAS x supersampling, box filter).
Every image is checked before it is kept: separate contours never touch, not even through their faintest
pixels (8-neighbourhood), and a marked contour stays 8-connected at THRESHOLD. So the label is exactly
"the two marker pixels are connected" on the image thresholded at any level from 1 to THRESHOLD.

Output (the release's layout, read by pathfinder.read_folder_split):
  <out>/metadata/<b>.npy   text lines `imgs/<b> sample_<i>.png <i> <label> <max turn> <contour length>
                           <distractor length> <segment length> <thickness> <margin> 1`
  <out>/imgs/<b>/sample_<i>.png   greyscale PNGs, resolution x resolution
  <out>/stats.json
Deterministic: image i of batch b is drawn from numpy's generator seeded with (seed, b, i); labels come in
seeded pairs (one 0, one 1 per consecutive pair), so any number of workers writes the same bytes and every
split of even bounds is balanced.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from effbert.data.lra.pathfinder import CONTOUR_LENGTH, RESOLUTIONS, difficulty_name
from effbert.files import atomic_dir, write_json, write_text
from effbert.pipeline_config import PathfinderSettings

THRESHOLD = 64  # a marked contour is 8-connected at this grey level (a 1-pixel line at 128 is not always)
ANTIALIAS = 4  # supersampling factor
MAX_TURN = math.pi / 6  # the largest change of direction between consecutive segments (radians)
DISTRACTOR_BUDGET = {32: 20, 64: 22, 128: 35, 256: 30}  # LRA: num_distractor_snakes = budget / distractor_length
OWN_ENTRIES = {"metadata", "imgs", "stats.json"}  # what a generated folder holds (it is replaced whole)
MAX_TRIES = 500  # attempts at one image before giving up (never reached at the release's settings)


@dataclass(frozen=True)
class PathfinderParams:
    """Drawing settings for one resolution and difficulty (lengths in output pixels)."""

    resolution: int
    contour_length: int  # segments in each long contour
    distractor_length: int
    num_distractors: int
    segment: float  # segment length
    thickness: float  # line width
    marker_radius: float
    seed_distance: float  # the markers are at least this far apart

    @classmethod
    def for_task(cls, resolution: int = 32, difficulty: str = "curv_contour_length_14") -> PathfinderParams:
        if resolution not in RESOLUTIONS:
            raise ValueError(f"unknown Pathfinder resolution {resolution}; expected one of {RESOLUTIONS}")
        length = CONTOUR_LENGTH[difficulty_name(difficulty)]
        distractor = max(1, length // 3)
        s = resolution / 32
        return cls(resolution=resolution, contour_length=length, distractor_length=distractor,
                   num_distractors=DISTRACTOR_BUDGET[resolution] // distractor, segment=2.0 * s,
                   thickness=1.0 * s, marker_radius=1.5 * s, seed_distance=7.0 * s)

    def metadata_fields(self) -> str:
        """The metadata columns after the label (as the release's: continuity, lengths, paddle sizes, contrasts)."""
        return (f"{MAX_TURN:.4f} {self.contour_length} {self.distractor_length} {self.segment:g} "
                f"{self.thickness:g} 1 1")


def dilate8(mask: np.ndarray) -> np.ndarray:
    """Boolean dilation by one pixel in the 8-neighbourhood."""
    p = np.pad(mask, 1)
    h, w = mask.shape
    out = np.zeros_like(mask)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            out |= p[dy : dy + h, dx : dx + w]
    return out


def component(mask: np.ndarray, seed: tuple[int, int]) -> np.ndarray:
    """The 8-connected component of `mask` holding pixel `seed` (empty if the seed is off the mask)."""
    comp = np.zeros_like(mask)
    if not mask[seed]:
        return comp
    comp[seed] = True
    while True:
        grown = dilate8(comp) & mask
        if np.array_equal(grown, comp):
            return comp
        comp = grown


def sample_snake(rng: np.random.Generator, n_segments: int, p: PathfinderParams) -> np.ndarray | None:
    """(n_segments + 1, 2) x, y points of one snake placed uniformly inside the frame, or None if it cannot fit.

    The shape is drawn first (a random start direction, then turns uniform in [-MAX_TURN, MAX_TURN]), then
    moved to a uniform position among those that keep it (and its markers) inside the frame.
    """
    turns = rng.uniform(-MAX_TURN, MAX_TURN, n_segments)
    turns[0] = rng.uniform(0, 2 * math.pi)
    angles = np.cumsum(turns)
    steps = p.segment * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    pts = np.concatenate([np.zeros((1, 2)), np.cumsum(steps, axis=0)])
    lo = p.marker_radius + 1.0
    free = (p.resolution - 2 * lo) - (pts.max(axis=0) - pts.min(axis=0))
    if (free < 0).any():
        return None
    return pts - pts.min(axis=0) + lo + rng.uniform(0, 1, 2) * free


def render(points: np.ndarray, markers: list[np.ndarray], p: PathfinderParams) -> np.ndarray:
    """One contour (and its markers) drawn antialiased: a uint8 (resolution, resolution) grey image."""
    a = ANTIALIAS
    im = Image.new("L", (p.resolution * a, p.resolution * a), 0)
    draw = ImageDraw.Draw(im)
    width = max(1, round(p.thickness * a))
    xy = [(float(x) * a, float(y) * a) for x, y in points]
    draw.line(xy, fill=255, width=width, joint="curve")
    r = p.marker_radius * a
    for x, y in markers:
        draw.ellipse((x * a - r, y * a - r, x * a + r, y * a + r), fill=255)
    return np.asarray(im.resize((p.resolution, p.resolution), Image.Resampling.BOX), dtype=np.uint8)


def pixel(point: np.ndarray) -> tuple[int, int]:
    """(row, column) of the pixel holding a point given as (x, y)."""
    return int(point[1]), int(point[0])


def markers_connected(img: np.ndarray, a: tuple[int, int], b: tuple[int, int], threshold: int) -> bool:
    """Whether pixels a and b are 8-connected through pixels >= threshold."""
    return bool(component(img >= threshold, a)[b])


def _place(rng, n_segments, p, support, markers_at=()) -> tuple[np.ndarray, np.ndarray] | None:
    """Draw a snake that keeps clear of `support`; its points and grey image, or None."""
    points = sample_snake(rng, n_segments, p)
    if points is None:
        return None
    grey = render(points, [points[k] for k in markers_at], p)
    if (dilate8(grey > 0) & support).any():
        return None
    return points, grey


def draw_example(
    rng: np.random.Generator, label: int, p: PathfinderParams
) -> tuple[np.ndarray, tuple[tuple[int, int], tuple[int, int]]]:
    """One image (uint8, resolution x resolution) and its two marker pixels (row, column)."""
    for _ in range(MAX_TRIES):
        support = np.zeros((p.resolution, p.resolution), dtype=bool)
        first = _place(rng, p.contour_length, p, support, (0, -1) if label else (0,))
        if first is None:
            continue
        support |= first[1] > 0
        second = _place(rng, p.contour_length, p, support, () if label else (-1,))
        if second is None:
            continue
        support |= second[1] > 0
        ends = (first[0][0], first[0][-1] if label else second[0][-1])
        if np.hypot(*(ends[0] - ends[1])) < p.seed_distance:
            continue
        img = np.maximum(first[1], second[1])
        for _ in range(p.num_distractors):
            for _ in range(20):
                placed = _place(rng, p.distractor_length, p, support)
                if placed is not None:
                    support |= placed[1] > 0
                    img = np.maximum(img, placed[1])
                    break
        m = (pixel(ends[0]), pixel(ends[1]))
        if all(markers_connected(img, *m, t) == bool(label) for t in (1, THRESHOLD)):
            return img, m
    raise RuntimeError(f"no Pathfinder image after {MAX_TRIES} tries with {p}")


def batch_labels(seed: int, batch: int, n: int) -> np.ndarray:
    """Seeded 0/1 labels for one batch: each consecutive pair holds one 0 and one 1, in random order.

    So any stretch of whole pairs, such as an 80/10/10 split with even bounds, is exactly balanced.
    """
    first = np.random.default_rng([seed, batch]).integers(0, 2, (n + 1) // 2)
    return np.stack([first, 1 - first], axis=1).reshape(-1)[:n].astype(np.int64)


def image_rng(seed: int, batch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, batch, index])


def _write_batch(args: tuple[Path, int, int, int, PathfinderParams]) -> list[int]:
    root, seed, batch, n, p = args
    folder = root / "imgs" / str(batch)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    labels = batch_labels(seed, batch, n)
    for i, label in enumerate(labels.tolist()):
        img, _ = draw_example(image_rng(seed, batch, i), label, p)
        Image.fromarray(img, mode="L").save(folder / f"sample_{i}.png")
        lines.append(f"imgs/{batch} sample_{i}.png {i} {label} {p.metadata_fields()}\n")
    write_text(root / "metadata" / f"{batch}.npy", "".join(lines))
    return labels.tolist()


def _check_replaceable(out_dir: Path) -> None:
    """Refuse an out_dir that holds more than a generated folder: it is replaced whole."""
    foreign = sorted(e.name for e in out_dir.iterdir() if e.name not in OWN_ENTRIES) if out_dir.is_dir() else []
    if foreign:
        raise ValueError(f"{out_dir} holds {foreign[:3]}, not only a generated Pathfinder folder; refusing to replace "
                         f"it (--out is the difficulty folder, e.g. <lra_dir>/pathfinder32/curv_contour_length_14)")


def _write_batches(jobs: list[tuple[Path, int, int, int, PathfinderParams]], workers: int, labels: Counter[int],
                   bar: tqdm) -> None:  # fmt: skip
    """Write every batch, in this process or a pool of `workers`, counting their labels into `labels`."""
    if workers == 1:
        results = map(_write_batch, jobs)
    else:
        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(_write_batch, jobs)
    try:
        for batch_labels_ in results:
            labels.update(batch_labels_)
            bar.update(len(batch_labels_))
    finally:
        if workers > 1:
            pool.shutdown()


def generate_pathfinder(out_dir: Path, settings: PathfinderSettings, *, resolution: int = 32,
                        difficulty: str = "curv_contour_length_14") -> dict:  # fmt: skip
    """Write settings.n_images images of one task (resolution, difficulty) to out_dir, the difficulty folder
    (metadata/, imgs/, stats.json); return the stats.

    out_dir is replaced whole when done. Batches of settings.images_per_batch share one metadata file and one
    imgs/<b> folder, as in the release; the same seed gives the same bytes for any number of workers. The
    settings' bounds are checked where they are declared (PathfinderSettings).
    """
    n_images, images_per_batch, seed = settings.n_images, settings.images_per_batch, settings.seed
    p = PathfinderParams.for_task(resolution, difficulty)
    out_dir = Path(out_dir)
    _check_replaceable(out_dir)
    started = time.perf_counter()
    sizes = [min(images_per_batch, n_images - b * images_per_batch) for b in range(-(-n_images // images_per_batch))]
    labels: Counter[int] = Counter()
    with atomic_dir(out_dir) as tmp:
        (tmp / "metadata").mkdir()
        jobs = [(tmp, seed, b, n, p) for b, n in enumerate(sizes)]
        bar = tqdm(total=n_images, desc=f"pathfinder{resolution} {difficulty_name(difficulty)}", unit="img",
                   disable=None)
        with bar:
            _write_batches(jobs, settings.workers, labels, bar)
        stats = {
            "generator": "effbert Pathfinder (continuous snakes, LRA release layout)",
            "difficulty": difficulty_name(difficulty),
            "n_images": n_images,
            "images_per_batch": images_per_batch,
            "seed": seed,
            "params": asdict(p),
            "max_turn": MAX_TURN,
            "threshold": THRESHOLD,
            "labels": {str(k): labels[k] for k in (0, 1)},
            "seconds": round(time.perf_counter() - started, 3),
        }
        write_json(tmp / "stats.json", stats)
    return stats
