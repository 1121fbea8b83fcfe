"""Eval / train geometry of the transforms, denormalisation and the single-image loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from saolctl.data import denormalize, eval_transform, load_eval_image, open_dataset, train_transform
from saolctl.data.boxes import resize_boxes
from saolctl.data.sample import Sample
from saolctl.data.transforms import (
    RandomHorizontalFlip,
    ResizeRandomCrop,
    ToNormalizedTensor,
    Warp,
    nearest_indices,
    resize_nearest,
)


def _sample(w: int = 40, h: int = 30, boxes: list[list[int]] | None = None, mask: np.ndarray | None = None) -> Sample:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    b = np.asarray(boxes if boxes is not None else [[5, 4, 20, 25]], dtype=np.int64).reshape(-1, 4)
    return Sample(image, 1, b, (w, h), mask, None, (w, h), 0, "x.png")


def test_nearest_sampling_is_opencv_inter_nearest() -> None:
    # cv2.INTER_NEAREST picks floor(x * src / dst) (no half-pixel offset; PIL's NEAREST would pick 0, 2)
    assert nearest_indices(3, 2).tolist() == [0, 1]
    assert nearest_indices(2, 4).tolist() == [0, 0, 1, 1]
    assert nearest_indices(320, 224)[[0, 7, 223]].tolist() == [0, 10, 318]
    m = np.arange(12).reshape(3, 4)
    assert resize_nearest(m, (2, 2)).tolist() == [[0, 2], [4, 6]]


def test_warp_resizes_image_boxes_and_mask_to_s() -> None:
    mask = np.zeros((30, 40), dtype=bool)
    mask[10:20, 5:15] = True
    s = _sample(boxes=[[5, 4, 20, 25], [0, 0, 39, 29]], mask=mask)
    out = Warp(16)(s)
    assert out.image.size == (16, 16) and out.box_frame == (16, 16)
    assert np.array_equal(out.boxes, resize_boxes(s.boxes, (40, 30), 16))
    assert out.boxes.tolist()[1] == [0, 0, 15, 15]
    rows, cols = nearest_indices(30, 16), nearest_indices(40, 16)
    assert np.array_equal(out.mask, mask[rows][:, cols])


def test_warp_to_the_same_size_is_identity() -> None:
    s = _sample(w=16, h=16, boxes=[[1, 2, 3, 4]])
    out = Warp(16)(s)
    assert np.array_equal(np.asarray(out.image), np.asarray(s.image)) and out.boxes.tolist() == [[1, 2, 3, 4]]


def test_flip_mirrors_boxes_and_masks() -> None:
    mask = np.zeros((30, 40), dtype=bool)
    mask[0, 0] = True
    out = RandomHorizontalFlip(p=1.0)(_sample(boxes=[[5, 4, 20, 25]], mask=mask), np.random.default_rng(0))
    assert out.boxes.tolist() == [[19, 4, 34, 25]] and out.mask[0, 39] and out.mask.sum() == 1


def test_random_crop_shifts_and_clips_boxes() -> None:
    t = ResizeRandomCrop(20, ratio=1.5)  # resize 40x30 -> 30x30, crop 20x20
    out = t(_sample(boxes=[[0, 0, 39, 29]]), np.random.default_rng(1))
    assert out.image.size == (20, 20)
    assert out.boxes.tolist() == [[0, 0, 19, 19]]


def test_train_transform_is_deterministic_given_the_generator() -> None:
    t = train_transform(24)
    a = t(_sample(), np.random.default_rng(7)).image
    b = t(_sample(), np.random.default_rng(7)).image
    assert a.shape == (3, 24, 24) and torch.equal(a, b)


def test_normalise_then_denormalize_round_trips() -> None:
    s = _sample(w=8, h=8)
    x = ToNormalizedTensor()(s).image
    back = denormalize(x[None])[0]
    expect = torch.from_numpy(np.array(s.image)).permute(2, 0, 1).float() / 255
    assert torch.allclose(back, expect, atol=1e-6)
    assert denormalize(torch.full((2, 3, 4, 4), 100.0)).max() == 1.0


def test_eval_transform_output_is_normalised_float() -> None:
    out = eval_transform(32)(_sample())
    assert out.image.dtype == torch.float32 and out.image.shape == (3, 32, 32)


def test_load_eval_image_matches_the_dataset_path(shared_dir: Path) -> None:
    photo = shared_dir / "data" / "imagenet_photos" / "golden_retriever.jpg"
    x, size = load_eval_image(photo, 224)
    assert x.shape == (3, 224, 224) and size == (400, 266)
    root = shared_dir / "data" / "raccoon_kangaroo"
    ds = open_dataset(root, "val", train=False, img_size=96)
    sample = ds[0]
    y, size2 = load_eval_image(sample.path, 96)
    assert torch.equal(y, sample.image) and size2 == sample.orig_size


def test_load_eval_image_of_a_broken_file_raises_data_error(tmp_path: Path) -> None:
    from saolctl.data import DataError

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="broken.jpg"):
        load_eval_image(bad, 32)
