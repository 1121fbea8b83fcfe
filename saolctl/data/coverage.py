"""Whether a training split and a validation split cover the same classes."""

from __future__ import annotations

import numpy as np


def class_coverage_warning(class_names: list[str], train_labels: np.ndarray, val_labels: np.ndarray) -> str | None:
    """Return a one-line warning naming the classes without training images and those without validation images."""
    k = len(class_names)
    no_train = [class_names[i] for i in np.flatnonzero(np.bincount(train_labels, minlength=k) == 0)]
    no_val = [class_names[i] for i in np.flatnonzero(np.bincount(val_labels, minlength=k) == 0)]
    if not no_train and not no_val:
        return None
    parts = []
    if no_train:
        parts.append(f"classes without training images (never learned): {', '.join(no_train)}")
    if no_val:
        parts.append(f"classes without validation images (not validated): {', '.join(no_val)}")
    return "warning: train and val have different class sets; " + "; ".join(parts)
