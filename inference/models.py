"""Build a torchvision detection model by name with DEFAULT, random (``none``) or user weights."""

from __future__ import annotations

import io
from typing import Any

import torch
import torchvision
from torchvision.models import get_model, get_model_weights, list_models

from inference.model_config import DEFAULT_MODEL, ModelConfig, ModelError, check_model_name

__all__ = ["DEFAULT_MODEL", "ModelConfig", "ModelError", "build_model", "check_model_name",
           "detection_models"]

# Keys holding the classifier of two-stage models; used to infer num_classes of a saved state_dict.
_CLASS_KEYS = ("roi_heads.box_predictor.cls_score.weight",)


def detection_models() -> list[str]:
    """The installed torchvision's detection builders (``spec.DETECTION_MODELS`` must equal these)."""
    return sorted(list_models(module=torchvision.models.detection))


def _weights_enum(spec: ModelConfig) -> Any | None:
    """The torchvision weights member for ``DEFAULT``/a member name, else None (a path or none)."""
    enum = get_model_weights(spec.name)
    value = spec.weights.split(".")[-1]
    if value.upper() == "DEFAULT":
        return enum.DEFAULT
    if value in enum.__members__:
        return enum[value]
    return None


def categories_for(name: str, num_classes: int | None = None) -> list[str]:
    """Class names from torchvision's weights metadata (COCO for the detection models)."""
    names = list(get_model_weights(name).DEFAULT.meta["categories"])
    if num_classes is not None and num_classes != len(names):
        return [f"class_{i}" for i in range(num_classes)]
    return names


def load_state_dict(location: str) -> dict[str, torch.Tensor]:
    """A state_dict from a local path, ``s3://``/``gs://`` URI or ``http(s)://`` URL.

    Accepts plain state_dicts and torchvision-reference checkpoints (``{"model": state_dict}``).
    """
    if location.startswith(("http://", "https://")):
        state = torch.hub.load_state_dict_from_url(location, map_location="cpu", weights_only=True)
    else:
        from inference.decode import read_bytes
        from inference.uris import resolve

        loc = resolve(location, option="--weights")
        try:
            data = read_bytes(loc.fs, loc.path)
        except (FileNotFoundError, OSError) as exc:
            raise ModelError(f"--weights: cannot read {location!r}: {exc}") from exc
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ModelError(f"--weights: {location!r} does not hold a state_dict")
    return state


def _set_score_threshold(model: torch.nn.Module, threshold: float) -> None:
    """Make the model itself keep boxes down to ``threshold`` (its built-in default is 0.05)."""
    for owner in (getattr(model, "roi_heads", None), model):
        if owner is not None and hasattr(owner, "score_thresh"):
            owner.score_thresh = threshold
            return


def build_model(spec: ModelConfig) -> tuple[torch.nn.Module, list[str]]:
    """The model in eval mode on the CPU, and its category names (index = label id)."""
    check_model_name(spec.name)
    enum_member = None if spec.weights.lower() == "none" else _weights_enum(spec)
    if enum_member is not None:
        model = get_model(spec.name, weights=enum_member)
        categories = list(enum_member.meta["categories"])
    elif spec.weights.lower() == "none":
        torch.manual_seed(spec.seed)
        model = get_model(spec.name, weights=None, weights_backbone=None)
        categories = categories_for(spec.name)
    else:
        state = load_state_dict(spec.weights)
        num_classes = next((int(state[k].shape[0]) for k in _CLASS_KEYS if k in state), None)
        kwargs = {"num_classes": num_classes} if num_classes else {}
        torch.manual_seed(spec.seed)
        model = get_model(spec.name, weights=None, weights_backbone=None, **kwargs)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelError(f"--weights: {spec.weights!r} does not fit {spec.name}: {exc}") from exc
        categories = categories_for(spec.name, num_classes)
    _set_score_threshold(model, spec.score_threshold)
    return model.eval(), categories
