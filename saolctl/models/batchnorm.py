"""BatchNorm helpers: a forward pass that normalises with batch statistics without moving the running ones."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@contextmanager
def frozen_running_stats(model: nn.Module) -> Iterator[None]:
    """Within the block, BatchNorm layers in training mode use batch statistics but leave their buffers alone.

    A second, teacher forward pass of the same step (SAOL's clean-image pass) must not update the running
    mean, variance and batch count a second time: BatchNorm with ``track_running_stats=False`` in training
    mode normalises exactly as before but reads and writes no buffer.
    """
    changed = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.training and m.track_running_stats]
    for m in changed:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in changed:
            m.track_running_stats = True
