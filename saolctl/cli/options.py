"""Parsing helpers shared by the commands: KEY=VALUE model options and config files."""

from __future__ import annotations

import ast
import json
import tomllib
from pathlib import Path
from typing import Any

from saolctl.models import list_options


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
            raise ValueError(f"{option} expects {form}, got {pair!r}")
        key, value = pair.split("=", 1)
        out.append((key.strip(), value))
    return out


def parse_model_options(pairs: list[str] | None) -> dict[str, Any]:
    """Parse repeated ``--option KEY=VALUE`` into a dict, checking the names."""
    out: dict[str, Any] = {}
    for key, value in split_pairs(pairs, "--option", "KEY=VALUE"):
        key = key.replace("-", "_")
        if key not in list_options():
            raise ValueError(f"unknown model option {key!r}; valid: {', '.join(list_options())}")
        out[key] = parse_value(value)
    return out


def read_config_file(path: Path | None) -> dict[str, Any]:
    """Read a TOML or JSON file of command options (keys as the long option names, with _ or -)."""
    if path is None:
        return {}
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    text = path.read_text()
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"config file {path} is not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {exc}")
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a table of options")
    return {k.replace("-", "_"): v for k, v in data.items()}
