"""Parsing helpers shared by the commands: KEY=VALUE model options and config files."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the tomli backport (a dependency there)
    import tomli as tomllib

import typer

from saolctl.errors import UserError
from saolctl.methods.registry import find_option


def parse_value(text: str) -> Any:
    """Return a Python literal for text like '0.3', 'true', '[-2,-1]', or the text itself."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def split_pairs(pairs: list[str] | None, option: str, form: str) -> list[tuple[str, str]]:
    """Split repeated ``KEY=VALUE`` arguments of an option into (key, value) pairs."""
    out = []
    for pair in pairs or []:
        if "=" not in pair:
            raise UserError(f"{option} expects {form}, got {pair!r}")
        key, value = pair.split("=", 1)
        out.append((key.strip(), value))
    return out


def parse_model_options(pairs: list[str] | None) -> dict[str, Any]:
    """Parse repeated ``--option KEY=VALUE`` into a dict, checking the names."""
    out: dict[str, Any] = {}
    for key, value in split_pairs(pairs, "--option", "KEY=VALUE"):
        key = key.replace("-", "_")
        find_option(key)  # an unknown name fails listing the valid ones
        out[key] = parse_value(value)
    return out


def read_config_file(path: Path | None) -> dict[str, Any]:
    """Read a TOML or JSON file of command options (keys as the long option names, with _ or -)."""
    if path is None:
        return {}
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    text = path.read_text()
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"config file {path} is not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {exc}")
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a table of options")
    return {k.replace("-", "_"): v for k, v in data.items()}


def option_keys(ctx: typer.Context) -> dict[str, str]:
    """Map every key a config file may use for a command's options (long option names, - or _) to its parameter."""
    keys: dict[str, str] = {}
    for param in ctx.command.params:
        for opt in param.opts:
            if opt.startswith("--"):
                keys[opt[2:].replace("-", "_")] = param.name or ""
    return keys


def config_file_params(ctx: typer.Context, file_opts: dict[str, Any], tables: tuple[str, ...],
                       path: Path | None) -> dict[str, Any]:
    """Return a config file's values keyed by parameter name; a key that is no option of the command fails.

    The keys are exactly the command's long options (one source of truth: what a file may say, a flag can),
    plus the named ``tables`` (e.g. ``model_options``, ``digits``), which the caller reads itself.
    """
    keys = option_keys(ctx)
    keys.pop("config", None)
    unknown = sorted(k for k in file_opts if k not in keys and k not in tables)
    if unknown:
        raise UserError(f"unknown key(s) in {path}: {', '.join(unknown)}; valid: {', '.join(sorted([*keys, *tables]))}")
    return {keys[k]: v for k, v in file_opts.items() if k in keys}
