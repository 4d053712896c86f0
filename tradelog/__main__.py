"""``python -m tradelog`` runs the command line."""

import sys

from tradelog.cli import main

sys.exit(main())
