"""`python -m xenreconcile`: the same as the `xenreconcile` command."""

import sys

from xenreconcile.cli import main

sys.exit(main())
