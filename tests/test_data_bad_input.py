"""Bad input: missing or unknown layouts, empty splits, broken images, bad boxes, odd image modes."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from saolctl.data import DataError, DataWarning, make_loader, open_dataset
from saolctl.data.images import decode_rgb

VOC = """<annotation><size><width>{w}</width><height>{h}</height><depth>3</depth></size>{objects}</annotation>"""
OBJ = "<object><name>{name}</name><bndbox><xmin>{0}</xmin><ymin>{1}</ymin><xmax>{2}</xmax><ymax>{3}</ymax></bndbox></object>"


def _folder(root: Path, layout: dict[str, int], size: tuple[int, int] = (32, 24)) -> Path:
    """Make ROOT/<split>/<class>/<k>.png images: layout maps 'split/class' to a count."""
    for key, n in layout.items():
        d = root / key
        d.mkdir(parents=True, exist_ok=True)
        for k in range(n):
            Image.new("RGB", size, (k * 20, 40, 80)).save(d / f"{key.replace('/', '_')}_{k}.png")
    return root


def _xml(boxes_dir: Path, stem: str, boxes: list[tuple[int, int, int, int]], name: str = "cat", w: int = 32, h: int = 24) -> None:
    boxes_dir.mkdir(parents=True, exist_ok=True)
    objects = "".join(OBJ.format(*b, name=name) for b in boxes)
    (boxes_dir / f"{stem}.xml").write_text(VOC.format(w=w, h=h, objects=objects))


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


# ---------------------------------------------------------------- paths and layouts


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        open_dataset(tmp_path / "nowhere", "val", train=False, img_size=32)
    assert "nowhere" in _one_line(err) and isinstance(err.value, ValueError)


def test_unrecognised_layout_says_what_was_looked_for(tmp_path: Path) -> None:
    (tmp_path / "loose.jpg").write_bytes(b"x")
    with pytest.raises(DataError) as err:
        open_dataset(tmp_path, "val", train=False, img_size=32)
    msg = _one_line(err)
    assert str(tmp_path) in msg and "image_ids.txt" in msg and "images.txt" in msg and "train/<class>" in msg


def test_missing_and_empty_split(tmp_path: Path) -> None:
    root = _folder(tmp_path / "ds", {"train/cat": 2})
    with pytest.raises(DataError, match="split folder not found") as err:
        open_dataset(root, "val", train=False, img_size=32)
    assert str(root / "val") in _one_line(err)
    (root / "val").mkdir()
    with pytest.raises(DataError, match="empty split") as err:
        open_dataset(root, "val", train=False, img_size=32)
    assert str(root / "val") in _one_line(err)


def test_wsol_empty_split_and_missing_images(tmp_path: Path) -> None:
    meta = tmp_path / "metadata" / "val"
    meta.mkdir(parents=True)
    (meta / "image_ids.txt").write_text("")
    (meta / "class_labels.txt").write_text("")
    with pytest.raises(DataError, match="empty split"):
        open_dataset(tmp_path, "val", train=False, img_size=32)
    (meta / "image_ids.txt").write_text("a/1.jpg")
    (meta / "class_labels.txt").write_text("a/1.jpg,0")
    with pytest.raises(DataError, match="not found under") as err:
        open_dataset(tmp_path, "val", train=False, img_size=32)
    assert "a/1.jpg" in _one_line(err)


def test_class_folder_without_images(tmp_path: Path) -> None:
    root = _folder(tmp_path / "ds", {"val/cat": 2})
    (root / "val" / "dog").mkdir()
    (root / "val" / "dog" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="class folder has no images") as err:
        open_dataset(root, "val", train=False, img_size=32)
    assert str(root / "val" / "dog") in _one_line(err)


def test_unknown_split_and_format(tmp_path: Path) -> None:
    root = _folder(tmp_path / "ds", {"val/cat": 1})
    with pytest.raises(DataError, match="unknown split"):
        open_dataset(root, "dev", train=False, img_size=32)
    with pytest.raises(DataError, match="unknown data format"):
        open_dataset(root, "val", train=False, img_size=32, format="coco")
    with pytest.raises(DataError, match="boxes folder not found"):
        open_dataset(root, "val", train=False, img_size=32, boxes_dir=tmp_path / "none")


# ---------------------------------------------------------------- broken images


def test_truncated_image_is_skipped_with_a_warning_and_counted(shared_dir: Path) -> None:
    root = shared_dir / "data" / "raccoon_kangaroo"
    ds = open_dataset(root, "val", train=False, img_size=32)
    loader = make_loader(ds, 16, shuffle=False, workers=0, seed=0)
    with pytest.warns(DataWarning, match="kangaroo-00021.jpg"):
        batches = list(loader)
    assert sum(len(b) for b in batches) == 39 and sum(b.num_skipped for b in batches) == 1
    assert loader.num_skipped == 1 and ds.describe()["skipped_images"] == 1
    assert ds.describe()["skipped_files"][0].endswith("kangaroo-00021.jpg")
    assert all(len(b.boxes) == len(b) == len(b.paths) == b.images.shape[0] for b in batches)


def test_truncated_image_with_workers(shared_dir: Path) -> None:
    root = shared_dir / "data" / "raccoon_kangaroo"
    ds = open_dataset(root, "val", train=True, img_size=32)
    with pytest.warns(DataWarning, match="kangaroo-00021.jpg"):
        batches = list(make_loader(ds, 8, shuffle=True, workers=2, seed=0))
    assert sum(b.num_skipped for b in batches) == 1 and ds.describe()["skipped_images"] == 1


def test_strict_images_fail_fast_naming_the_file(shared_dir: Path) -> None:
    root = shared_dir / "data" / "raccoon_kangaroo"
    ds = open_dataset(root, "val", train=False, img_size=32, strict_images=True)
    with pytest.raises(DataError, match="kangaroo-00021.jpg") as err:
        list(make_loader(ds, 16, shuffle=False, workers=0, seed=0))
    assert "truncated" in _one_line(err)


def test_garbage_and_missing_files_are_skipped(tmp_path: Path) -> None:
    root = _folder(tmp_path / "ds", {"val/cat": 3})
    (root / "val" / "cat" / "zz_garbage.jpg").write_bytes(b"\x00" * 100)
    ds = open_dataset(root, "val", train=False, img_size=16)
    (root / "val" / "cat" / "val_cat_0.png").unlink()  # vanished after the listing
    with pytest.warns(DataWarning):
        batches = list(make_loader(ds, 2, shuffle=False, workers=0, seed=0))
    assert sum(len(b) for b in batches) == 2 and ds.describe()["skipped_images"] == 2


def test_a_batch_of_nothing_but_broken_images_is_dropped(tmp_path: Path) -> None:
    root = _folder(tmp_path / "ds", {"val/cat": 1})
    for k in range(3):
        (root / "val" / "cat" / f"bad_{k}.jpg").write_bytes(b"junk")
    ds = open_dataset(root, "val", train=False, img_size=16)
    with pytest.warns(DataWarning):
        batches = list(make_loader(ds, 3, shuffle=False, workers=0, seed=0))
    assert [len(b) for b in batches] == [1] and ds.describe()["skipped_images"] == 3


def test_image_modes_convert_to_rgb(tmp_path: Path) -> None:
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(cmyk)  # pure red in CMYK
    out = np.asarray(decode_rgb(cmyk)).astype(int)
    assert out.shape == (6, 8, 3) and out[..., 0].min() > 200 and out[..., 1:].max() < 60
    deep = tmp_path / "gray16.png"
    Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16)).save(deep)
    assert Image.open(deep).mode.startswith("I")
    assert np.asarray(decode_rgb(deep))[0, :, 0].tolist() == [0, 128, 255]  # scaled, not clipped
    pal = tmp_path / "pal.png"
    Image.new("P", (4, 4), 3).save(pal, transparency=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert decode_rgb(pal).mode == "RGB"
    la = tmp_path / "la.png"
    Image.new("LA", (4, 4), (100, 7)).save(la)
    assert np.asarray(decode_rgb(la))[0, 0].tolist() == [100, 100, 100]


# ---------------------------------------------------------------- bad boxes


def test_boxes_outside_are_clipped_and_degenerate_ones_dropped(tmp_path: Path) -> None:
    root = _folder(tmp_path / "ds", {"val/cat": 3})
    # VOC 1-based: image is 32 x 24, so valid xmax <= 32, ymax <= 24
    _xml(root / "boxes", "val_cat_0", [(1, 1, 40, 30), (5, 5, 10, 10)])  # first reaches outside: clipped
    _xml(root / "boxes", "val_cat_1", [(10, 10, 5, 20), (50, 50, 60, 60)])  # reversed + fully outside: dropped
    with pytest.warns(DataWarning) as record:
        ds = open_dataset(root, "val", train=False, img_size=32)
    messages = " ".join(str(r.message) for r in record)
    assert "clipped" in messages and "dropped" in messages and "val_cat_1.xml" in messages
    info = ds.describe()
    assert info["clipped_boxes"] == 1 and info["dropped_boxes"] == 2
    assert info["boxes"] == 2 and info["images_without_boxes"] == 2  # val_cat_1 lost all, val_cat_2 has no XML
    assert ds[0].boxes.tolist() == [[0, 0, 31, 30], [4, 5, 9, 12]]  # y: int(23 * 32 / 24) = 30
    assert ds[1].boxes.shape == (0, 4) and ds[2].boxes.shape == (0, 4)
    assert len(ds) == 3  # images without boxes stay for classification


def test_unknown_class_in_xml_is_reported(tmp_path: Path) -> None:
    root = _folder(tmp_path / "ds", {"val/cat": 1, "train/dog": 1})
    _xml(root / "boxes", "val_cat_0", [(1, 1, 5, 5)], name="zebra")
    with pytest.warns(DataWarning, match="not in the dataset"):
        ds = open_dataset(root, "val", train=False, img_size=32)
    assert ds.describe()["unknown_class_boxes"] == 1 and ds.describe()["boxes"] == 1


def test_malformed_xml_raises_naming_the_file(tmp_path: Path) -> None:
    root = _folder(tmp_path / "ds", {"val/cat": 1})
    (root / "boxes").mkdir()
    (root / "boxes" / "val_cat_0.xml").write_text("<annotation><object><bndbox><xmin>1</xmin>")
    with pytest.raises(DataError, match="malformed VOC XML") as err:
        open_dataset(root, "val", train=False, img_size=32)
    assert "val_cat_0.xml" in _one_line(err)
    (root / "boxes" / "val_cat_0.xml").write_text(VOC.format(w=32, h=24, objects=OBJ.format(1, 1, "x", 5, name="cat")))
    with pytest.raises(DataError, match="not a number"):
        open_dataset(root, "val", train=False, img_size=32)


def test_training_split_does_not_read_boxes(tmp_path: Path) -> None:
    root = _folder(tmp_path / "ds", {"train/cat": 1})
    (root / "boxes").mkdir()
    (root / "boxes" / "train_cat_0.xml").write_text("not xml at all")
    ds = open_dataset(root, "train", train=True, img_size=32)  # boxes are not needed, so not parsed
    assert not ds.has_boxes and ds[0].boxes.shape == (0, 4)


def test_wsol_boxes_outside_are_clipped(tmp_path: Path) -> None:
    meta = tmp_path / "metadata" / "val"
    meta.mkdir(parents=True)
    (tmp_path / "images").mkdir()
    Image.new("RGB", (20, 10)).save(tmp_path / "images" / "a.png")
    (meta / "image_ids.txt").write_text("a.png")
    (meta / "class_labels.txt").write_text("a.png,0")
    (meta / "image_sizes.txt").write_text("a.png,20,10")
    (meta / "localization.txt").write_text("a.png,-3,2,25,10\na.png,8,8,2,9")
    with pytest.warns(DataWarning):
        ds = open_dataset(tmp_path, "val", train=False, img_size=20)
    assert ds.describe()["clipped_boxes"] == 1 and ds.describe()["dropped_boxes"] == 1
    # x1 = 25 clipped to W = 20 (one past the last pixel is allowed: the protocol's x + w), y1 = 10 = H kept
    assert ds[0].boxes.tolist() == [[0, 4, 20, 20]]
    shutil.rmtree(tmp_path / "images")
