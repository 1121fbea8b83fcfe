"""Models: backbones (a registry), the CAM / ABN / SAOL heads, and their objectives."""

from saolctl.models.backbones import Backbone, PretrainedUnavailable, backbone_info, list_backbones
from saolctl.models.factory import (
    METHODS,
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
    "METHODS",
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
