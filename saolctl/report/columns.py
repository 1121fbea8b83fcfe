"""Which metrics each table shows, in which order, and their short headers: defined once for every command."""

from __future__ import annotations

BOX_METRICS = ("max_box_acc", "max_box_acc_v2", "box_acc_iou30", "box_acc_iou50", "box_acc_iou70")
LOCALIZATION_METRICS = (*BOX_METRICS, "gt_known_loc", "top1_loc", "pxap")  # percent, higher is better
VALIDATION_COLUMNS = ("val_top1", "val_max_box_acc_v2", "val_pxap", "val_best_threshold")  # compare: on val

# `eval`'s printed table (eval.json holds every metric)
EVAL_HEADLINE = ("top1", "top5", "gt_known_loc", "top1_loc", *BOX_METRICS, "best_threshold", "pxap", "num_images",
                 "num_localized", "num_without_boxes", "num_skipped_unreadable")

# `compare`: compare.csv / compare.json columns, report.md's table, and the two printed tables
COMPARE_COLUMNS = ("method", "map", "default_map", "top1", "top5", *LOCALIZATION_METRICS, *VALIDATION_COLUMNS,
                   "num_images", "num_localized")
REPORT_COLUMNS = ("method", "map", "top1", *LOCALIZATION_METRICS, "val_max_box_acc_v2")
COMPARE_TABLES = (  # each part fits an 80-column terminal or log file uncut
    ("classification and boxes", ("top1", "max_box_acc", "max_box_acc_v2", "pxap")),
    ("localization detail", ("box_acc_iou30", "box_acc_iou50", "box_acc_iou70", "gt_known_loc", "top1_loc")),
)
SHORT_HEADERS = {"top1": "top1", "max_box_acc": "MaxBoxAcc", "max_box_acc_v2": "MaxBoxAccV2", "pxap": "PxAP",
                 "box_acc_iou30": "IoU30", "box_acc_iou50": "IoU50", "box_acc_iou70": "IoU70",
                 "gt_known_loc": "GT-known", "top1_loc": "Top1Loc"}
