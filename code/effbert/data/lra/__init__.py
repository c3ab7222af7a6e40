"""Long Range Arena tasks: one module per task (loader, and a generator where LRA's data can be drawn).

split.py                 LraSplit, the one shape every loader returns (token-id arrays per input, labels)
listops.py               the ListOps generator (the LRA rules) and the loader of the release's TSV files
text.py                  IMDB from the aclImdb folders, one token per byte
retrieval.py             AAN citation pairs (tsv_data/new_aan_pairs.*.tsv), two byte-level documents
image.py                 CIFAR-10 (python or binary batches) in LRA's greyscale, 1024 pixels
pathfinder.py            Pathfinder / Path-X from the release's metadata and PNGs
pathfinder_generate.py   Pathfinder images drawn in the release's layout (no download)
protocol.py              the published per-task protocol (sizes, schedule, model), the one place it is written
"""
