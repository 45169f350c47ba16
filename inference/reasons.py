"""Why a run stopped before any work, as words in its one-line error and as a Kubernetes reason.

The job builds its messages from these phrases (:mod:`inference.preflight`); the operator finds
them in a failed job's verdict line and sets the DetectionJob's reason. No dependencies: the
operator imports this module without the job's.
"""

from __future__ import annotations

# reason -> the phrase its message carries
PHRASES: dict[str, str] = {
    "NoImages": ": no images under ",
    "OutputNotWritable": ": not writable: ",
    "InputNotReadable": ": cannot be listed: ",
    "StoreUnreachable": ": did not answer for ",
    "EvaluationFailed": ": cannot be evaluated: ",
    "CredentialsNotFound": ": no credentials found",
}


# The reason of a run that found no image and was allowed to (--allow-empty): a success.
NOTHING_TO_DO = "NothingToDo"


def reason_of(message: str) -> str | None:
    """The reason whose phrase ``message`` carries, or None."""
    return next((reason for reason, phrase in PHRASES.items() if phrase in message), None)
