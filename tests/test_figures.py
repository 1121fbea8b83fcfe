"""The comparison figures stay readable with many methods: one colour per method, one line style per map kind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from saolctl.report.figures import curve_styles, plot_curves

LABELS = ["cam (cam)", "cutmix (cam)", "has (cam)", "acol (fused)", "acol (branch_a)", "acol (branch_b)",
          "spg (cam)", "adl (cam)", "abn (attention)", "abn (class)", "saol (contrib)", "saol (attention)"]


def test_each_method_has_its_own_colour_and_each_of_its_kinds_its_own_style() -> None:
    styles = curve_styles(LABELS)
    colours = {label.split(" (")[0]: styles[label][0] for label in LABELS}
    assert len(set(colours.values())) == 8  # eight methods, eight colours (tab10 would repeat after ten)
    assert styles["acol (fused)"][0] == styles["acol (branch_b)"][0]
    assert len({styles[f"acol ({k})"][1] for k in ("fused", "branch_a", "branch_b")}) == 3
    assert styles["cam (cam)"][1] == styles["saol (contrib)"][1] == "-"  # a method's default kind is solid


def test_many_curves_share_one_legend_below_the_panels(tmp_path: Path) -> None:
    t = np.arange(0, 1, 0.01)
    curves = {label: pd.DataFrame({"threshold": t, "v1_iou50": 50 * t, "v2_iou30": 90 * t, "v2_iou50": 50 * t,
                                   "v2_iou70": 10 * t}) for label in LABELS}
    few, many = plot_curves(dict(list(curves.items())[:3]), tmp_path / "few.png"), plot_curves(curves, tmp_path / "many.png")
    h_few, h_many = Image.open(few).size[1], Image.open(many).size[1]
    assert h_many > h_few  # the shared legend gets rows of its own instead of covering the curves
