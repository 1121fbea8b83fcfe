"""Batches and loaders: shapes, determinism across workers and epochs, samplers, pinning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from saolctl.data import Batch, DigitsConfig, SeededSampler, collate_samples, make_loader, open_dataset

SMALL = DigitsConfig(train_size=40, val_size=20, test_size=20)


def _digits(train: bool, img_size: int = 32):  # type: ignore[no-untyped-def]
    return open_dataset("digits", "train" if train else "val", train=train, img_size=img_size, digits=SMALL, seed=1)


def test_eval_batch_fields_shapes_and_types(shared_dir: Path) -> None:
    ds = open_dataset(shared_dir / "data" / "raccoon_kangaroo", "train", train=False, img_size=48)
    batches = list(make_loader(ds, 32, shuffle=False, workers=0, seed=0))
    b = batches[0]
    assert isinstance(b, Batch) and len(b) == 32
    assert b.images.shape == (32, 3, 48, 48) and b.images.dtype == torch.float32
    assert b.labels.dtype == torch.int64 and b.indices.tolist() == list(range(32))
    assert b.orig_sizes.shape == (32, 2) and b.orig_sizes.dtype == torch.int64
    assert b.masks is None and b.ignore is None and b.num_skipped == 0
    counts = {int(x.shape[0]) for batch in batches for x in batch.boxes}
    assert len(counts) > 2  # a different number of boxes per image
    for batch in batches:
        for boxes in batch.boxes:
            assert boxes.dtype == torch.int64 and boxes.shape[1] == 4
            assert (boxes >= 0).all() and (boxes <= 47).all()
            assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
    assert sum(len(x) for x in batches) == 80


def _run(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:  # type: ignore[no-untyped-def]
    return [(b.indices, b.images) for b in loader]


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))


def test_same_seed_same_batches_whatever_the_workers() -> None:
    ds = _digits(train=True)
    serial = make_loader(ds, 8, shuffle=True, workers=0, seed=3)
    parallel = make_loader(ds, 8, shuffle=True, workers=2, seed=3)
    first, second = _run(serial), _run(serial)
    assert _same(first, _run(parallel)) and _same(second, _run(parallel))
    assert not torch.equal(first[0][0], second[0][0])  # the next epoch is shuffled differently
    assert not _same(first, _run(make_loader(ds, 8, shuffle=True, workers=0, seed=4)))


def test_set_epoch_replays_an_epoch() -> None:
    ds = _digits(train=True)
    loader = make_loader(ds, 8, shuffle=True, workers=0, seed=0)
    first = _run(loader)
    _run(loader)
    loader.sampler.set_epoch(0)
    assert _same(first, _run(loader))


def test_int_indexing_is_reproducible() -> None:
    ds = _digits(train=True)
    assert torch.equal(ds[5].image, ds[5].image)
    assert any(not torch.equal(ds[(5, 1)].image, ds[(5, k)].image) for k in range(2, 6))  # seeds change crops
    assert ds[(5, 11)].label == ds[5].label


def test_a_given_sampler_decides_the_order() -> None:
    ds = _digits(train=False)
    order = [7, 3, 3, 0]
    loader = make_loader(ds, 2, shuffle=True, workers=0, seed=0, sampler=order)  # type: ignore[arg-type]
    assert [i for b in loader for i in b.indices.tolist()] == order
    assert len(loader) == 2


def test_drop_last_and_unshuffled_order() -> None:
    ds = _digits(train=False)
    loader = make_loader(ds, 6, shuffle=False, workers=0, seed=0, drop_last=True)
    assert [b.indices.tolist() for b in loader][-1] == [12, 13, 14, 15, 16, 17] and len(loader) == 3


def test_pinning_follows_cuda_by_default() -> None:
    ds = _digits(train=False)
    assert make_loader(ds, 4, shuffle=False, workers=0, seed=0).pin_memory == torch.cuda.is_available()
    assert not make_loader(ds, 4, shuffle=False, workers=0, seed=0, pin_memory=False).pin_memory


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_pinned_batches_move_to_the_gpu() -> None:
    ds = _digits(train=False)
    b = next(iter(make_loader(ds, 4, shuffle=False, workers=0, seed=0, pin_memory=True)))
    assert b.images.is_pinned() and b.masks is not None and b.masks.is_pinned()
    g = b.to("cuda", non_blocking=True)
    assert g.images.is_cuda and all(x.is_cuda for x in g.boxes)


def test_batch_to_keeps_every_field() -> None:
    ds = _digits(train=False)
    b = next(iter(make_loader(ds, 4, shuffle=False, workers=0, seed=0)))
    c = b.to("cpu")
    assert torch.equal(c.images, b.images) and c.paths == b.paths and c.masks is not None


def test_seeded_sampler_yields_index_seed_pairs() -> None:
    s = SeededSampler(5, shuffle=False, seed=0)
    pairs = list(s)
    assert [i for i, _ in pairs] == [0, 1, 2, 3, 4] and len({q for _, q in pairs}) == 5
    assert [q for _, q in list(s)] != [q for _, q in pairs]  # next epoch, new augmentation seeds


def test_collate_of_no_samples_keeps_the_image_shape() -> None:
    from saolctl.data import Skipped

    b = collate_samples([Skipped(0, "a.jpg", "OSError", 16)])
    assert b.images.shape == (0, 3, 16, 16) and b.num_skipped == 1 and b.skipped == (("a.jpg", "OSError"),)
    assert np.asarray(b.orig_sizes).shape == (0, 2)
