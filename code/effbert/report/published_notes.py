"""Published facts that no accuracy table compares yet: costs, claims and the settings papers ran with.

Facts from ../shared/reference/published-results.md, each with its source. effbert.report.published holds the
accuracies the result tables put beside ours.
"""

from __future__ import annotations

# ---- Nystromformer paper, Table 1: one self-attention instance on a GTX 1080Ti (naive O(n^2) softmax) ----
ATTENTION_COST_SOURCE = "Nystromformer paper (AAAI 2021), Table 1 (one instance, GTX 1080Ti)"
ATTENTION_COST_SETUP = "one self-attention module, forward and backward, GTX 1080Ti; memory in MB, time in ms"
# mechanism -> sequence length -> (memory MB, time ms)
ATTENTION_COST: dict[str, dict[int, tuple[float, float]]] = {
    "softmax": {512: (54, 0.8), 1024: (186, 2.4), 2048: (685, 10.0), 4096: (2620, 32.9), 8192: (10233, 155.4)},
    "linformer-256": {512: (41, 0.7), 1024: (81, 1.3), 2048: (165, 2.7), 4096: (366, 5.3), 8192: (635, 11.3)},
    "longformer-257": {512: (32, 2.4), 1024: (65, 4.6), 2048: (130, 9.2), 4096: (263, 18.5), 8192: (455, 36.2)},
    "nystrom-64": {512: (35, 0.7), 1024: (63, 1.3), 2048: (118, 2.7), 4096: (229, 5.9), 8192: (450, 12.3)},
    "nystrom-32": {512: (26, 0.6), 1024: (49, 1.2), 2048: (96, 2.6), 4096: (193, 5.6), 8192: (383, 11.5)},
}

# ---- FNet (Lee-Thorp et al., NAACL 2022), abstract ----
FNET_SOURCE = "FNet paper (Lee-Thorp et al., NAACL 2022), abstract"
FNET_GLUE_SHARE_OF_BERT = (92.0, 97.0)  # % of BERT's GLUE accuracy, range over model sizes
FNET_TRAINING_FASTER = {"GPU": 80.0, "TPU": 70.0}  # % faster training than BERT at length 512

# ---- YOSO (mlpen/YOSO configs): tau = hash bits (our attention.hash_bits), m = hashes (attention.num_hashes) ----
YOSO_SOURCE = "mlpen/YOSO configs"
# experiment -> (hash_bits, num_hashes); LRA: m 32 in v1, 16 in v2; None: log2(n), as the profiling set it
YOSO_SETTINGS: dict[str, tuple[int | None, tuple[int, ...]]] = {
    "LRA listops (n=2000)": (11, (32, 16)),
    "LRA text, retrieval (n=4000)": (12, (32, 16)),
    "LRA image, pathfinder32 (n=1024)": (10, (32, 16)),
    "BERT-small pretraining (n=512)": (9, (32,)),
    "efficiency profiling (n=128..4096)": (None, (16, 32)),
}
YOSO_BERT_SMALL = {"num_layers": 4, "hidden_size": 512, "num_heads": 8, "ffn_size": 2048, "batch_size": 256,
                   "lr": 1e-4, "max_seq_len": 512}
YOSO_PROFILING = {"num_layers": 6, "hidden_size": 256, "num_heads": 4, "conv_kernel": 33}  # conv optional

# ---- Other GLUE dev anchors (average over GLUE tasks) ----
GLUE_AVERAGE_ANCHORS = {
    "MosaicBERT-Base (1.13 h on 8xA100)": 79.6,
    "HF BERT-Base (11.5 h on 8xA100)": 83.2,
    "Cramming (one GPU, 24 h)": 78.6,
}
GLUE_AVERAGE_SOURCE = "MosaicBERT and Cramming reports, as collected in published-results.md"
