"""`python -m TSCDenoiseLib` runs the `tscdenoise` command line."""

import sys

from .cli import main

sys.exit(main())
