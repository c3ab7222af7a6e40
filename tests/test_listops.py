"""ListOps: generator rules, labels against an independent evaluator, the loader, and a tiny LRA run."""

from __future__ import annotations

import json
import math
import random
import re
import statistics
from pathlib import Path

import pytest

from effbert.data.lra.listops import (
    PAD_ID,
    VOCAB,
    generate_listops,
    listops_path,
    load_listops,
    sample_expression,
    tokenize,
)
from effbert.errors import InputError
from effbert.pipeline_config import ListopsSettings

# ---- an independent evaluator and renderer (a token stack and the release's nested pairs) ----


def stack_value(tokens: list[str]) -> int:
    """Evaluate the tokenised form with one stack of markers and values (no tree)."""
    stack: list[object] = []
    for tok in tokens:
        if tok.startswith("["):
            stack.append(tok)
        elif tok == "X":
            args = []
            while not isinstance(stack[-1], str):
                args.append(stack.pop())
            op = stack.pop()
            if op == "[MIN":
                stack.append(min(args))
            elif op == "[MAX":
                stack.append(max(args))
            elif op == "[MED":
                stack.append(math.floor(statistics.median(args)))  # numpy's median, then int()
            elif op == "[SM":
                stack.append(sum(args) % 10)
            else:
                raise AssertionError(op)
        else:
            stack.append(int(tok))
    assert len(stack) == 1, tokens
    return stack[0]


def release_string(tokens: list[str]) -> str:
    """Re-render tokens the way the LRA release writes a tree: ((op, a0), a1) ... , ']') as '( l r )'."""

    def parse(i: int) -> tuple[object, int]:
        if not tokens[i].startswith("["):
            return tokens[i], i + 1
        node: object = None
        op, i = tokens[i], i + 1
        first = True
        while tokens[i] != "X":
            child, i = parse(i)
            node = (op, child) if first else (node, child)
            first = False
        return (node, "]"), i + 1

    def show(t: object) -> str:
        return t if isinstance(t, str) else f"( {show(t[0])} {show(t[1])} )"

    tree, end = parse(0)
    assert end == len(tokens)
    return show(tree)


def max_operator_depth(tokens: list[str]) -> int:
    depth = deepest = 0
    for tok in tokens:
        if tok.startswith("["):
            depth += 1
            deepest = max(deepest, depth)
        elif tok == "X":
            depth -= 1
    return deepest


def read_rows(path: Path) -> list[tuple[str, int]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "Source\tTarget"
    return [(src, int(tgt)) for src, tgt in (line.split("\t") for line in lines[1:])]


# ---- hand-worked examples ----

MAX_EXAMPLE = "( ( ( ( ( [MAX 2 ) 9 ) ( ( ( [MIN 4 ) 7 ) ] ) ) 0 ) ] )"  # [MAX 2 9 [MIN 4 7 ] 0 ]


def test_hand_worked_examples(tmp_path: Path):
    assert tokenize(MAX_EXAMPLE) == "[MAX 2 9 [MIN 4 7 X 0 X".split()
    assert release_string(tokenize(MAX_EXAMPLE)) == MAX_EXAMPLE
    cases = {
        MAX_EXAMPLE: 9,
        release_string("[MED 1 2 7 8 X".split()): 4,  # median 4.5 -> int() 4
        release_string("[MED 3 9 X".split()): 6,
        release_string("[MED 0 5 9 X".split()): 5,
        release_string("[SM 9 8 7 X".split()): 4,  # 24 mod 10
        release_string("[SM [MAX 3 9 X [MIN 4 7 X X".split()): 3,  # 9 + 4 = 13
    }
    path = tmp_path / "basic_test.tsv"
    path.write_text("Source\tTarget\n" + "".join(f"{s}\t{v}\n" for s, v in cases.items()), encoding="utf-8")
    ids, labels = load_listops(path)
    for (source, value), row, label in zip(cases.items(), ids, labels, strict=True):
        assert stack_value(tokenize(source)) == value == label
        assert [VOCAB[i] for i in row] == tokenize(source)
        assert PAD_ID not in row


# ---- the generator ----


def test_sampled_trees_follow_the_rules():
    rng = random.Random(1)
    roots_op = 0
    for _ in range(3000):
        text, value, length = sample_expression(rng, max_depth=4, max_args=5, max_length=10**6)
        tokens = tokenize(text)
        assert len(tokens) == length
        assert stack_value(tokens) == value
        assert release_string(tokens) == text
        assert max_operator_depth(tokens) <= 3  # the root is depth 1; at max_depth a node is a value
        roots_op += tokens[0].startswith("[")
    assert abs(roots_op / 3000 - 0.25) < 0.03  # P(operator) below max_depth


def test_operator_arity_and_choices_are_uniform():
    rng = random.Random(2)
    arities, ops = [], []
    for _ in range(4000):
        text, _, _ = sample_expression(rng, max_depth=2, max_args=4, max_length=10**6)
        tokens = tokenize(text)
        if tokens[0].startswith("["):  # depth 2 = max: the arguments are values
            arities.append(len(tokens) - 2)
            ops.append(tokens[0])
    assert set(arities) == {2, 3, 4} and set(ops) == {"[MIN", "[MAX", "[MED", "[SM"}
    for k in (2, 3, 4):
        assert abs(arities.count(k) / len(arities) - 1 / 3) < 0.06


def test_generated_files(tmp_path: Path):
    settings = ListopsSettings(train=120, val=20, test=20, min_length=10, max_length=60, seed=3)
    stats = generate_listops(tmp_path / "a", settings)
    assert stats["counts"] == {"train": 120, "val": 20, "test": 20}
    rows = {split: read_rows(tmp_path / "a" / f"basic_{split}.tsv") for split in ("train", "val", "test")}
    assert [len(r) for r in rows.values()] == [120, 20, 20]
    sources = [s for r in rows.values() for s, _ in r]
    assert len(set(sources)) == len(sources)  # unique across splits
    for source, target in (row for r in rows.values() for row in r):
        tokens = tokenize(source)
        assert 10 < len(tokens) < 60
        assert stack_value(tokens) == target
        assert release_string(tokens) == source
    again = generate_listops(tmp_path / "b", settings)
    other = generate_listops(tmp_path / "c", settings.model_copy(update={"seed": 4}))
    for split in ("train", "val", "test"):
        name = f"basic_{split}.tsv"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    train_a, train_c = (tmp_path / d / "basic_train.tsv" for d in ("a", "c"))
    assert train_a.read_bytes() != train_c.read_bytes()
    assert again["labels"] == stats["labels"] and other["seed"] == 4
    assert json.loads((tmp_path / "a" / "stats.json").read_text())["counts"]["train"] == 120
    assert not list((tmp_path / "a").glob(".*"))  # no temporary files left


def test_dedup_when_trees_are_few(tmp_path: Path):
    # 3 < length < 5 leaves only one operator over two digits: 4 * 100 = 400 distinct trees
    generate_listops(tmp_path, ListopsSettings(train=300, val=50, test=40, min_length=3, max_length=5, seed=0))
    sources = [s for split in ("train", "val", "test") for s, _ in read_rows(tmp_path / f"basic_{split}.tsv")]
    assert len(sources) == len(set(sources)) == 390
    assert all(len(tokenize(s)) == 4 for s in sources)


# ---- the loader ----


def test_release_fixture(shared_fixtures: Path):
    path = shared_fixtures / "lra" / "listops" / "basic_test.head10.tsv"
    if not path.exists():
        pytest.skip(f"{path} not found")
    ids, labels = load_listops(path)
    rows = read_rows(path)
    assert len(ids) == len(rows) == len(labels) > 0
    for (source, target), row, label in zip(rows, ids, labels, strict=True):
        tokens = tokenize(source)
        assert [VOCAB[i] for i in row] == tokens
        assert stack_value(tokens) == target == label
        assert release_string(tokens) == source  # the release writes trees as our generator does


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("( ( [MAX 2 ) 9 ) ] )\t9\textra", "2 tab-separated columns"),
        ("( ( [MAX 2 ) 9 ) ] )\t12", "Target must be a digit"),
        ("( ( [MAX 2 ) 9 ) ] )\tnine", "Target must be a digit"),
        ("( ( [MEAN 2 ) 9 ) ] )\t5", "unknown ListOps token '[MEAN'"),
        ("\t5", "empty Source"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path: Path, row: str, expected: str):
    path = tmp_path / "basic_train.tsv"
    path.write_text(f"Source\tTarget\n{MAX_EXAMPLE}\t9\n{row}\n", encoding="utf-8")
    with pytest.raises(InputError, match=rf"basic_train.tsv: line 3: .*{re.escape(expected)}"):
        load_listops(path)


def test_header_and_layout(tmp_path: Path):
    path = tmp_path / "x.tsv"
    path.write_text(f"{MAX_EXAMPLE}\t9\n", encoding="utf-8")
    with pytest.raises(InputError, match="line 1: expected the header"):
        load_listops(path)
    with pytest.raises(InputError, match="no such ListOps file"):
        load_listops(tmp_path / "missing.tsv")
    assert listops_path(tmp_path, "val") == tmp_path / "listops-1000" / "basic_val.tsv"


def test_sampler_gives_up_exactly_at_max_length():
    for seed in range(200):
        full = sample_expression(random.Random(seed), max_depth=10, max_args=10, max_length=10**7)
        capped = sample_expression(random.Random(seed), max_depth=10, max_args=10, max_length=40)
        assert capped == (full if full[2] < 40 else None)


# ---- training (effbert.train.lra) ----


def test_pad_batch_masks_by_length_not_by_token_id():
    from effbert.train.lra import pad_batch

    ids, mask = pad_batch([[0, 5], [7, 0, 0, 3]], pad_id=0)  # id 0 inside a row is still a real token
    assert ids.tolist() == [[0, 5, 0, 0], [7, 0, 0, 3]]
    assert mask.tolist() == [[True, True, False, False], [True, True, True, True]]


# the training run itself (seeds, best dev, gather): tests/test_lra_train.py
