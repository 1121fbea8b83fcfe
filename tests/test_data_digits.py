"""The embedded digits dataset: determinism, disjoint splits, ground truth, writing and reading back."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from saolctl.data import DataError, DigitsConfig, detect_format, generate_split, make_loader, open_dataset, write_digits
from saolctl.data.boxes import mask_to_box
from saolctl.data.digits import source_pools

SMALL = DigitsConfig(train_size=120, val_size=40, test_size=60)


def test_same_seed_same_images_other_seed_other_images() -> None:
    a = generate_split("val", SMALL, seed=3)
    b = generate_split("val", SMALL, seed=3)
    c = generate_split("val", SMALL, seed=4)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.masks, b.masks)
    assert not np.array_equal(a.images, c.images)


def test_splits_come_from_disjoint_source_digits() -> None:
    pools = source_pools(SMALL, seed=0)
    train, val, test = (set(pools[s].tolist()) for s in ("train", "val", "test"))
    assert not (train & val) and not (train & test) and not (val & test)
    assert len(train | val | test) == 1797
    for split in ("train", "val", "test"):
        data = generate_split(split, SMALL, seed=0)
        assert set(data.source_ids.tolist()) <= set(pools[split].tolist())


def test_ground_truth_is_the_tight_box_of_a_nonempty_mask() -> None:
    data = generate_split("test", SMALL, seed=1)
    s = SMALL.image_size
    assert data.images.shape == (60, s, s, 3) and data.images.dtype == np.uint8
    assert data.masks.shape == (60, s, s) and data.masks.dtype == bool
    for i in range(len(data.labels)):
        assert np.array_equal(mask_to_box(data.masks[i])[0], data.boxes[i])
    area = data.masks.reshape(60, -1).mean(axis=1)
    assert area.min() > 0.01 and area.max() < 0.6


def test_classes_are_balanced_and_digits_stand_out() -> None:
    data = generate_split("train", SMALL, seed=0)
    assert np.bincount(data.labels, minlength=10).tolist() == [12] * 10
    # the digit's ink differs from the background around it (the target stays recognisable)
    img = data.images.astype(np.float64).mean(axis=-1)
    gaps = []
    for i in range(len(data.labels)):
        x0, y0, x1, y1 = data.boxes[i]
        inside = data.masks[i]
        ring = np.zeros_like(inside)
        ring[max(y0 - 3, 0) : y1 + 4, max(x0 - 3, 0) : x1 + 4] = True
        ring &= ~inside
        gaps.append(abs(img[i][inside].mean() - img[i][ring].mean()))
    assert np.median(gaps) > 40


def test_sizes_and_appearance_are_configurable() -> None:
    cfg = replace(SMALL, image_size=32, val_size=10, digit_scale=(0.5, 0.6), fragments=(0, 0))
    data = generate_split("val", cfg, seed=0)
    assert data.images.shape == (10, 32, 32, 3)
    sides = np.maximum(data.boxes[:, 2] - data.boxes[:, 0], data.boxes[:, 3] - data.boxes[:, 1]) + 1
    assert sides.max() <= int(0.6 * 32 * np.exp(0.125)) + 1


@pytest.mark.parametrize(
    "bad",
    [dict(image_size=8), dict(digit_scale=(0.0, 0.5)), dict(val_size=0), dict(source_split=(0.5, 0.5, 0.5))],
)
def test_bad_config_raises_data_error(bad: dict) -> None:
    with pytest.raises(DataError):
        generate_split("val", replace(SMALL, **bad), seed=0)


def test_open_digits_eval_batches_carry_box_and_mask() -> None:
    ds = open_dataset("digits", "val", train=False, img_size=64, digits=SMALL, seed=0)
    assert ds.class_names == [str(d) for d in range(10)] and ds.has_boxes and ds.has_masks and len(ds) == 40
    info = ds.describe()
    assert info["images"] == 40 and info["boxes"] == 40 and info["images_without_boxes"] == 0
    batch = next(iter(make_loader(ds, 8, shuffle=False, workers=0, seed=0)))
    data = generate_split("val", SMALL, seed=0)
    assert batch.images.shape == (8, 3, 64, 64) and batch.masks is not None and batch.ignore is not None
    assert torch.equal(batch.masks, torch.from_numpy(data.masks[:8].copy())) and not batch.ignore.any()
    assert [b.tolist() for b in batch.boxes] == [[list(map(int, data.boxes[i]))] for i in range(8)]
    assert batch.paths[0] == "digits:0" and batch.orig_sizes[0].tolist() == [64, 64]


def test_open_digits_train_has_no_targets_and_no_flip() -> None:
    ds = open_dataset("digits", "train", train=True, img_size=64, digits=SMALL, seed=0)
    batch = next(iter(make_loader(ds, 4, shuffle=True, workers=0, seed=0)))
    assert batch.masks is None and all(b.shape == (0, 4) for b in batch.boxes)
    assert "Flip" not in ds.describe()["transform"]


def test_written_digits_load_back_identically(tmp_path: Path) -> None:
    cfg = replace(SMALL, train_size=20, val_size=10, test_size=12)
    root = write_digits(tmp_path / "digits_wsol", cfg, seed=5)
    assert detect_format(root) == "wsol"
    for split in ("train", "val", "test"):
        mem = open_dataset("digits", split, train=False, img_size=64, digits=cfg, seed=5)
        disk = open_dataset(root, split, train=False, img_size=64)
        assert disk.class_names == mem.class_names and len(disk) == len(mem)
        assert disk.has_boxes and disk.has_masks
        a = next(iter(make_loader(mem, 64, shuffle=False, workers=0, seed=0)))
        b = next(iter(make_loader(disk, 64, shuffle=False, workers=0, seed=0)))
        assert torch.equal(a.labels, b.labels)
        assert all(torch.equal(x, y) for x, y in zip(a.boxes, b.boxes))
        assert torch.equal(a.masks, b.masks) and torch.equal(a.images, b.images)
