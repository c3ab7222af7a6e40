"""The Pathfinder generator: labels against an independent flood fill, the release layout, determinism."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from PIL import Image

from effbert.cli import main
from effbert.data.lra import pathfinder
from effbert.data.lra import pathfinder_generate as gen
from effbert.pipeline_config import PathfinderSettings


def flood_connected(img: np.ndarray, a: tuple[int, int], b: tuple[int, int], threshold: int) -> bool:
    """Breadth-first search over pixels >= threshold, 8 neighbours: is b reachable from a?"""
    h, w = img.shape
    if img[a] < threshold or img[b] < threshold:
        return False
    seen = {a}
    todo = deque([a])
    while todo:
        r, c = todo.popleft()
        if (r, c) == b:
            return True
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                n = (r + dr, c + dc)
                if 0 <= n[0] < h and 0 <= n[1] < w and n not in seen and img[n] >= threshold:
                    seen.add(n)
                    todo.append(n)
    return False


def component_size(img: np.ndarray, a: tuple[int, int], threshold: int) -> int:
    mask = img >= threshold
    seen = {a}
    todo = deque([a])
    while todo:
        r, c = todo.popleft()
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                n = (r + dr, c + dc)
                if 0 <= n[0] < mask.shape[0] and 0 <= n[1] < mask.shape[1] and n not in seen and mask[n]:
                    seen.add(n)
                    todo.append(n)
    return len(seen)


@pytest.mark.parametrize(("resolution", "n"), [(32, 40), (64, 10), (128, 4)])
@pytest.mark.parametrize("difficulty", pathfinder.DIFFICULTIES)
def test_labels_agree_with_a_flood_fill_of_the_markers(resolution, n, difficulty):
    p = gen.PathfinderParams.for_task(resolution, difficulty)
    for i in range(n):
        label = i % 2
        img, (m1, m2) = gen.draw_example(np.random.default_rng([7, resolution, i]), label, p)
        assert img.shape == (resolution, resolution) and img.dtype == np.uint8
        assert img[m1] >= gen.THRESHOLD and img[m2] >= gen.THRESHOLD  # both markers are drawn
        for threshold in (1, gen.THRESHOLD // 2, gen.THRESHOLD):
            assert flood_connected(img, m1, m2, threshold) == bool(label), (i, threshold)


def test_difficulty_is_contour_length():
    sizes = {}
    for difficulty in pathfinder.DIFFICULTIES:
        p = gen.PathfinderParams.for_task(32, difficulty)
        drawn = [gen.draw_example(np.random.default_rng([3, i]), 1, p) for i in range(12)]
        sizes[difficulty] = np.mean([component_size(img, m1, gen.THRESHOLD) for img, (m1, _) in drawn])
    assert sizes["curv_baseline"] < sizes["curv_contour_length_9"] < sizes["curv_contour_length_14"]


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "stats.json"}


def test_generated_release_layout_is_read_by_the_loader(tmp_path):
    out = pathfinder.pathfinder_dir(tmp_path, 32, "curv_baseline")
    settings = PathfinderSettings(n_images=30, seed=5, images_per_batch=12)
    stats = gen.generate_pathfinder(out, settings, difficulty="curv_baseline")
    assert stats["labels"] == {"0": 15, "1": 15}
    assert sorted(p.name for p in (out / "metadata").iterdir()) == ["0.npy", "1.npy", "2.npy"]
    lines = (out / "metadata" / "1.npy").read_text().splitlines()
    assert len(lines) == 12
    fields = lines[4].split()
    assert fields[:3] == ["imgs/1", "sample_4.png", "4"] and fields[5] == "6" and len(fields) == 11
    # balanced: every consecutive pair of a metadata file holds one 0 and one 1
    for name, n in (("0.npy", 12), ("2.npy", 6)):
        labels = [int(line.split()[3]) for line in (out / "metadata" / name).read_text().splitlines()]
        assert len(labels) == n and all(labels[k] + labels[k + 1] == 1 for k in range(0, n, 2))
    assert 0 < sum(gen.batch_labels(5, 0, 12)[::2]) < 6  # the order within pairs is random
    # the PNG is exactly the drawn image of its seed, and its label matches the metadata
    label = int(fields[3])
    img, (m1, m2) = gen.draw_example(gen.image_rng(5, 1, 4), label, gen.PathfinderParams.for_task(32, "easy"))
    with Image.open(out / "imgs" / "1" / "sample_4.png") as im:
        assert im.mode == "L" and im.size == (32, 32)
        assert np.array_equal(np.asarray(im), img)
    assert flood_connected(img, m1, m2, gen.THRESHOLD) == bool(label)
    train, dev, test = (pathfinder.read_split(tmp_path, s, difficulty="easy") for s in ("train", "dev", "test"))
    assert (len(train), len(dev), len(test)) == (24, 3, 3)
    assert train.inputs[0][16].tolist() == img.reshape(-1).tolist()  # file 1, line 5 = example 12 + 4
    assert all(len(a) == 1024 for a in train.inputs[0])
    assert min(int(a.min()) for a in train.inputs[0]) == 0  # the black background is data


def test_generation_is_deterministic_for_any_worker_count(tmp_path):
    settings = PathfinderSettings(n_images=10, images_per_batch=3, seed=1)
    gen.generate_pathfinder(tmp_path / "a", settings)
    gen.generate_pathfinder(tmp_path / "b", settings.model_copy(update={"workers": 2}))
    gen.generate_pathfinder(tmp_path / "c", settings.model_copy(update={"seed": 2}))
    a, b, c = (_files(tmp_path / x) for x in "abc")
    assert a == b
    assert a.keys() == c.keys() and a != c
    # a generated folder is replaced whole
    gen.generate_pathfinder(tmp_path / "a", settings.model_copy(update={"seed": 3}))
    assert _files(tmp_path / "a").keys() == a.keys() and _files(tmp_path / "a") != a
    with pytest.raises(ValueError, match="refusing to replace"):  # a release folder is not
        gen.generate_pathfinder(tmp_path, settings)


def test_cli_generates_pathfinder_and_listops(tmp_path):
    out = tmp_path / "pathfinder32" / "curv_contour_length_14"
    assert main(["lra-data", "--task", "pathfinder", "--out", str(out), "--n_images", "10", "--seed", "3"]) == 0
    assert len(pathfinder.read_split(tmp_path, "train")) == 8
    assert main(["lra-data", "--out", str(tmp_path / "listops-1000"), "--train", "3", "--val", "2", "--test", "2",
                 "--min_length", "5", "--max_length", "40"]) == 0
    assert (tmp_path / "listops-1000" / "basic_val.tsv").is_file()


def test_cli_refuses_settings_outside_their_declaration_in_one_line(tmp_path, capsys):
    # the bounds are PathfinderSettings' and ListopsSettings' (effbert.pipeline_config), as the config's
    assert main(["lra-data", "--task", "pathfinder", "--out", str(tmp_path / "p"), "--n_images", "9"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "effbert lra-data: error: --n_images: Input should be greater than or equal to 10 (got 9)"
    # a tree is kept when min_length < length < max_length: 40 < length < 41 keeps none
    assert main(["lra-data", "--out", str(tmp_path / "l"), "--min_length", "40", "--max_length", "41"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("effbert lra-data: error: min_length must be below max_length - 1") and "\n" not in err
    assert not (tmp_path / "p").exists() and not (tmp_path / "l").exists()


def test_generated_metadata_has_the_release_fields(shared_fixtures, tmp_path):
    real = pathfinder.metadata_lines(
        shared_fixtures / "lra" / "pathfinder32" / "curv_baseline" / "metadata" / "0.head20.npy")
    gen.generate_pathfinder(tmp_path, PathfinderSettings(n_images=10), difficulty="curv_baseline")
    ours = (tmp_path / "metadata" / "0.npy").read_text().splitlines()
    assert {len(line.split()) for line in ours} == {len(line.split()) for line in real} == {11}
    for line_ours, line_real in zip(ours, real, strict=False):
        a, b = line_ours.split(), line_real.split()
        assert a[:3] == b[:3]  # imgs/0 sample_<i>.png <i>
        assert a[5] == b[5] == "6"  # contour length of the baseline


def test_every_split_of_generated_data_is_balanced(tmp_path):
    settings = PathfinderSettings(n_images=40, seed=9, images_per_batch=40)
    gen.generate_pathfinder(pathfinder.pathfinder_dir(tmp_path), settings)
    for split, n in (("train", 32), ("dev", 4), ("test", 4)):
        labels = pathfinder.read_split(tmp_path, split).labels
        assert len(labels) == n and labels.sum() == n // 2
