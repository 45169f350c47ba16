"""``python -m inference`` is the ``detectionjob`` command."""

from inference.cli import entry

entry()
