"""Write a CUB-200-2011 root holding only its first K classes (for studies that cannot afford all of them).

The subset keeps CUB's own files and ids (images.txt, image_class_labels.txt, train_test_split.txt,
bounding_boxes.txt, classes.txt) restricted to classes 1..K, and links to the source's images/ folder, so
`saolctl --data OUT` reads it as CUB with the official train/test split (val carved out of train as usual).

    python bench/cub_subset.py /data/CUB_200_2011 /data/cub20 --classes 20
"""

from __future__ import annotations

import argparse
from pathlib import Path


def keep_lines(src: Path, ids: set[str]) -> list[str]:
    """Return the lines of a CUB table whose first field is one of ids."""
    return [line for line in src.read_text().splitlines() if (line.split(maxsplit=1) or [""])[0] in ids]


def write_subset(root: Path, out: Path, classes: int) -> tuple[int, int]:
    """Write the first ``classes`` classes of the CUB root ``root`` to ``out``; return (images, test images)."""
    labels = [line.split() for line in (root / "image_class_labels.txt").read_text().splitlines() if line.strip()]
    ids = {i for i, c in labels if int(c) <= classes}
    out.mkdir(parents=True, exist_ok=True)
    for name in ("images.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt"):
        (out / name).write_text("\n".join(keep_lines(root / name, ids)) + "\n")
    kept = [line for line in (root / "classes.txt").read_text().splitlines() if line.strip() and int(line.split()[0]) <= classes]
    (out / "classes.txt").write_text("\n".join(kept) + "\n")
    link = out / "images"
    if not link.exists():
        link.symlink_to((root / "images").resolve(), target_is_directory=True)
    test = sum(1 for line in keep_lines(root / "train_test_split.txt", ids) if line.split()[1] == "0")
    return len(ids), test


def main() -> None:
    """Parse the arguments and write the subset."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path, help="a CUB root (the folder holding images.txt)")
    p.add_argument("out", type=Path)
    p.add_argument("--classes", type=int, default=20)
    args = p.parse_args()
    n, test = write_subset(args.root, args.out, args.classes)
    print(f"wrote {args.out}: {args.classes} classes, {n} images, {test} of them test")


if __name__ == "__main__":
    main()
