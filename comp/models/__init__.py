"""Models: our ResNet / VGG-BN family, ``timm:<name>`` models, pretrained loading and the timm cross-check."""

from comp.models.factory import check_name, create_model, list_models
from comp.models.pretrained import load_pretrained, read_state_dict

__all__ = ["check_name", "create_model", "list_models", "load_pretrained", "read_state_dict"]
