"""`python -m tokenvend`: the same as the `tokenvend` command."""

import sys

from tokenvend.cli import main

sys.exit(main())
