"""Random states a resumed run restores: numpy's generator (CutMix and the like), torch's CPU and CUDA states."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """Return every random state a resumed run needs, as plain values and tensors."""
    return {
        "numpy": rng.bit_generator.state,
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(rng: np.random.Generator, state: dict[str, Any]) -> None:
    """Restore the random states saved by :func:`rng_state`."""
    rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
