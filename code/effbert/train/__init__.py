"""Training: one loop (loop.py) and thin per-stage drivers (pretrain, glue, lra)."""
