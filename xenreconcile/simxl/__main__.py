"""`python -m xenreconcile.simxl`: the simulated xl program."""

import sys

from xenreconcile.simxl.cli import main

sys.exit(main())
