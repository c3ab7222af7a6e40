"""Names and sentinel values that several layers share, declared once below all of them."""

from __future__ import annotations

# the label of a position without a prediction (masked LM), as torch's cross_entropy ignores by default
IGNORE = -100

# the tasks of the GLUE fine-tuning path, as the benchmark names them (AX: the diagnostic set, test only), and
# IMDB (aclImdb movie reviews, beside GLUE in the Nystromformer paper's Table 2; never part of the GLUE score)
GLUE_TASKS = ("CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE", "WNLI", "AX", "IMDB")
# the nine whose mean is the GLUE score (Wang et al., 2018), in the leaderboard's order
GLUE_SCORE_TASKS = ("CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE", "WNLI")

# the Long Range Arena tasks (Path-X: pathfinder at 128 x 128)
LRA_TASKS = ("listops", "text", "retrieval", "image", "pathfinder", "pathx")
