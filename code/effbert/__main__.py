"""`python -m effbert` (and `torchrun -m effbert pretrain ...`) runs the CLI."""

import sys

from effbert.cli import main

sys.exit(main())
