"""The encoder and its task heads."""
