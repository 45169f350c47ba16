"""``python -m detectionjob_operator render|operator`` (same as ``detectionjob render|operator``)."""

import sys

from detectionjob_operator.cli import main

sys.exit(main())
