"""`eval --maps`: anyone's saved heatmaps scored exactly as wsolevaluation's evaluate_wsol scores them, the
`--save-maps` round trip, bad map files, and the contour work in worker processes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from saolctl.cli.app import app
from saolctl.data import DigitsConfig, write_digits
from saolctl.data.maps_dir import MapError, open_map_folder
from saolctl.data.split_targets import open_split_targets
from saolctl.engine.maps_eval import MapsEvalSettings, run_maps_eval

runner = CliRunner()
WIDE = {"COLUMNS": "220"}
TINY = {"train_size": 96, "val_size": 48, "test_size": 48}


def invoke(*args: str):
    return runner.invoke(app, list(args), env=WIDE)


def _write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _mask_png(path: Path, mask: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)
    return path.name


@pytest.fixture(scope="module")
def golden_root(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """A WSOL-metadata ROOT built from ../shared/golden (no image files: sizes from image_sizes.txt) and its maps.

    Split ``test`` = the 90 box cases (GT boxes in original pixels, image sizes as stored), split ``val`` = the
    30 mask cases (instance masks and ignore regions as PNG files); DIR holds ``<image_id>.npy`` per image.
    """
    golden = shared_dir / "golden"
    box = dict(np.load(golden / "box_inputs.npz"))
    mask = dict(np.load(golden / "mask_inputs.npz"))
    expected = {**dict(np.load(golden / "box_expected.npz")), "pxap": float(np.load(golden / "mask_expected.npz")["pxap"])}
    root = tmp_path_factory.mktemp("golden_root")
    maps = tmp_path_factory.mktemp("golden_maps")
    meta = root / "metadata"
    ids, labels, sizes, locs = [], [], [], []
    for i, name in enumerate(box["names"]):
        image_id = f"boxes/{name}.jpg"
        w, h = (int(v) for v in box["image_sizes"][i])
        ids.append(image_id)
        labels.append(f"{image_id},{i % 3}")
        sizes.append(f"{image_id},{w},{h}")
        locs += [f"{image_id},{','.join(str(int(v)) for v in b)}" for b in box["gt_boxes_orig"][i, : box["gt_count"][i]]]
        (maps / "boxes").mkdir(exist_ok=True)
        np.save(maps / f"{image_id}.npy", box["scoremaps"][i])
    for name, lines in (("image_ids", ids), ("class_labels", labels), ("image_sizes", sizes), ("localization", locs)):
        _write(meta / "test" / f"{name}.txt", lines)
    ids, labels, sizes, locs = [], [], [], []
    for i, name in enumerate(mask["names"]):
        image_id = f"masks/{name}.png"
        ids.append(image_id)
        labels.append(f"{image_id},{i % 3}")
        sizes.append(f"{image_id},224,224")
        ignore = _mask_png(root / "masks" / f"{name}_ignore.png", mask["ignore_region"][i])
        for k in range(mask["instance_count"][i]):
            inst = _mask_png(root / "masks" / f"{name}_{k}.png", mask["instance_masks"][i, k])
            locs.append(f"{image_id},{inst},{ignore if k == 0 else ''}")
        (maps / "masks").mkdir(exist_ok=True)
        np.save(maps / f"{image_id}.npy", mask["scoremaps"][i])
    for name, lines in (("image_ids", ids), ("class_labels", labels), ("image_sizes", sizes), ("localization", locs)):
        _write(meta / "val" / f"{name}.txt", lines)
    return root, maps, expected


def test_golden_boxes_equal_the_reference_exactly(golden_root: tuple[Path, Path, dict], tmp_path: Path) -> None:
    root, maps, expected = golden_root
    r = invoke("eval", "--maps", str(maps), "--data", str(root), "--split", "test", "--out", str(tmp_path / "e"),
               "--workers", "1")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "e" / "eval.json").read_text())
    assert m["max_box_acc"] == float(expected["v1_max_box_acc"][1])  # 52.2222...: V1 at IoU 50
    assert m["max_box_acc_v2"] == float(expected["v2_max_box_acc_mean"])  # 59.6296...
    assert [m["box_acc_iou30"], m["box_acc_iou50"], m["box_acc_iou70"]] == expected["v2_max_box_acc"].tolist()
    assert m["best_threshold"] == float(expected["v1_best_thr"][1])
    assert m["best_threshold_v2"] == expected["v2_best_thr"].tolist()
    curves = pd.read_csv(tmp_path / "e" / "curves.csv")
    assert np.array_equal(curves["v1_iou50"].to_numpy(), expected["v1_box_acc"][:, 1])
    for j, d in enumerate((30, 50, 70)):
        assert np.array_equal(curves[f"v2_iou{d}"].to_numpy(), expected["v2_box_acc"][:, j])
    assert m["num_images"] == 90 and m["num_localized"] == 90 and m["num_extra_maps"] == 30  # the mask maps
    assert not {"top1", "top5", "top1_loc"} & set(m)  # no classification without predictions
    assert m["meta"]["map_shapes"] == {"224x224": 90}
    per_class = pd.read_csv(tmp_path / "e" / "per_class.csv")
    assert "top1" not in per_class and per_class["num_images"].sum() == 90


def test_golden_pxap_equals_the_reference(golden_root: tuple[Path, Path, dict], tmp_path: Path) -> None:
    root, maps, expected = golden_root
    report, meta, _ = run_maps_eval(MapsEvalSettings(maps=maps, data=str(root), split="val", workers=1), tmp_path / "e")
    assert report.metrics["pxap"] == pytest.approx(expected["pxap"], abs=1e-9)  # 41.574420...
    assert report.metrics["pxap"] == expected["pxap"]


@pytest.mark.slow
def test_golden_identical_for_any_worker_count(golden_root: tuple[Path, Path, dict], tmp_path: Path) -> None:
    root, maps, _ = golden_root
    outs = {}
    for workers in (1, 2, 3):
        for split in ("test", "val"):
            run_maps_eval(MapsEvalSettings(maps=maps, data=str(root), split=split, workers=workers),
                          tmp_path / f"{split}{workers}")
            out = tmp_path / f"{split}{workers}"
            outs[split, workers] = [(out / f).read_text() for f in ("eval.json", "curves.csv", "per_class.csv")
                                    if (out / f).exists()]  # the mask split has no boxes, so no curves
    for split in ("test", "val"):
        assert outs[split, 1] == outs[split, 2] == outs[split, 3]


def test_npz_archive_and_maps_of_another_size(golden_root: tuple[Path, Path, dict], tmp_path: Path,
                                              shared_dir: Path) -> None:
    """One .npz keyed by image id; maps at 112 x 112 get GT boxes resized to 112 as the reference resizes to 224."""
    root, maps, _ = golden_root
    box = np.load(shared_dir / "golden" / "box_inputs.npz")
    ids = open_split_targets(str(root), "test").ids
    half = {image_id: np.ascontiguousarray(m[::2, ::2]) for image_id, m in zip(ids, box["scoremaps"])}
    np.savez(tmp_path / "half.npz", **half)
    report, meta, _ = run_maps_eval(MapsEvalSettings(maps=tmp_path / "half.npz", data=str(root), split="test",
                                                     workers=1), tmp_path / "e")
    assert meta["map_shapes"] == {"112x112": 90}
    from saolctl.data.boxes import resize_boxes
    from saolctl.localization.evaluators import BoxEvaluator

    ev = BoxEvaluator(multi_contour=True)
    gts = [resize_boxes(box["gt_boxes_orig"][i, : box["gt_count"][i]], tuple(box["image_sizes"][i]), 112)
           for i in range(90)]
    ev.accumulate(np.stack([half[i] for i in ids]), gts)
    assert report.metrics["max_box_acc_v2"] == ev.compute().mean


@pytest.mark.slow
def test_predictions_add_top1_and_top1_loc(golden_root: tuple[Path, Path, dict], tmp_path: Path) -> None:
    root, maps, _ = golden_root
    targets = open_split_targets(str(root), "test")
    labels = [t.label for t in targets.images]
    preds = [lab if i % 4 else (lab + 1) % 3 for i, lab in enumerate(labels)]  # every fourth one wrong
    (tmp_path / "p.csv").write_text("image_id,class\n" + "".join(f"{i},{p}\n" for i, p in zip(targets.ids, preds)))
    (tmp_path / "p.json").write_text(json.dumps({i: str(p) for i, p in zip(targets.ids, preds)} | {"other.jpg": 0}))
    got = []
    for name in ("p.csv", "p.json"):
        report, meta, _ = run_maps_eval(MapsEvalSettings(maps=maps, data=str(root), split="test", workers=1,
                                                         predictions=tmp_path / name), tmp_path / f"out-{name}")
        got.append(report.metrics)
    assert got[0] == got[1] and meta["predictions_unused"] == 1
    m = got[0]
    assert m["top1"] == pytest.approx(100.0 * 67 / 90) and "top5" not in m
    assert 0 <= m["top1_loc"] <= m["gt_known_loc"]


# --------------------------------------------------------------------------------------------------
# bad maps: one error line naming the file, nothing written
# --------------------------------------------------------------------------------------------------


@pytest.fixture()
def small_root(tmp_path: Path) -> tuple[Path, Path]:
    """A 3-image WSOL ROOT without sizes file (tiny PNG headers give the sizes) and a valid map folder."""
    root, maps = tmp_path / "root", tmp_path / "maps"
    ids = [f"a/{i}.png" for i in range(3)]
    for i, image_id in enumerate(ids):
        (root / "images" / "a").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40 + 10 * i, 30)).save(root / "images" / image_id)
        (maps / "a").mkdir(parents=True, exist_ok=True)
        yy, xx = np.mgrid[:30, :40]
        np.save(maps / f"{image_id}.npy", np.exp(-((xx - 20) ** 2 + (yy - 15) ** 2) / 60.0).astype(np.float32))
    _write(root / "metadata" / "test" / "image_ids.txt", ids)
    _write(root / "metadata" / "test" / "class_labels.txt", [f"{i},{k % 2}" for k, i in enumerate(ids)])
    _write(root / "metadata" / "test" / "localization.txt", [f"{i},10,5,29,24" for i in ids])
    return root, maps


def _run(root: Path, maps: Path, out: Path, *extra: str):
    return invoke("eval", "--maps", str(maps), "--data", str(root), "--out", str(out), "--workers", "1", *extra)


def test_small_root_reads_sizes_from_image_headers(small_root: tuple[Path, Path], tmp_path: Path) -> None:
    root, maps = small_root
    targets = open_split_targets(str(root), "test")
    assert [t.frame for t in targets.images] == [(40, 30), (50, 30), (60, 30)]
    r = _run(root, maps, tmp_path / "ok")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "ok" / "eval.json").read_text())["num_localized"] == 3


@pytest.mark.parametrize("case,message", [
    ("nan", "contains NaN"),
    ("inf", "contains inf"),
    ("range", "values in [-0.5, 1]: a map must lie in [0, 1]"),
    ("rank", "has shape (1, 30, 40): a map must be 2-D"),
    ("dtype", "has dtype int64"),
    ("missing", "1 of 3 images have no map"),
    ("pickled", "holds a pickled object array"),
    ("text", "is not a .npy file"),
])
def test_bad_map_is_one_line_and_writes_nothing(small_root: tuple[Path, Path], tmp_path: Path, case: str,
                                                message: str) -> None:
    root, maps = small_root
    target = maps / "a" / "2.png.npy"
    good = np.load(target)
    if case == "nan":
        good[3, 4] = np.nan
    elif case == "inf":
        good[3, 4] = np.inf
    elif case == "range":
        good[0, 0] = -0.5
    bad = {"rank": good[None], "dtype": np.ones(good.shape, np.int64)}.get(case, good)
    if case == "missing":
        target.unlink()
    elif case == "pickled":
        np.save(target, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif case == "text":
        target.write_text("not numpy")
    else:
        np.save(target, bad)
    out = tmp_path / "out"
    r = _run(root, maps, out)
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], r.output
    assert "a/2.png" in lines[-1]  # names the file
    assert not out.exists()


def test_normalize_rescales_out_of_range_maps(small_root: tuple[Path, Path], tmp_path: Path) -> None:
    root, maps = small_root
    for p in (maps / "a").iterdir():
        np.save(p, np.load(p).astype(np.float64) * 7.0 - 2.0)
    assert _run(root, maps, tmp_path / "refused").exit_code == 2
    r = _run(root, maps, tmp_path / "n", "--normalize")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "n" / "eval.json").read_text())["meta"]["normalize"] is True


def test_extra_map_files_are_counted_not_scored(small_root: tuple[Path, Path], tmp_path: Path) -> None:
    root, maps = small_root
    np.save(maps / "a" / "stray.npy", np.zeros((4, 4), np.float32))
    np.save(maps / "b.npy", np.full((4, 4), 2.0))  # invalid, but not of the split: never read
    r = _run(root, maps, tmp_path / "o")
    assert r.exit_code == 0, r.output
    assert "2 map files name no image of the split" in r.output
    assert json.loads((tmp_path / "o" / "eval.json").read_text())["num_extra_maps"] == 2


def test_map_folder_accepts_the_id_without_extension(small_root: tuple[Path, Path]) -> None:
    _, maps = small_root
    for p in (maps / "a").iterdir():
        p.rename(p.with_name(p.name.replace(".png.npy", ".npy")))
    folder = open_map_folder(maps, [f"a/{i}.png" for i in range(3)])
    assert [Path(r.path).name for r in folder.refs] == ["0.npy", "1.npy", "2.npy"] and folder.extra == []
    with pytest.raises(MapError, match="no map"):
        open_map_folder(maps, ["a/9.png"])


def test_maps_option_conflicts_are_one_line(small_root: tuple[Path, Path], tmp_path: Path) -> None:
    root, maps = small_root
    r = invoke("eval", "--maps", str(maps), "--ckpt", str(tmp_path / "x.pt"))
    assert r.exit_code == 2 and "takes no --ckpt" in r.output
    r = invoke("eval", "--maps", str(maps))
    assert r.exit_code == 2 and "give --data ROOT" in r.output
    r = invoke("eval", "--maps", str(tmp_path / "nope"), "--data", str(root))
    assert r.exit_code == 2 and "maps not found" in r.output


# --------------------------------------------------------------------------------------------------
# eval --ckpt --save-maps -> eval --maps: the same localization numbers
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("maps_ckpt")
    cfg = root / "tiny.json"
    cfg.write_text(json.dumps({"digits": TINY, "batch_size": 32}))
    r = invoke("train", "--method", "cam", "--epochs", "1", "--config", str(cfg), "--device", "cpu",
               "--out", str(root / "cam"))
    assert r.exit_code == 0, r.output
    return root / "cam" / "last.pt"


LOC_KEYS = ("max_box_acc", "max_box_acc_v2", "box_acc_iou30", "box_acc_iou50", "box_acc_iou70", "best_threshold",
            "best_threshold_v2", "gt_known_loc", "pxap", "num_localized", "num_without_boxes", "num_images")


def test_save_maps_round_trip_on_the_embedded_digits(tiny_ckpt: Path, tmp_path: Path) -> None:
    ckpt_out, maps = tmp_path / "ckpt", tmp_path / "maps"
    r = invoke("eval", "--ckpt", str(tiny_ckpt), "--save-maps", str(maps), "--out", str(ckpt_out))
    assert r.exit_code == 0, r.output
    saved = sorted(p.relative_to(maps).as_posix() for p in maps.rglob("*.npy"))
    assert saved == [f"test/{i:05d}.png.npy" for i in range(48)]
    one = np.load(maps / saved[0])
    assert one.dtype == np.float32 and one.shape == (48, 48)  # the digits recipe evaluates at 48 px
    a = json.loads((ckpt_out / "eval.json").read_text())
    # --data defaults to what --save-maps recorded (the checkpoint's digits settings)
    r = invoke("eval", "--maps", str(maps), "--out", str(tmp_path / "m"), "--workers", "2")
    assert r.exit_code == 0, r.output
    b = json.loads((tmp_path / "m" / "eval.json").read_text())
    assert {k: a[k] for k in LOC_KEYS} == {k: b[k] for k in LOC_KEYS}
    assert b["meta"]["method"] == "cam" and b["meta"]["split"] == "test"
    assert pd.read_csv(tmp_path / "m" / "curves.csv").equals(pd.read_csv(ckpt_out / "curves.csv"))
    # the same folder scored against the digits written to disk (no images needed, same ids)
    written = write_digits(tmp_path / "digits", DigitsConfig(**TINY), seed=0)
    for p in (written / "images").rglob("*.png"):
        p.unlink()
    r = invoke("eval", "--maps", str(maps), "--data", str(written), "--out", str(tmp_path / "w"), "--workers", "1")
    assert r.exit_code == 0, r.output
    c = json.loads((tmp_path / "w" / "eval.json").read_text())
    assert {k: a[k] for k in LOC_KEYS} == {k: c[k] for k in LOC_KEYS}


def test_ckpt_eval_identical_for_any_worker_count(tiny_ckpt: Path, tmp_path: Path) -> None:
    outs = []
    for workers in ("0", "2"):
        r = invoke("eval", "--ckpt", str(tiny_ckpt), "--workers", workers, "--out", str(tmp_path / workers))
        assert r.exit_code == 0, r.output
        m = json.loads((tmp_path / workers / "eval.json").read_text())
        outs.append(({k: v for k, v in m.items() if k != "meta"}, (tmp_path / workers / "curves.csv").read_text()))
    assert outs[0] == outs[1]
