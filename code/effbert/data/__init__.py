"""Data stages: documents, tokenizer, shards, GLUE and LRA inputs."""
