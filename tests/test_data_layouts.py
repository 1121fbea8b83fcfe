"""The real layouts: ImageFolder + VOC (raccoon_kangaroo), WSOL metadata (pets3), CUB, and detection."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from saolctl.data import DataError, detect_format, make_loader, open_dataset
from saolctl.data.boxes import resize_boxes
from saolctl.data.transforms import resize_nearest


def _voc_boxes(xml: Path) -> tuple[tuple[int, int], list[list[int]]]:
    """Read <size> and the 1-based boxes of a VOC file with plain regexes (independent of the reader)."""
    text = xml.read_text()
    w = int(re.search(r"<width>(\d+)</width>", text).group(1))
    h = int(re.search(r"<height>(\d+)</height>", text).group(1))
    boxes = [
        [int(v) for v in m]
        for m in re.findall(r"<xmin>(\d+)</xmin>\s*<ymin>(\d+)</ymin>\s*<xmax>(\d+)</xmax>\s*<ymax>(\d+)</ymax>", text)
    ]
    return (w, h), boxes


def _all(ds, batch_size: int = 64):  # type: ignore[no-untyped-def]
    """Return every batch of a dataset, in order."""
    return list(make_loader(ds, batch_size, shuffle=False, workers=0, seed=0))


# ---------------------------------------------------------------- raccoon_kangaroo (ImageFolder + VOC)


def test_detects_every_shared_layout(shared_dir: Path) -> None:
    data = shared_dir / "data"
    assert detect_format(data / "raccoon_kangaroo") == "imagefolder"
    assert detect_format(data / "pets3") == "wsol"
    assert detect_format("digits") == "digits"
    with pytest.raises(DataError, match="unrecognised dataset layout"):
        detect_format(data / "imagenet_photos")


def test_imagefolder_classes_counts_and_boxes(shared_dir: Path) -> None:
    root = shared_dir / "data" / "raccoon_kangaroo"
    train = open_dataset(root, "train", train=False, img_size=224)
    val = open_dataset(root, "val", train=False, img_size=224)
    assert train.class_names == val.class_names == ["kangaroo", "raccoon"]
    assert len(train) == 80 and len(val) == 40
    assert np.bincount(val.labels).tolist() == [20, 20]
    assert train.describe()["boxes"] == 138 and val.describe()["boxes"] == 62
    assert val.describe()["images_without_boxes"] == 0 and val.has_boxes and not val.has_masks


def test_voc_boxes_are_converted_and_rescaled_from_the_original_size(shared_dir: Path) -> None:
    root = shared_dir / "data" / "raccoon_kangaroo"
    ds = open_dataset(root, "train", train=False, img_size=224)
    i = next(k for k, p in enumerate(ds.source.index.paths) if p.endswith("kangaroo-00155.jpg"))
    size, voc = _voc_boxes(root / "boxes" / "kangaroo-00155.xml")
    sample = ds[i]
    assert len(voc) == 8 and sample.boxes.shape == (8, 4)
    expect = [[int((v - 1) * 224 / (size[k % 2])) for k, v in enumerate(b)] for b in voc]
    assert sample.boxes.tolist() == expect
    assert np.array_equal(sample.boxes, resize_boxes(np.asarray(voc) - 1, size, 224))


def test_grayscale_and_rgba_files_become_rgb(shared_dir: Path) -> None:
    from saolctl.data.images import decode_rgb

    root = shared_dir / "data" / "raccoon_kangaroo"
    gray = decode_rgb(root / "val" / "raccoon" / "raccoon-150.jpg")
    arr = np.asarray(gray)
    assert gray.mode == "RGB" and (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()
    png = root / "train" / "kangaroo" / "kangaroo-00171.png"
    rgba = np.asarray(Image.open(png))
    assert rgba.shape[-1] == 4
    assert np.array_equal(np.asarray(decode_rgb(png)), rgba[..., :3])  # alpha dropped, colours untouched


def test_imagefolder_boxes_folder_can_be_given(shared_dir: Path, tmp_path: Path) -> None:
    root = shared_dir / "data" / "raccoon_kangaroo"
    ds = open_dataset(root, "val", train=False, img_size=64, boxes_dir=root / "boxes")
    assert ds.describe()["boxes"] == 62
    empty = tmp_path / "no_boxes"
    empty.mkdir()
    ds = open_dataset(root, "val", train=False, img_size=64, boxes_dir=empty)
    assert not ds.has_boxes and ds.describe()["images_without_boxes"] == 40


# ---------------------------------------------------------------- pets3 (WSOL metadata with masks)


def test_wsol_pets3_splits_classes_and_roots(shared_dir: Path) -> None:
    root = shared_dir / "data" / "pets3"
    sizes = {s: len(open_dataset(root, s, train=False, img_size=64)) for s in ("train", "val", "test")}
    assert sizes == {"train": 90, "val": 30, "test": 30}
    ds = open_dataset(root, "test", train=False, img_size=64)
    assert ds.class_names == ["abyssinian", "american_bulldog", "bengal"]
    assert ds.has_masks and ds.has_boxes
    assert all(Path(p).is_file() and "/images/" in p for p in ds.source.index.paths)
    train = open_dataset(root, "train", train=False, img_size=64)
    assert not train.has_boxes and not train.has_masks


def test_wsol_pets3_masks_and_boxes(shared_dir: Path) -> None:
    root = shared_dir / "data" / "pets3"
    ds = open_dataset(root, "val", train=False, img_size=224)
    batch = _all(ds)[0]
    assert batch.masks is not None and batch.ignore is not None
    assert batch.masks.dtype == torch.bool and batch.masks.shape == (30, 224, 224)
    assert not (batch.masks & batch.ignore).any()
    lines = (root / "metadata" / "val" / "localization.txt").read_text().splitlines()
    boxes = {r.split(",")[0]: r.split(",")[1:] for r in (root / "metadata/val/localization_boxes.txt").read_text().splitlines()}
    for k in (0, 17):
        image_id, mask_rel, ignore_rel = lines[k].split(",")
        raw = np.asarray(Image.open(root / "masks" / mask_rel)) > 0
        ign = np.asarray(Image.open(root / "masks" / ignore_rel)) > 0
        assert torch.equal(batch.masks[k], torch.from_numpy(resize_nearest(raw, (224, 224))))
        expect_ignore = resize_nearest(ign, (224, 224)) & ~resize_nearest(raw, (224, 224))
        assert torch.equal(batch.ignore[k], torch.from_numpy(expect_ignore))
        w, h = Image.open(root / "images" / image_id).size
        expect_box = resize_boxes(np.asarray([[int(v) for v in boxes[image_id]]]), (w, h), 224)
        assert batch.boxes[k].tolist() == expect_box.tolist()
        assert batch.orig_sizes[k].tolist() == [w, h]


def _write_wsol(root: Path, split: str, rows: dict[str, list[str]]) -> None:
    meta = root / "metadata" / split
    meta.mkdir(parents=True, exist_ok=True)
    for name, lines in rows.items():
        (meta / name).write_text("\n".join(lines))


def test_wsol_several_boxes_and_instance_masks(tmp_path: Path) -> None:
    root = tmp_path / "wsol"
    (root / "images" / "a").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.new("RGB", (40, 20), (10, 20, 30)).save(root / "images" / "a" / "1.png")
    Image.new("RGB", (40, 20), (10, 20, 30)).save(root / "images" / "a" / "2.png")
    for name, box in (("m1", (0, 0, 9, 9)), ("m2", (30, 10, 39, 19)), ("ig", (0, 0, 39, 19))):
        m = np.zeros((20, 40), np.uint8)
        m[box[1] : box[3] + 1, box[0] : box[2] + 1] = 1  # any non-zero value is object
        Image.fromarray(m).save(root / "masks" / f"{name}.png")
    ids = ["a/1.png", "a/2.png"]
    _write_wsol(root, "val", {
        "image_ids.txt": ids,
        "class_labels.txt": ["a/1.png,0", "a/2.png,1"],
        "image_sizes.txt": ["a/1.png,40,20", "a/2.png,40,20"],
        "localization.txt": ["a/1.png,0,0,9,9", "a/1.png,30,10,39,19", "a/2.png,5,5,6,6"],
    })
    ds = open_dataset(root, "val", train=False, img_size=40)
    # 40 x 20 warped to 40 x 40: y doubles (truncated)
    assert [s.tolist() for s in _all(ds)[0].boxes] == [[[0, 0, 9, 18], [30, 20, 39, 38]], [[5, 10, 6, 12]]]
    assert ds.class_names == ["0", "1"]  # one folder "a" for both classes: names fall back to indices
    _write_wsol(root, "test", {
        "image_ids.txt": ids,
        "class_labels.txt": ["a/1.png,0", "a/2.png,1"],
        "localization.txt": ["a/1.png,m1.png,ig.png", "a/1.png,m2.png,"],
    })
    batch = _all(open_dataset(root, "test", train=False, img_size=40))[0]
    assert batch.masks[0].sum() == 400 and batch.masks[0, 30, 35] and batch.masks[0, 10, 5]  # 2 x 200 (y doubled)
    assert batch.ignore[0].sum() == 1600 - 400  # ignore region minus the object
    assert not batch.masks[1].any() and batch.ignore[1].all()  # no mask: every pixel ignored


# ---------------------------------------------------------------- CUB-200-2011


def _write_cub(root: Path, per_class: int = 4) -> None:
    (root / "images").mkdir(parents=True)
    images, labels, split, bbox, classes = [], [], [], [], []
    i = 0
    for c, name in enumerate(("001.Albatross", "002.Auklet")):
        classes.append(f"{c + 1} {name}")
        (root / "images" / name).mkdir()
        for k in range(per_class * 2):
            i += 1
            rel = f"{name}/img_{i}.jpg"
            Image.new("RGB", (50, 40), (c * 100, 50, 50)).save(root / "images" / rel)
            images.append(f"{i} {rel}")
            labels.append(f"{i} {c + 1}")
            split.append(f"{i} {1 if k < per_class else 0}")
            bbox.append(f"{i} 10.0 5.5 40.0 34.5")  # x1 = 50 = W, y1 = 40 = H: the protocol's x + w
    for name, lines in (
        ("images.txt", images), ("image_class_labels.txt", labels), ("train_test_split.txt", split),
        ("bounding_boxes.txt", bbox), ("classes.txt", classes),
    ):
        (root / name).write_text("\n".join(lines) + "\n")


def test_cub_splits_labels_and_boxes(tmp_path: Path) -> None:
    root = tmp_path / "CUB_200_2011"
    _write_cub(root)
    assert detect_format(root) == "cub" and detect_format(tmp_path) == "cub"
    train = open_dataset(tmp_path, "train", train=False, img_size=100)
    val = open_dataset(root, "val", train=False, img_size=100)
    test = open_dataset(root, "test", train=False, img_size=100)
    assert (len(train), len(val), len(test)) == (4, 4, 8)  # val: the last min(5, n // 2) train images per class
    assert not set(train.source.index.paths) & set(val.source.index.paths)
    assert train.class_names == ["001.Albatross", "002.Auklet"]
    assert np.bincount(test.labels).tolist() == [4, 4]
    assert any("val" in n for n in val.describe()["notes"])
    sample = test[0]
    # x0 = 10, y0 = 5.5 -> 5, x1 = 50 = W, y1 = 40 = H: one past the last pixel, kept as the protocol has it,
    # so x1' = int(50 * 100 / 50) = 100 = S (the reference evaluates this box unclipped)
    assert sample.boxes.tolist() == [[20, 12, 100, 100]]
    assert test.describe()["clipped_boxes"] == 0


def test_format_can_be_forced(shared_dir: Path, tmp_path: Path) -> None:
    root = shared_dir / "data" / "raccoon_kangaroo"
    assert len(open_dataset(root, "val", train=False, img_size=32, format="imagefolder")) == 40
    with pytest.raises(DataError, match="not a CUB-200-2011 root"):
        open_dataset(root, "val", train=False, img_size=32, format="cub")
    with pytest.raises(DataError, match="split not found"):
        open_dataset(root, "val", train=False, img_size=32, format="wsol")
