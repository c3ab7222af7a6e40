"""GLUE tasks: one table of per-task facts, a TSV reader for the official files, and the metrics.

The official files (as written by GLUE's download script) are tab-separated without quoting: they hold
stray `"` characters that a CSV reader would treat as quotes, so every line is simply split on tabs.
Headered files are read by column name; CoLA's train/dev files have no header and get names from the
table. MRPC's train/dev headers start with a UTF-8 byte order mark, which decoding with utf-8-sig drops.
A test file's index column names each example's row of the leaderboard's submission file: a value that is not
a whole number, or one that repeats, is an InputError naming the file and line.

IMDB (movie-review sentiment, beside GLUE in the Nystromformer paper's Table 2) is read from the aclImdb folder
as unpacked, the files LRA Text reads (effbert.data.lra.text.review_files: <aclImdb>/{train,test}/{neg,pos}/
<id>_<rating>.txt, neg = 0, pos = 1; the unlabelled train/unsup is not read). A review is its file's UTF-8 text,
surrounding whitespace stripped, markup such as <br /> kept; the model's tokenizer then cuts it to the fine-tuning
length (its head is kept). IMDB has no dev set, so one is held out of train: every tenth review of each label in
id order (for the release: the ids ending in 0, 1,250 per label), the same reviews for every run and seed, never
trained on. It chooses among the grid's runs; the score reported is IMDB's test set (25,000 labelled reviews), the
split the paper reports, scored once after training (`report_split`).

Metrics are on the 0-100 scale, computed with numpy only:
    accuracy, f1 (binary, positive class 1), mcc (Matthews; 0 when undefined, as scikit-learn),
    pearson, spearman (average ranks for ties) and pearson_spearman_mean (STS-B's single score).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from effbert.constants import GLUE_SCORE_TASKS, GLUE_TASKS
from effbert.data.lra.text import LABELS as REVIEW_LABELS
from effbert.data.lra.text import RELEASE_DIR as ACLIMDB
from effbert.data.lra.text import review_files
from effbert.errors import InputError
from effbert.files import text_lines

NLI3 = ("entailment", "neutral", "contradiction")
NLI2 = ("entailment", "not_entailment")
BINARY = ("0", "1")


@dataclass(frozen=True)
class GlueTask:
    folder: str                    # sub-folder of the GLUE directory
    text_a: str                    # column names (headered files; test files use the same names)
    text_b: str | None
    label: str | None              # None: the task has no labelled split here (AX)
    labels: tuple[str, ...] | None  # label strings in index order; None: regression (a float score)
    metric: str                    # the main metric (a key of compute_metrics' result)
    dev_splits: tuple[str, ...] = ("dev",)
    test_splits: tuple[str, ...] = ("test",)
    headerless: tuple[str, ...] | None = None  # column names of train/dev files that have no header row
    files: tuple[tuple[str, str], ...] = ()     # split -> file name where it is not <split>.tsv
    epochs: int = 4                             # fine-tuning epochs unless a model's config says otherwise
    glue_score: tuple[str, ...] = ()            # metrics whose mean is the task's part of the GLUE score
    report_split: str | None = None             # labelled split scored after training and reported; None: dev's
    reader: str = "tsv"                         # "tsv": the official GLUE files; "aclImdb": review folders

    @property
    def score_metrics(self) -> tuple[str, ...]:
        return self.glue_score or (self.metric,)

    @property
    def num_labels(self) -> int:
        """Outputs of the classifier: 1 means regression."""
        return 1 if self.labels is None else len(self.labels)

    @property
    def splits(self) -> tuple[str, ...]:
        if not self.label:
            return self.test_splits
        return ("train", *self.dev_splits, *self.test_splits, *((self.report_split,) if self.report_split else ()))

    def file_name(self, split: str) -> str:
        return dict(self.files).get(split, f"{split}.tsv")


# Column names as in the official files (the train/dev/test headers); label orders follow the
# HuggingFace `datasets` GLUE builder, so label indices agree with other tools.
# Epochs: the Nystromformer paper fine-tuned for 4-5 epochs (its MRPC command: 5); the small tasks get 5.
# GLUE score parts: a task with several metrics counts with their unweighted mean (MNLI: matched and
# mismatched accuracy), and the GLUE score is the mean over the nine tasks (Wang et al., 2018).
TASKS: dict[str, GlueTask] = {
    "CoLA": GlueTask("CoLA", "sentence", None, "label", BINARY, "mcc",
                     headerless=("source", "label", "original_label", "sentence"), epochs=5),
    "SST-2": GlueTask("SST-2", "sentence", None, "label", BINARY, "accuracy"),
    "MRPC": GlueTask("MRPC", "#1 String", "#2 String", "Quality", BINARY, "f1", epochs=5,
                     glue_score=("f1", "accuracy")),
    "STS-B": GlueTask("STS-B", "sentence1", "sentence2", "score", None, "pearson_spearman_mean", epochs=5),
    "QQP": GlueTask("QQP", "question1", "question2", "is_duplicate", BINARY, "f1", glue_score=("f1", "accuracy")),
    "MNLI": GlueTask("MNLI", "sentence1", "sentence2", "gold_label", NLI3, "accuracy",
                     dev_splits=("dev_matched", "dev_mismatched"),
                     test_splits=("test_matched", "test_mismatched"),
                     glue_score=("accuracy_matched", "accuracy_mismatched")),
    "QNLI": GlueTask("QNLI", "question", "sentence", "label", NLI2, "accuracy"),
    "RTE": GlueTask("RTE", "sentence1", "sentence2", "label", NLI2, "accuracy", epochs=5),
    "WNLI": GlueTask("WNLI", "sentence1", "sentence2", "label", BINARY, "accuracy", epochs=5),
    # the diagnostic set: MNLI-style pairs without labels, scored on the leaderboard by MCC
    "AX": GlueTask("diagnostic", "sentence1", "sentence2", None, NLI3, "mcc",
                   files=(("test", "diagnostic.tsv"),)),
    # not GLUE: aclImdb's folders (module docstring); dev is held out of train, test is labelled and reported
    "IMDB": GlueTask(ACLIMDB, "review", None, "label", REVIEW_LABELS, "accuracy", test_splits=(),
                     files=(("train", "train"), ("dev", "train"), ("test", "test")), report_split="test",
                     reader="aclImdb"),
}
assert tuple(TASKS) == GLUE_TASKS, "data.glue.TASKS must list constants.GLUE_TASKS, in order"


def get_task(task: str) -> GlueTask:
    try:
        return TASKS[task]
    except KeyError:
        known = sorted(TASKS)
        raise InputError(f"unknown GLUE task {task!r}; expected one of {known} (case-sensitive)") from None


@dataclass
class GlueSplit:
    task: str
    split: str
    texts_a: list[str]
    texts_b: list[str] | None
    labels: list[int] | list[float] | None  # label index, or the float score for STS-B; None for test
    ids: list[str]                           # the file's index/id column, else the row number

    def __len__(self) -> int:
        return len(self.texts_a)


Rows = list[tuple[int, list[str]]]  # (1-based line number, fields)


def _read_rows(path: Path, names: tuple[str, ...] | None) -> tuple[tuple[str, ...], Rows]:
    """Column names and rows of a tab-separated file, no quote processing; `names`: a headerless file's."""
    numbered = [(number, line.split("\t")) for number, line in text_lines(path)]
    if names is None:
        if not numbered:
            raise InputError(f"{path}: empty file; expected a header line")
        names = tuple(numbered.pop(0)[1])
    for lineno, fields in numbered:
        if len(fields) != len(names):
            raise InputError(
                f"{path}: line {lineno}: {len(fields)} tab-separated columns; expected {len(names)}"
            )
    return names, numbered


def _parse_label(spec: GlueTask, raw: str, path: Path, lineno: int) -> int | float:
    if spec.labels is None:
        try:
            score = float(raw)
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise InputError(f"{path}: line {lineno}: score {raw!r} is not a number")
        return score
    if raw not in spec.labels:
        raise InputError(f"{path}: line {lineno}: unknown label {raw!r}; expected one of {list(spec.labels)}")
    return spec.labels.index(raw)


def load_split(glue_dir: Path, task: str, split: str) -> GlueSplit:
    """Read one split of a GLUE task from the official layout <glue_dir>/<TASK>/<split>.tsv."""
    spec = get_task(task)
    if split not in spec.splits:
        raise InputError(f"GLUE task {task} has no split {split!r}; expected one of {list(spec.splits)}")
    folder = Path(glue_dir) / spec.folder
    path = folder / spec.file_name(split)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such GLUE task folder (looking for {path.name} of {task})")
    if spec.reader == "aclImdb":
        return _read_reviews(path, task, split)
    if not path.is_file():
        raise InputError(f"{path}: missing {path.name} in the {task} folder {folder}")
    labelled = split not in spec.test_splits
    names, rows = _read_rows(path, spec.headerless if labelled else None)

    wanted = [spec.text_a] + ([spec.text_b] if spec.text_b else []) + ([spec.label] if labelled else [])
    missing = [c for c in wanted if c not in names]
    if missing:
        raise InputError(f"{path}: line 1: header lacks column(s) {missing}; found {list(names)}")
    col = {name: i for i, name in enumerate(names)}
    id_col = next((col[c] for c in ("index", "id") if c in col), None)

    label_col = col[spec.label] if labelled else None
    labels = [_parse_label(spec, f[label_col], path, lineno) for lineno, f in rows] if labelled else None
    if not labelled and id_col is not None:
        _check_test_indices(path, names[id_col], [(lineno, f[id_col]) for lineno, f in rows])
    return GlueSplit(
        task=task,
        split=split,
        texts_a=[f[col[spec.text_a]] for _, f in rows],
        texts_b=[f[col[spec.text_b]] for _, f in rows] if spec.text_b else None,
        labels=labels,
        ids=[f[id_col] if id_col is not None else str(n) for n, (_, f) in enumerate(rows)],
    )


def _check_test_indices(path: Path, column: str, indices: list[tuple[int, str]]) -> None:
    """A test file's index column names each example in the leaderboard's submission file (data/glue_submission.py):
    each must be a whole number, and no two the same."""
    first_line: dict[int, int] = {}
    for lineno, raw in indices:
        if not (raw.isascii() and raw.isdigit()):
            raise InputError(f"{path}: line {lineno}: {column} {raw!r} is not a whole number; expected the test "
                             "example's index (0, 1, 2, ...)")
        index = int(raw)
        if index in first_line:
            raise InputError(f"{path}: line {lineno}: {column} {raw} repeats line {first_line[index]}'s; expected "
                             "each test example's index once")
        first_line[index] = lineno


DEV_EVERY = 10  # IMDB's dev set: every tenth review of each label (module docstring)


def _read_reviews(folder: Path, task: str, split: str) -> GlueSplit:
    """One split of aclImdb: `folder` is <aclImdb>/train (train: 9 in 10 reviews, dev: the rest) or <aclImdb>/test."""
    seen: Counter[int] = Counter()
    kept = []
    for path, label in review_files(folder):  # neg, then pos, each in id order
        held_out = seen[label] % DEV_EVERY == 0
        seen[label] += 1
        if split == "test" or held_out == (split == "dev"):
            kept.append((path, label))
    texts = []
    for path, _ in kept:
        try:
            texts.append(path.read_bytes().strip().decode("utf-8"))
        except UnicodeDecodeError as e:
            raise InputError(f"{path}: byte {e.start}: not UTF-8 text; expected an aclImdb review") from None
    return GlueSplit(task=task, split=split, texts_a=texts, texts_b=None, labels=[label for _, label in kept],
                     ids=[f"{path.parent.name}/{path.stem}" for path, _ in kept])


# ---- metrics (numpy only; each returns a fraction, compute_metrics scales to 0-100) ----

def accuracy(predictions, labels) -> float:
    p, y = np.asarray(predictions), np.asarray(labels)
    return float(np.mean(p == y)) if len(y) else 0.0


def f1(predictions, labels) -> float:
    """Binary F1 of the positive class 1; 0 when there are no true positives."""
    p, y = np.asarray(predictions) == 1, np.asarray(labels) == 1
    tp = np.sum(p & y)
    return float(2 * tp / (np.sum(p) + np.sum(y))) if tp else 0.0


def matthews_corrcoef(predictions, labels) -> float:
    """Multi-class Matthews correlation (Gorodkin's R_K); 0 when the denominator is 0."""
    p, y = np.asarray(predictions), np.asarray(labels)
    classes = np.union1d(p, y)
    conf = (y[:, None] == classes[None, :]).T.astype(np.float64) @ (p[:, None] == classes[None, :])
    t, q = conf.sum(axis=1), conf.sum(axis=0)  # true and predicted counts per class
    n, c = conf.sum(), np.trace(conf)
    denominator = math.sqrt((n * n - q @ q) * (n * n - t @ t))
    return float((c * n - t @ q) / denominator) if denominator else 0.0


def pearson(x, y) -> float:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    dx, dy = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(dx @ dx) * float(dy @ dy))
    return float(dx @ dy / denominator) if denominator else 0.0


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the mean of the ranks they span."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    start = 0
    for end in range(1, len(x) + 1):
        if end == len(x) or sorted_x[end] != sorted_x[start]:
            ranks[order[start:end]] = (start + end + 1) / 2  # mean of ranks start+1 .. end
            start = end
    return ranks


def spearman(x, y) -> float:
    """Pearson correlation of the ranks."""
    return pearson(_average_ranks(np.asarray(x, dtype=float)), _average_ranks(np.asarray(y, dtype=float)))


def compute_metrics(task: str, predictions, labels) -> dict[str, float]:
    """All metrics of a task (0-100 scale); the task's main one is under GLUE TASKS[task].metric.

    `predictions` are label indices (classification) or scores (STS-B)."""
    spec = get_task(task)
    if spec.labels is None:
        r, rho = 100 * pearson(predictions, labels), 100 * spearman(predictions, labels)
        return {"pearson": r, "spearman": rho, "pearson_spearman_mean": (r + rho) / 2}
    out = {"accuracy": 100 * accuracy(predictions, labels)}
    if spec.metric == "f1":
        out["f1"] = 100 * f1(predictions, labels)
    if spec.metric == "mcc":
        out["mcc"] = 100 * matthews_corrcoef(predictions, labels)
    return out


def task_score(task: str, metrics: dict[str, float]) -> float:
    """A task's part of the GLUE score: the unweighted mean of its official metrics (0-100)."""
    return float(np.mean([metrics[name] for name in get_task(task).score_metrics]))


def glue_score(task_scores: dict[str, float]) -> float | None:
    """The GLUE score: the mean of the nine tasks' scores; None unless all nine are there (AX is not scored)."""
    if not set(GLUE_SCORE_TASKS) <= set(task_scores):
        return None
    return float(np.mean([task_scores[task] for task in GLUE_SCORE_TASKS]))
