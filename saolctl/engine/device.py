"""Device and precision: which device, memory format, autocast and GradScaler a run uses, and torch.compile."""

from __future__ import annotations

import contextlib
import shutil
from typing import Any, Callable

import torch
from torch import nn

from saolctl.errors import UserError


def resolve_device(name: str) -> torch.device:
    """Return the torch device for 'auto', 'cpu' or 'cuda[:N]'."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but CUDA is not available on this machine")
    if name != "cpu" and not name.startswith("cuda"):
        raise UserError(f"--device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def wants_channels_last(asked: bool | None, device: torch.device) -> bool:
    """Return whether to use torch.channels_last: as asked, else on CPU (oneDNN's fast layout for convolutions)."""
    return device.type == "cpu" if asked is None else bool(asked)


def cpu_has_amx() -> bool:
    """Return whether this CPU has AMX tiles (Intel Xeon 4th generation and later), where bfloat16 is native."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private in torch; absent: assume no AMX
    return bool(probe()) if callable(probe) else False


def resolve_amp(asked: bool | None, device: torch.device, has_amx: Callable[[], bool] = cpu_has_amx) -> bool:
    """Return whether a training run uses mixed precision: as asked, else on for a CPU with AMX, off elsewhere.

    On AMX, bfloat16 autocast trains the digits recipe about 1.6x faster per step than float32, with 3-seed
    top-1 within the seed spread (docs/benchmarks.md, docs/saol-localization.md); without AMX, bfloat16 is
    emulated and slower, and CUDA's float16 stays opt-in.
    """
    if asked is not None:
        return bool(asked)
    return device.type == "cpu" and has_amx()


def precision_name(device: torch.device, amp: bool) -> str:
    """Return the arithmetic a run trains in: 'bfloat16 autocast', 'float16 autocast' or 'float32'."""
    if not amp:
        return "float32"
    return "float16 autocast" if device.type == "cuda" else "bfloat16 autocast"


def autocast_factory(device: torch.device, enabled: bool) -> Callable[[], Any]:
    """Return a context factory: bfloat16 autocast on CPU, float16 on CUDA, or a no-op."""
    if not enabled:
        return contextlib.nullcontext
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def evaluation_autocast(device: torch.device, asked: bool | None) -> Callable[[], Any]:
    """Return the autocast of evaluations whose numbers are reported or kept: float32 unless --amp was given."""
    return autocast_factory(device, asked is True)


def make_scaler(device: torch.device, amp: bool) -> torch.amp.GradScaler:
    """Return the loss scaler: active for float16 autocast on CUDA, a pass-through otherwise."""
    return torch.amp.GradScaler("cuda", enabled=amp and device.type == "cuda")


def restore_scaler(scaler: torch.amp.GradScaler, state: dict[str, Any]) -> None:
    """Load a saved GradScaler state; a run saved without AMP (empty state) resumed with it starts a fresh scale."""
    if state and scaler.is_enabled():
        scaler.load_state_dict(state)


def compile_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Return ``torch.compile(model)``, failing in one line when the CPU backend has no C++ compiler."""
    if device.type == "cpu" and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        raise UserError("--compile on CPU needs a C++ compiler (g++, c++ or clang++) on PATH; "
                        "install one or drop --compile")
    return torch.compile(model)


def is_compile_error(exc: BaseException) -> bool:
    """Return whether an exception was raised by torch.compile's machinery (dynamo / inductor)."""
    return type(exc).__module__.startswith(("torch._dynamo", "torch._inductor"))
