"""`python -m mmlib ...` is the `mmlib` command (for machines without the script on PATH)."""

import sys

from mmlib.tools.cli import main

sys.exit(main())
