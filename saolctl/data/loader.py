"""Batches: the collate function, the seeded sampler and the DataLoader that counts skipped images."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, replace
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from saolctl.data.errors import DataWarning
from saolctl.data.sample import Sample, Skipped


@dataclass(frozen=True)
class Batch:
    """A collated batch of samples; images normalised, ground truth in S x S pixels."""

    images: torch.Tensor  # (B, 3, S, S) float32, normalised with ImageNet mean / std
    labels: torch.Tensor  # (B,) int64
    boxes: list[torch.Tensor]  # B tensors (n_i, 4) int64 inclusive x0y0x1y1; (0, 4) when none
    masks: torch.Tensor | None  # (B, S, S) bool object pixels, or None when no sample has a mask
    ignore: torch.Tensor | None  # (B, S, S) bool ignored pixels (never object); all True for an image without mask
    indices: torch.Tensor  # (B,) int64 dataset indices
    paths: list[str]  # image files, or "digits:<i>"
    orig_sizes: torch.Tensor  # (B, 2) int64 (w, h) of the original images
    num_skipped: int = 0  # unreadable samples dropped from this batch
    skipped: tuple[tuple[str, str], ...] = ()  # (path, reason) of each dropped sample

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def pin_memory(self) -> Batch:
        """Return a copy with its tensors in pinned memory (called by DataLoader when pin_memory is on)."""
        return self._map(lambda t: t.pin_memory())

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """Return a copy with its tensors on a device."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def _map(self, fn) -> Batch:  # type: ignore[no-untyped-def]
        """Apply a tensor function to every tensor field."""
        return replace(
            self,
            images=fn(self.images),
            labels=fn(self.labels),
            boxes=[fn(b) for b in self.boxes],
            masks=None if self.masks is None else fn(self.masks),
            ignore=None if self.ignore is None else fn(self.ignore),
            indices=fn(self.indices),
            orig_sizes=fn(self.orig_sizes),
        )


def collate_samples(items: Sequence[Sample | Skipped]) -> Batch:
    """Collate transformed samples into a Batch, dropping (and counting) skipped ones."""
    skipped = tuple((s.path, s.reason) for s in items if isinstance(s, Skipped))
    samples = [s for s in items if isinstance(s, Sample)]
    if not samples:
        size = next((s.img_size for s in items if isinstance(s, Skipped)), 0)
        return Batch(
            images=torch.zeros(0, 3, size, size),
            labels=torch.zeros(0, dtype=torch.int64),
            boxes=[],
            masks=None,
            ignore=None,
            indices=torch.zeros(0, dtype=torch.int64),
            paths=[],
            orig_sizes=torch.zeros(0, 2, dtype=torch.int64),
            num_skipped=len(skipped),
            skipped=skipped,
        )
    images = torch.stack([s.image for s in samples])  # (B, 3, S, S)
    _, _, h, w = images.shape
    masks = ignore = None
    if any(s.mask is not None for s in samples):
        m = np.zeros((len(samples), h, w), dtype=bool)
        ig = np.zeros((len(samples), h, w), dtype=bool)
        for k, s in enumerate(samples):
            if s.mask is None:
                ig[k] = True  # no ground truth: every pixel ignored, so it adds nothing to PxAP
                continue
            m[k] = s.mask
            if s.ignore is not None:
                ig[k] = s.ignore & ~s.mask  # ignore = ignore region minus object (the reference's rule)
        masks, ignore = torch.from_numpy(m), torch.from_numpy(ig)
    return Batch(
        images=images,
        labels=torch.tensor([s.label for s in samples], dtype=torch.int64),
        boxes=[torch.from_numpy(np.ascontiguousarray(s.boxes, dtype=np.int64).reshape(-1, 4)) for s in samples],
        masks=masks,
        ignore=ignore,
        indices=torch.tensor([s.index for s in samples], dtype=torch.int64),
        paths=[s.path for s in samples],
        orig_sizes=torch.tensor([s.orig_size for s in samples], dtype=torch.int64),
        num_skipped=len(skipped),
        skipped=skipped,
    )


class SeededSampler(Sampler[tuple[int, int]]):
    """Yields (index, augmentation seed) pairs: order and augmentation depend on (seed, epoch) only.

    The order comes from a wrapped sampler when one is given (e.g. DistributedSampler), else from a
    seeded permutation (shuffle) or 0..N-1. The epoch advances on every pass; set_epoch() pins it
    (and is forwarded to the wrapped sampler). The same seed gives the same batches whatever the
    number of workers.
    """

    def __init__(self, n: int, *, shuffle: bool, seed: int, base: Sampler[int] | None = None) -> None:
        self.n = int(n)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.base = base
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch of the next pass."""
        self.epoch = int(epoch)
        if self.base is not None and hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base) if self.base is not None else self.n  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        self.epoch = epoch + 1
        if self.base is not None:
            if hasattr(self.base, "set_epoch"):
                self.base.set_epoch(epoch)
            order = np.fromiter((int(i) for i in self.base), dtype=np.int64)
        elif self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        else:
            order = np.arange(self.n)
        seeds = np.random.SeedSequence([self.seed, epoch, 1]).generate_state(len(order), dtype=np.uint64)
        for i, s in zip(order.tolist(), seeds.tolist()):
            yield i, s


class Loader(DataLoader):
    """A DataLoader of Batch objects that warns about and tallies skipped images in the main process."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.skipped: dict[str, str] = {}  # path -> reason, over every pass

    @property
    def num_skipped(self) -> int:
        """Number of distinct unreadable images met so far."""
        return len(self.skipped)

    def __iter__(self) -> Iterator[Batch]:  # type: ignore[override]
        for batch in super().__iter__():
            for path, reason in batch.skipped:
                if path not in self.skipped:
                    self.skipped[path] = reason
                    warnings.warn(f"skipped unreadable image {path}: {reason}", DataWarning, stacklevel=2)
                record = getattr(self.dataset, "record_skip", None)
                if record is not None:
                    record(path, reason)
            if len(batch):
                yield batch


def default_workers(source: str) -> int:
    """Return DataLoader workers for a source: none for the in-memory digits, else one per core up to 8.

    Decoding and augmenting photos in the main process starves a GPU; torchvision's references default
    to many workers for the same reason. The embedded digits are generated in memory, where worker
    processes only add start-up and copying costs.
    """
    return 0 if source == "digits" else usable_cores()


def usable_cores(most: int = 8) -> int:
    """Return the cores this process may run on, at most ``most`` (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(most, cores))


def make_loader(
    ds: torch.utils.data.Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    workers: int,
    seed: int,
    sampler: Sampler[int] | None = None,
    drop_last: bool = False,
    pin_memory: bool | None = None,
) -> Loader:
    """Return a loader of Batch objects over a dataset (a given sampler decides the order, not shuffle)."""
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    return Loader(
        ds,
        batch_size=batch_size,
        sampler=SeededSampler(len(ds), shuffle=shuffle, seed=seed, base=sampler),  # type: ignore[arg-type]
        num_workers=workers,
        collate_fn=collate_samples,
        pin_memory=pin_memory,
        drop_last=drop_last,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )
