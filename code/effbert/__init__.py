"""effbert: a reproduction pipeline for efficient-attention Transformers."""

__version__ = "0.1.0"
