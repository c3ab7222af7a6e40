"""Test-set predictions in the GLUE leaderboard's submission format (gluebenchmark.com).

The leaderboard takes a zip of one TSV per test set, each named as in SUBMISSION_FILES, with a header
`index\\tprediction` and one row per test example in the test file's order: the example's index, then
its label as a string (CoLA, SST-2, MRPC, QQP, WNLI: 0/1; MNLI and AX: entailment/neutral/contradiction;
QNLI, RTE: entailment/not_entailment) or, for STS-B, a similarity score in [0, 5].

Label strings are listed in the same order as effbert.data.glue's label indices (tests check it), so a
predicted index i is written as labels[i].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from effbert.data.glue import BINARY, NLI2, NLI3
from effbert.errors import InputError
from effbert.files import write_text

HEADER = "index\tprediction"
STSB_RANGE = (0.0, 5.0)  # STS-B's scores are similarities from 0 to 5; a regression head can overshoot


@dataclass(frozen=True)
class SubmissionFile:
    name: str                       # the file name the leaderboard expects
    labels: tuple[str, ...] | None  # label strings by predicted index; None: a float score (STS-B)


# (task, test split) -> the leaderboard's file. AX is GLUE's diagnostic set, predicted by the MNLI model.
SUBMISSION_FILES: dict[tuple[str, str], SubmissionFile] = {
    ("CoLA", "test"): SubmissionFile("CoLA.tsv", BINARY),
    ("SST-2", "test"): SubmissionFile("SST-2.tsv", BINARY),
    ("MRPC", "test"): SubmissionFile("MRPC.tsv", BINARY),
    ("STS-B", "test"): SubmissionFile("STS-B.tsv", None),
    ("QQP", "test"): SubmissionFile("QQP.tsv", BINARY),
    ("MNLI", "test_matched"): SubmissionFile("MNLI-m.tsv", NLI3),
    ("MNLI", "test_mismatched"): SubmissionFile("MNLI-mm.tsv", NLI3),
    ("QNLI", "test"): SubmissionFile("QNLI.tsv", NLI2),
    ("RTE", "test"): SubmissionFile("RTE.tsv", NLI2),
    ("WNLI", "test"): SubmissionFile("WNLI.tsv", BINARY),
    ("AX", "test"): SubmissionFile("AX.tsv", NLI3),
}


def submission_file(task: str, split: str) -> SubmissionFile:
    try:
        return SUBMISSION_FILES[(task, split)]
    except KeyError:
        known = sorted(f"{t}/{s}" for t, s in SUBMISSION_FILES)
        raise InputError(f"no GLUE submission file for {task}/{split}; expected one of {known}") from None


def format_predictions(task: str, split: str, ids: list[str], predictions) -> str:
    """The submission file's text: header, then `index\\tprediction` per example, in the given order."""
    spec = submission_file(task, split)
    predictions = np.asarray(predictions, dtype=np.float64)
    if len(ids) != len(predictions):
        raise ValueError(f"{task}/{split}: {len(ids)} ids but {len(predictions)} predictions")
    if spec.labels is None:
        values = [f"{v:.3f}" for v in np.clip(predictions, *STSB_RANGE)]
    else:
        values = [spec.labels[int(v)] for v in predictions]
    return "".join(f"{line}\n" for line in [HEADER, *(f"{i}\t{v}" for i, v in zip(ids, values, strict=True))])


def write_submission(out_dir: Path, task: str, split: str, ids: list[str], predictions) -> Path:
    """Write <out_dir>/<leaderboard file name> atomically; returns its path."""
    path = Path(out_dir) / submission_file(task, split).name
    write_text(path, format_predictions(task, split, ids, predictions))
    return path
