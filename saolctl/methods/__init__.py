"""WSOL methods as plugins: one module per method, a registry, and entry-point discovery.

A method is a :class:`Method` subclass (name, paper, options, map kinds, ``build`` and ``objective``);
``register_method`` adds one from code, the entry-point group ``saolctl.methods`` adds one from a package.
See docs/methods.md, "Adding a method".
"""

from saolctl.methods.options import BACKBONE_OPTIONS, CUTMIX_OPTIONS, Option
from saolctl.methods.registry import (
    ENTRY_POINT_GROUP,
    all_methods,
    all_options,
    get_method,
    list_methods,
    register_map_kind,
    register_method,
    shared_map_kinds,
    unregister_map_kind,
    unregister_method,
)
from saolctl.methods.base import MapInputs, MapKind, Method, Objective, cutmix_options  # noqa: E402  (after the registry)

__all__ = [
    "BACKBONE_OPTIONS",
    "CUTMIX_OPTIONS",
    "ENTRY_POINT_GROUP",
    "MapInputs",
    "MapKind",
    "Method",
    "Objective",
    "Option",
    "all_methods",
    "all_options",
    "cutmix_options",
    "get_method",
    "list_methods",
    "register_map_kind",
    "register_method",
    "shared_map_kinds",
    "unregister_map_kind",
    "unregister_method",
]
