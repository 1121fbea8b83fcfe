"""Distributed helpers for `torchrun`: process group, rank queries, samplers, and summing counters.

Modelled on torchvision's references (``utils.init_distributed_mode``) but with no global state: every
helper takes the :class:`DistContext` that :func:`init_distributed` returned. A process started without
``torchrun`` (no ``WORLD_SIZE`` in the environment, or 1) gets a single-process context and every helper
is a no-op, so the same code path serves both.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

from saolctl.errors import UserError


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a run: rank, world size, local rank, and the device it computes on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # this context created the process group (and destroys it in cleanup)

    @property
    def enabled(self) -> bool:
        """Return whether more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Return whether this is rank 0, the process that writes files and draws progress."""
        return self.rank == 0


def env_ranks(env: Mapping[str, str] | None = None) -> tuple[int, int, int]:
    """Return (rank, world_size, local_rank) from torchrun's environment variables (0, 1, 0 without them)."""
    env = os.environ if env is None else env
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise UserError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers: {exc}") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise UserError(f"inconsistent torchrun environment: RANK={rank} WORLD_SIZE={world} LOCAL_RANK={local}")
    return rank, world, local


def is_main_process(env: Mapping[str, str] | None = None) -> bool:
    """Return whether this process is rank 0 (True outside torchrun); safe to call before init."""
    return env_ranks(env)[0] == 0


def init_distributed(device: torch.device, env: Mapping[str, str] | None = None) -> DistContext:
    """Join torchrun's process group (NCCL on CUDA, gloo on CPU) and return this process's context.

    On CUDA each process computes on ``cuda:LOCAL_RANK``. Without torchrun (world size 1) nothing is
    initialised and ``device`` is returned unchanged. A process group that already exists is reused.
    """
    rank, world, local = env_ranks(env)
    if world == 1:
        return DistContext(device=device)
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local} but this node has {torch.cuda.device_count()} CUDA device(s); "
                            "use --nproc_per_node <= the number of GPUs")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        if not dist.is_available():
            raise UserError("this PyTorch build has no torch.distributed; run without torchrun")
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, rank=rank, world_size=world, **kwargs)
        owns = True
    return DistContext(rank=rank, world_size=world, local_rank=local, device=device, owns_group=owns)


def cleanup(ctx: DistContext) -> None:
    """Destroy the process group if this context created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait until every process reaches this point (no-op in a single process)."""
    if ctx.enabled:
        if ctx.device.type == "cuda":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


def all_reduce_sum(values: np.ndarray, ctx: DistContext) -> np.ndarray:
    """Return the element-wise sum over processes of a numpy array (int64 stays exact)."""
    arr = np.ascontiguousarray(values)
    if not ctx.enabled:
        return arr.copy()
    if arr.dtype not in (np.int64, np.float64):
        raise TypeError(f"all_reduce_sum takes int64 or float64 arrays, got {arr.dtype}")
    t = torch.from_numpy(arr.copy()).to(ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().numpy()


def all_gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Return every process's ``obj`` (picklable), in rank order; ``[obj]`` in a single process."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(module: nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) into every process's module, in place."""
    if not ctx.enabled:
        return
    with torch.no_grad():
        for buf in module.buffers():
            dist.broadcast(buf, src=0)


class ShardSampler(Sampler[int]):
    """This rank's whole batches of ``0..n-1`` in order: batches ``rank, rank + W, ...`` of size ``block``.

    For evaluation: the shards cover every index exactly once (unlike DistributedSampler, nothing is
    padded by repeating images), and each image lands in the same batch, with the same neighbours, as
    in a single-process run with that batch size, so even batch-size-dependent float kernels give the
    same maps and the summed counters equal a single process's bit for bit.
    """

    def __init__(self, n: int, rank: int, world_size: int, block: int = 1) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world size {world_size}")
        if block < 1:
            raise ValueError(f"block must be at least 1, got {block}")
        self.n, self.rank, self.world_size, self.block = int(n), int(rank), int(world_size), int(block)

    def _indices(self) -> list[int]:
        """Return this shard's indices."""
        starts = range(self.rank * self.block, self.n, self.world_size * self.block)
        return [i for s in starts for i in range(s, min(s + self.block, self.n))]

    def __len__(self) -> int:
        return len(self._indices())

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices())


def train_sampler(n: int, ctx: DistContext, *, seed: int) -> Sampler[int] | None:
    """Return the training order of a distributed run (DistributedSampler, seeded, set_epoch per epoch), or None.

    DistributedSampler pads by repeating a few images so every rank runs the same number of steps (DDP
    needs that); a single process returns None and keeps its own seeded permutation.
    """
    if not ctx.enabled:
        return None
    return torch.utils.data.DistributedSampler(
        range(n), num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed, drop_last=False
    )  # type: ignore[arg-type]


def eval_sampler(n: int, ctx: DistContext, batch_size: int) -> Sampler[int] | None:
    """Return this process's evaluation shard of whole batches (no padding), or None in a single process."""
    return ShardSampler(n, ctx.rank, ctx.world_size, block=batch_size) if ctx.enabled else None


def wrap_ddp(model: nn.Module, ctx: DistContext, *, find_unused_parameters: bool = False) -> nn.Module:
    """Wrap a model in DistributedDataParallel when more than one process takes part.

    Buffers are synced once at construction but not at every forward (``forward_sync_buffers=False``, or
    ``broadcast_buffers=False`` on older torch): SAOL's objective runs a second, gradient-free forward on
    only some steps and some ranks, and a per-forward broadcast would then pair up mismatched collectives.
    Call :func:`broadcast_buffers` before evaluating or saving.
    """
    if not ctx.enabled:
        return model
    ddp = nn.parallel.DistributedDataParallel
    no_forward_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(ddp).parameters
                       else {"broadcast_buffers": False})
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return ddp(model, device_ids=device_ids, find_unused_parameters=find_unused_parameters, **no_forward_sync)


def unwrap_model(model: nn.Module) -> nn.Module:
    """Return the plain network inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(model, "module", model)


class SupportsCounters(Protocol):
    """Anything that can export its counters as an int64 vector and load them back (EvalCounters)."""

    def as_array(self) -> np.ndarray: ...

    def load_array(self, values: np.ndarray) -> None: ...


def sum_counters(counters: Iterable[SupportsCounters], ctx: DistContext) -> None:
    """Replace each process's counters, in place, by their sum over all processes (exact: int64)."""
    if not ctx.enabled:
        return
    for c in counters:
        c.load_array(all_reduce_sum(c.as_array().astype(np.int64), ctx))
