"""Model zoo: specs, registry and loading. Knows nothing about visualization or attribution."""

from .registry import get_spec, list_models, load_model, register
from .spec import ModelSpec, VisionModel, label_set

__all__ = ["ModelSpec", "VisionModel", "get_spec", "label_set", "list_models", "load_model", "register"]
