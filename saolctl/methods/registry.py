"""The method registry: saolctl's own methods, ones registered from code, and entry-point plugins.

``register_method`` adds a method from code; a package adds one without code by declaring an entry point
in the group ``saolctl.methods`` (``name = "package.module:MethodClass"``), loaded the first time it is
asked for. Map kinds available to every method (e.g. post-hoc kinds) register beside them with
``register_map_kind``. The two dicts below are the only module state (timm's registry pattern).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from typing import TYPE_CHECKING, Any

from saolctl.errors import UserError
from saolctl.methods.options import BACKBONE_OPTIONS, CUTMIX_OPTIONS, Option

if TYPE_CHECKING:
    from saolctl.methods.base import MapKind, Method

ENTRY_POINT_GROUP = "saolctl.methods"
BUILTIN_MODULES = tuple(f"saolctl.methods.{m}"  # each defines METHOD
                        for m in ("cam", "cutmix", "has", "acol", "spg", "adl", "abn", "saol"))
NAME = re.compile(r"^[a-z][a-z0-9_]*$")

_METHODS: dict[str, "Method"] = {}
_SHARED_MAP_KINDS: dict[str, "MapKind"] = {}


def register_method(method: "Method | type[Method]", *, replace: bool = False) -> "Method":
    """Add a method (an instance or a Method subclass) to the registry and return the instance."""
    from saolctl.methods.base import Method

    if isinstance(method, type) and issubclass(method, Method):
        method = method()
    if not isinstance(method, Method):
        raise UserError(f"register_method expects a saolctl.methods.Method, got {type(method).__name__}")
    _check_declarations(method)
    if method.name in _METHODS and _METHODS[method.name] is not method and not replace:
        raise UserError(f"a method named {method.name!r} is already registered (pass replace=True to replace it)")
    _METHODS[method.name] = method
    return method


def unregister_method(name: str) -> None:
    """Remove a method registered from code (saolctl's own methods come back on the next look-up)."""
    _METHODS.pop(name, None)


def get_method(name: str) -> "Method":
    """Return the method called ``name``, loading its plugin on first use; unknown names list the valid ones."""
    _load_builtins()
    if name in _METHODS:
        return _METHODS[name]
    plugin = _entry_points().get(name)
    if plugin is None:
        raise UserError(f"unknown method {name!r}; valid: {', '.join(list_methods())}")
    return register_method(_load_plugin(plugin))


def list_methods() -> list[str]:
    """Return every method's name: saolctl's own first, then registered ones, then plugins not yet loaded."""
    _load_builtins()
    builtin = [m.name for m in builtin_methods()]
    names = builtin + [n for n in _METHODS if n not in builtin]
    return names + [n for n in _entry_points() if n not in names]


def builtin_methods() -> list["Method"]:
    """Return saolctl's own methods (what its docs describe), in order."""
    return [importlib.import_module(m).METHOD for m in BUILTIN_MODULES]


def all_methods() -> list["Method"]:
    """Return every method, loading every plugin."""
    return [get_method(name) for name in list_methods()]


# ------------------------------------------------------------------------------------------------
# options: one flat namespace over every method


def all_options() -> list[Option]:
    """Return every option as declared: the methods' own (in method order), then CutMix's, then the backbone's.

    A shared option carries its declared default here; a method's own default for it (``option_defaults``)
    is in that method's ``all_options()``.
    """
    seen: dict[str, Option] = {}
    methods = all_methods()
    cutmix = CUTMIX_OPTIONS if any(m.uses_cutmix for m in methods) else ()
    for group in [m.options for m in methods] + [cutmix, BACKBONE_OPTIONS]:
        for opt in group:
            seen.setdefault(opt.name, opt)
    return list(seen.values())


def find_option(name: str) -> Option:
    """Return the option called ``name``; unknown names list the valid ones."""
    for opt in all_options():
        if opt.name == name:
            return opt
    raise UserError(f"unknown model option {name!r}; valid: {', '.join(o.name for o in all_options())}")


# ------------------------------------------------------------------------------------------------
# map kinds available to every method


def register_map_kind(kind: "MapKind", *, replace: bool = False) -> None:
    """Add a map kind that every method offers beside its own (e.g. a post-hoc kind computed with gradients)."""
    if kind.name in _SHARED_MAP_KINDS and not replace:
        raise UserError(f"a shared map kind named {kind.name!r} is already registered")
    _SHARED_MAP_KINDS[kind.name] = kind


def unregister_map_kind(name: str) -> None:
    """Remove a shared map kind."""
    _SHARED_MAP_KINDS.pop(name, None)


def shared_map_kinds() -> list["MapKind"]:
    """Return the map kinds available to every method."""
    _load_builtins()
    return list(_SHARED_MAP_KINDS.values())


# ------------------------------------------------------------------------------------------------
# loading


def _load_builtins() -> None:
    """Make sure saolctl's own methods are registered (their modules define METHOD)."""
    for module in BUILTIN_MODULES:
        method = importlib.import_module(module).METHOD
        _METHODS.setdefault(method.name, method)
    from saolctl.localization.posthoc import POSTHOC_MAP_KINDS  # the post-hoc kinds every method offers

    for kind in POSTHOC_MAP_KINDS:
        _SHARED_MAP_KINDS.setdefault(kind.name, kind)


def _entry_points() -> dict[str, Any]:
    """Return the installed plugins of the group, by name (nothing is imported)."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _load_plugin(entry_point: Any) -> "Method":
    """Import one plugin's method; any failure is one line naming the plugin."""
    from saolctl.methods.base import Method

    where = f"method plugin {entry_point.name!r} ({entry_point.value})"
    try:
        loaded = entry_point.load()
        method = loaded() if isinstance(loaded, type) and issubclass(loaded, Method) else loaded
    except Exception as exc:  # a plugin's import can fail in any way; the user needs its name
        text = " ".join(str(exc).split())
        raise UserError(f"{where} failed to load: {type(exc).__name__}: {text}") from None
    if not isinstance(method, Method):
        raise UserError(f"{where} is not a saolctl Method (got {type(method).__name__})")
    if method.name != entry_point.name:
        raise UserError(f"{where} declares the name {method.name!r}; the entry point and the method must agree")
    return method


def _check_declarations(method: "Method") -> None:
    """Refuse a method whose declarations cannot work (bad name, no map kinds, clashing options)."""
    if not NAME.match(method.name or ""):
        raise UserError(f"method name {method.name!r} must be lower-case letters, digits and _, starting with a letter")
    if not method.map_kinds:
        raise UserError(f"method {method.name!r} declares no map kinds (the first one is its default)")
    kinds = [k.name for k in method.map_kinds]
    if len(set(kinds)) != len(kinds):
        raise UserError(f"method {method.name!r} declares a map kind twice: {', '.join(kinds)}")
    reserved = {o.name: o for o in BACKBONE_OPTIONS}
    for other in _METHODS.values():
        if other.name != method.name:
            reserved.update({o.name: o for o in other.all_options()})
    for opt in method.all_options():
        if opt.name in reserved and reserved[opt.name] != opt:
            raise UserError(f"method {method.name!r} declares option {opt.name!r}, which another method or the "
                            "backbone already declares differently")
