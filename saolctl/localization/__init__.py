"""Localization: score maps of every method and the WSOL evaluators of the reference protocol."""

from saolctl.localization.contours import boxes_at_threshold, largest_box
from saolctl.localization.evaluators import BoxEvaluator, BoxResult, MaskEvaluator, MaskResult
from saolctl.localization.maps import default_map_kind, map_kind_names, normalize_maps, raw_maps, score_maps

__all__ = [
    "BoxEvaluator",
    "BoxResult",
    "MaskEvaluator",
    "MaskResult",
    "boxes_at_threshold",
    "default_map_kind",
    "largest_box",
    "map_kind_names",
    "normalize_maps",
    "raw_maps",
    "score_maps",
]
