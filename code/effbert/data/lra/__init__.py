"""Long Range Arena tasks: one module per task (data generator and loader) and one protocol table.

listops.py   the ListOps generator (the LRA rules) and the loader of the release's TSV files
protocol.py  the published per-task protocol (sizes, schedule, model), the one place it is written
"""
