"""Models: backbones (a registry), the shared head blocks and losses, and create_model over the method registry."""

from saolctl.models.backbones import Backbone, PretrainedUnavailable, backbone_info, list_backbones
from saolctl.models.factory import (
    ModelConfig,
    build_model,
    create_model,
    create_objective,
    list_options,
    make_config,
    option_defaults,
)
from saolctl.models.losses import LossTerms
from saolctl.models.outputs import ModelOutput

__all__ = [
    "Backbone",
    "LossTerms",
    "ModelConfig",
    "ModelOutput",
    "PretrainedUnavailable",
    "backbone_info",
    "build_model",
    "create_model",
    "create_objective",
    "list_backbones",
    "list_options",
    "make_config",
    "option_defaults",
]
