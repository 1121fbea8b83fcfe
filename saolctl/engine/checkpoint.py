"""Checkpoints: plain dicts of tensors and Python values, written atomically, read with weights_only only."""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import uuid
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

import saolctl
from saolctl.engine.distributed import unwrap_model
from saolctl.errors import UserError
from saolctl.models import ModelConfig, build_model

FORMAT = "saolctl"
FORMAT_VERSION = 1


class CheckpointError(UserError):
    """A checkpoint that cannot be used: missing, unreadable, unsafe, or of another kind."""


def versions() -> dict[str, str]:
    """Return the versions that wrote a checkpoint."""
    return {"saolctl": str(saolctl.__version__), "torch": str(torch.__version__), "torchvision": str(torchvision.__version__)}


def atomic_save(obj: dict[str, Any], path: Path) -> None:
    """Write ``obj`` with torch.save to a temporary file in the same folder, flush, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file through a temporary file in the same folder and a rename."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"  # umask permissions, unlike mkstemp
    try:
        with open(tmp, "x") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def stale_temps(folder: Path) -> list[Path]:
    """Return the hidden temporary files that an interrupted atomic write left in a folder."""
    return sorted(p for p in Path(folder).glob(".*.tmp") if p.is_file())


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete the temporary files an interrupted (killed) atomic write left behind; return them."""
    found = stale_temps(folder)
    for p in found:
        p.unlink(missing_ok=True)
    return found


def make_checkpoint(
    model: nn.Module,
    *,
    class_names: list[str],
    img_size: int,
    data: dict[str, Any],
    metrics: dict[str, Any],
    best_threshold: float | None,
    train: dict[str, Any] | None = None,
    resume: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Return the checkpoint dict of SPEC section 4 (resume state optional)."""
    net = unwrap_model(model)
    config: ModelConfig = net.config
    ckpt: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "config": {
            "model": config.to_dict(),
            "class_names": list(class_names),
            "img_size": int(img_size),
            "data": data,
            "train": train or {},
        },
        "metrics": metrics,
        "best_threshold": best_threshold,
        "versions": versions(),
    }
    if resume:
        ckpt.update(resume)
    return ckpt


def best_checkpoints(has_boxes: bool) -> dict[str, str]:
    """Return {file name: validation metric it is chosen on}; best.pt is on localization when val has boxes.

    A WSOL run is selected on MaxBoxAccV2 (the protocol's localization metric, computed on validation every
    epoch); the top-1 choice is kept beside it as best_top1.pt. Without boxes only top-1 can choose.
    """
    if has_boxes:
        return {"best.pt": "val_max_box_acc_v2", "best_top1.pt": "val_top1"}
    return {"best.pt": "val_top1"}


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a saolctl checkpoint with ``weights_only=True``; refuse anything else with one clear line."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"checkpoint path is a folder, not a file: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint is empty (0 bytes): {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if found is None:
            raise CheckpointError(f"checkpoint {path} is truncated or not a torch file (unpickling failed)") from exc
        what = found.group(1)
        raise CheckpointError(
            f"refused to load {path}: it holds {what}, not only tensors and plain values "
            "(read with weights_only=True; nothing in it was run)"
        ) from exc
    except PermissionError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: permission denied") from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is truncated or not a torch file ({type(exc).__name__})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a saolctl checkpoint (no format: {FORMAT!r} key)")
    if int(ckpt.get("format_version", -1)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer saolctl (format {ckpt['format_version']} > {FORMAT_VERSION})"
        )
    for key in ("model", "config"):
        if key not in ckpt:
            raise CheckpointError(f"{path} is incomplete: no {key!r} entry")
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any], device: torch.device | str = "cpu") -> nn.Module:
    """Build the model a checkpoint describes and load its weights (eval mode)."""
    try:
        config = ModelConfig.from_dict(ckpt["config"]["model"])
        model = build_model(config)
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise CheckpointError(f"the checkpoint's model config cannot be built by this saolctl: {text}") from exc
    try:
        missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    except RuntimeError as exc:  # a tensor of another shape: weights of another backbone or class count
        raise CheckpointError(
            f"checkpoint weights do not fit the {config.method}/{config.backbone} model with {config.num_classes} "
            "classes its config describes (tensor shapes differ)"
        ) from exc
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint weights do not fit a {config.method}/{config.backbone} model "
            f"(missing {len(missing)}, unexpected {len(unexpected)})"
        )
    return model.to(device).eval()
