"""What to build, as plain data: cheap to import (no torch), so the driver starts fast."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MODEL = "fasterrcnn_resnet50_fpn_v2"

# torchvision's detection builders (``list_models(module=torchvision.models.detection)`` of the pinned
# torchvision; a test keeps the two equal), so the driver checks ``--model`` without importing torch.
DETECTION_MODELS = (
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_resnet50_fpn_v2",
    "fcos_resnet50_fpn",
    "keypointrcnn_resnet50_fpn",
    "maskrcnn_resnet50_fpn",
    "maskrcnn_resnet50_fpn_v2",
    "retinanet_resnet50_fpn",
    "retinanet_resnet50_fpn_v2",
    "ssd300_vgg16",
    "ssdlite320_mobilenet_v3_large",
)


class ModelError(ValueError):
    """A model name or weights value that cannot be used; the message names the option."""


def unknown_model(name: str) -> str | None:
    """Why ``name`` is not a torchvision detection builder, or None when it is (the job's
    ``--model`` check and the operator's ``spec.model.name`` check both say this)."""
    if name in DETECTION_MODELS:
        return None
    return f"{name!r} is not a torchvision detection model; choose one of " + ", ".join(DETECTION_MODELS)


def check_model_name(name: str) -> None:
    """Raise ``ModelError`` naming ``--model`` unless ``name`` is a torchvision detection builder."""
    problem = unknown_model(name)
    if problem:
        raise ModelError(f"--model: {problem}")


@dataclass(frozen=True)
class ModelConfig:
    """What to build: ``weights`` is ``DEFAULT``, an enum member name, ``none``, or a path/URI."""

    name: str = DEFAULT_MODEL
    weights: str = "DEFAULT"
    score_threshold: float = 0.5
    seed: int = 0
