"""Published numbers we reproduce, keyed by attention type (facts from ../shared/reference/published-results.md)."""

from __future__ import annotations

# Nystromformer paper (AAAI 2021), Table 2: GLUE dev; F1 for MRPC and QQP, accuracy elsewhere.
# BERT-base stands for the softmax rows.
GLUE_SOURCE = "Nystromformer paper, Table 2 (BERT-base for softmax)"
GLUE: dict[str, dict[str, float]] = {
    "softmax": {"SST-2": 90.0, "MRPC": 88.4, "QNLI": 90.3, "QQP": 87.3, "MNLI": 82.4, "MNLI-mm": 82.4},
    "nystrom": {"SST-2": 91.4, "MRPC": 88.1, "QNLI": 88.7, "QQP": 86.3, "MNLI": 80.9, "MNLI-mm": 82.2},
}

# Nystromformer paper, Table 3: LRA test accuracy of the PyTorch re-implementation.
LRA_SOURCE = "Nystromformer paper, Table 3 (PyTorch LRA)"
LRA: dict[str, dict[str, float]] = {
    "softmax": {"listops": 37.10, "text": 65.02, "retrieval": 79.35, "image": 38.20, "pathfinder": 74.16},
    "reformer": {"listops": 19.05, "text": 64.88, "retrieval": 78.64, "image": 43.29, "pathfinder": 69.36},
    "linformer": {"listops": 37.25, "text": 55.91, "retrieval": 79.37, "image": 37.84, "pathfinder": 67.60},
    "performer": {"listops": 18.80, "text": 63.81, "retrieval": 78.62, "image": 37.07, "pathfinder": 69.87},
    "nystrom": {"listops": 37.15, "text": 65.52, "retrieval": 79.56, "image": 41.58, "pathfinder": 70.94},
}
