"""``python -m inference`` is the ``detectionjob`` command."""

import sys

from inference.cli import main

sys.exit(main())
