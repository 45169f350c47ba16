"""What to build, as plain data: cheap to import (no torch), so the driver starts fast."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MODEL = "fasterrcnn_resnet50_fpn_v2"


class ModelError(ValueError):
    """A model name or weights value that cannot be used; the message names the option."""


@dataclass(frozen=True)
class ModelSpec:
    """What to build: ``weights`` is ``DEFAULT``, an enum member name, ``none``, or a path/URI."""

    name: str = DEFAULT_MODEL
    weights: str = "DEFAULT"
    score_threshold: float = 0.5
    seed: int = 0
