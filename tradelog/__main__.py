"""``python -m tradelog`` runs the command line."""

import sys

from tradelog._cli import main

sys.exit(main())
