"""The operator's start-up pieces that do not need a cluster."""

from __future__ import annotations

import getpass
import os

from detectionjob_operator import runner


def test_identity_without_a_passwd_entry(monkeypatch):
    """Images run as a bare uid (65532): kopf's getpass-based identity would crash at start."""
    monkeypatch.delenv("POD_ID", raising=False)
    for var in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.delenv(var, raising=False)

    def no_entry() -> str:
        raise KeyError(f"getpwuid(): uid not found: {os.getuid()}")

    monkeypatch.setattr(getpass, "getuser", no_entry)
    identity = runner.own_identity()
    assert identity and identity.startswith(f"uid-{os.getuid()}@")
    monkeypatch.setenv("POD_ID", "dj-operator-abc")  # kopf's documented way wins
    assert runner.own_identity() is None


def test_identity_left_to_kopf_when_the_user_is_known(monkeypatch):
    monkeypatch.delenv("POD_ID", raising=False)
    monkeypatch.setattr(getpass, "getuser", lambda: "someone")
    assert runner.own_identity() is None
