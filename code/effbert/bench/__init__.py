"""Efficiency benchmarks: time and peak memory of the attention mechanisms against sequence length."""
