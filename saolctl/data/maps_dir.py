"""Folders of score maps in wsolevaluation's convention: find, read, check and write them.

A folder holds one ``.npy`` per image, ``DIR/<image_id>.npy`` (sub-folders follow the id's slashes; the
reference's loader appends ``.npy`` to the id, so ``test/00001.png`` is ``test/00001.png.npy``; the id with
its image extension dropped, ``test/00001.npy``, as the reference's docstring has it, is accepted too), or
one ``.npz`` archive keyed by image id. A map is a 2-D float32 or float64 array in [0, 1], of any size;
it is read with ``allow_pickle=False``. Every problem is one ``MapError`` line naming the file.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from saolctl.data.errors import DataError
from saolctl.data.images import IMAGE_EXTENSIONS

NPY_MAGIC = b"\x93NUMPY"
MANIFEST = "saolctl_maps.json"  # written beside the maps by `eval --save-maps`: what they are maps of


class MapError(DataError):
    """A map folder or map file that cannot be scored; the message is one line naming the file."""


@dataclass(frozen=True)
class MapRef:
    """Where one image's map is: a ``.npy`` file, or a key of an ``.npz`` archive."""

    path: str
    key: str | None = None

    def __str__(self) -> str:
        return self.path if self.key is None else f"{self.path}[{self.key}]"


@dataclass(frozen=True)
class MapFolder:
    """The maps of a split's images, in the split's order, and the map files that match no image."""

    root: Path
    refs: list[MapRef]  # one per image id
    extra: list[str]  # files (or npz keys) that are no image id of the split: counted, not evaluated


def _stem_id(image_id: str) -> str | None:
    """Return the id without its image extension (the docstring form of the reference), or None."""
    low = image_id.lower()
    for ext in IMAGE_EXTENSIONS:
        if low.endswith(ext):
            return image_id[: -len(ext)]
    return None


def _npy_files(root: Path) -> set[str]:
    """Return the ``.npy`` files under a folder, as paths relative to it (posix), hidden files skipped."""
    found: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = Path(dirpath).relative_to(root)
        found.update((rel / f).as_posix() for f in filenames if f.endswith(".npy") and not f.startswith("."))
    return found


def _match(image_ids: list[str], available: set[str], suffix: str) -> tuple[list[str | None], list[str]]:
    """Return the entry of each id (``id + suffix``, else the stem form; None when missing) and the unused entries."""
    chosen: list[str | None] = []
    for image_id in image_ids:
        entry = image_id + suffix
        if entry not in available:
            stem = _stem_id(image_id)
            entry = stem + suffix if stem is not None and stem + suffix in available else None  # type: ignore[assignment]
        chosen.append(entry)
    used = {c for c in chosen if c is not None}
    return chosen, sorted(available - used)


def _missing_error(image_ids: list[str], chosen: list[str | None], where: str, suffix: str) -> MapError:
    """Return the error naming the first image id without a map."""
    missing = [i for i, c in zip(image_ids, chosen) if c is None]
    return MapError(f"{len(missing)} of {len(image_ids)} images have no map in {where} "
                    f"(first: {missing[0]}, looked for {missing[0]}{suffix})")


def _open_npz(path: Path, image_ids: list[str]) -> MapFolder:
    """Return the maps of an ``.npz`` archive keyed by image id."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise MapError(f"cannot read map archive {path}: {type(err).__name__}: {err}") from None
    chosen, extra = _match(image_ids, keys, "")
    if any(c is None for c in chosen):
        raise _missing_error(image_ids, chosen, str(path), "")
    return MapFolder(path, [MapRef(str(path), key) for key in chosen], extra)  # type: ignore[arg-type]


def open_map_folder(path: str | Path, image_ids: list[str]) -> MapFolder:
    """Find the map of every image id in a folder of ``.npy`` files or an ``.npz`` archive (MapError if one is missing)."""
    root = Path(path)
    if not root.exists():
        raise MapError(f"maps not found: {root}")
    if root.is_file():
        if root.suffix != ".npz":
            raise MapError(f"--maps must be a folder of .npy files or one .npz archive, got {root}")
        return _open_npz(root, image_ids)
    files = _npy_files(root)
    if not files:
        archives = sorted(p for p in root.iterdir() if p.suffix == ".npz" and not p.name.startswith("."))
        if len(archives) == 1:
            return _open_npz(archives[0], image_ids)
        raise MapError(f"no .npy map files in {root}" + (f" and {len(archives)} .npz archives" if archives else ""))
    chosen, extra = _match(image_ids, files, ".npy")
    if any(c is None for c in chosen):
        raise _missing_error(image_ids, chosen, str(root), ".npy")
    return MapFolder(root, [MapRef(str(root / c)) for c in chosen], extra)  # type: ignore[operator]


def _read_array(ref: MapRef, archive: np.lib.npyio.NpzFile | None = None) -> np.ndarray:
    """Read the array of a map reference without ever unpickling (MapError naming the file)."""
    try:
        if ref.key is not None:
            if archive is not None:
                return archive[ref.key]
            with np.load(ref.path, allow_pickle=False) as opened:
                return opened[ref.key]
        with open(ref.path, "rb") as f:
            if f.read(len(NPY_MAGIC)) != NPY_MAGIC:
                raise MapError(f"map {ref} is not a .npy file (no NumPy header)")
        return np.load(ref.path, allow_pickle=False)
    except MapError:
        raise
    except ValueError as err:
        if "pickle" in str(err):
            raise MapError(f"map {ref} holds a pickled object array (refused: maps are read with "
                           "allow_pickle=False; save a float array)") from None
        raise MapError(f"cannot read map {ref}: {err}") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise MapError(f"cannot read map {ref}: {type(err).__name__}: {err}") from None


def check_map(arr: np.ndarray, where: object, normalize: bool = False) -> np.ndarray:
    """Return a map (H, W) fit for scoring, or raise MapError: float32/64, 2-D, finite, in [0, 1] (or normalised)."""
    if arr.dtype not in (np.float32, np.float64):
        raise MapError(f"map {where} has dtype {arr.dtype}: a map must be float32 or float64")
    if arr.ndim != 2:
        raise MapError(f"map {where} has shape {arr.shape}: a map must be 2-D (height, width)")
    if arr.size == 0:
        raise MapError(f"map {where} is empty (shape {arr.shape})")
    if not np.isfinite(arr).all():
        bad = "NaN" if np.isnan(arr).any() else "inf"
        raise MapError(f"map {where} contains {bad}: a map must hold finite values in [0, 1]")
    low, high = arr.min(), arr.max()
    if normalize:
        wide = arr.astype(np.float64)  # (H, W) min-max normalised as the reference's normalize_scoremap
        span = float(high) - float(low)
        return (wide - float(low)) / span if span > 0 else np.zeros_like(wide)
    if low < 0 or high > 1:
        raise MapError(f"map {where} has values in [{low:.6g}, {high:.6g}]: a map must lie in [0, 1] "
                       "(--normalize min-max normalises every map instead)")
    return arr


def load_map(ref: MapRef, normalize: bool = False) -> np.ndarray:
    """Read and check one map (H, W); MapError naming the file when it cannot be scored."""
    return check_map(_read_array(ref), ref, normalize)


def load_maps(refs: list[MapRef], normalize: bool = False) -> list[np.ndarray]:
    """Read and check maps (H_i, W_i) in order, opening an ``.npz`` archive once for all its keys."""
    archives = {r.path for r in refs if r.key is not None}
    if not archives:
        return [load_map(r, normalize) for r in refs]
    opened: dict[str, np.lib.npyio.NpzFile] = {}
    try:
        for path in sorted(archives):
            try:
                opened[path] = np.load(path, allow_pickle=False)
            except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
                raise MapError(f"cannot read map archive {path}: {type(err).__name__}: {err}") from None
        return [check_map(_read_array(r, opened.get(r.path)), r, normalize) for r in refs]
    finally:
        for archive in opened.values():
            archive.close()


def map_path(root: Path, image_id: str) -> Path:
    """Return where the map of an image id goes in a folder (``root/<image_id>.npy``); refuses ids leaving it."""
    rel = PurePosixPath(image_id)
    if rel.is_absolute() or ".." in rel.parts or not image_id.strip():
        raise MapError(f"image id {image_id!r} cannot name a file under {root}")
    return root / (image_id + ".npy")


def save_map(root: Path, image_id: str, score_map: np.ndarray) -> None:
    """Write one map (H, W) as ``root/<image_id>.npy`` (folders created)."""
    path = map_path(root, image_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, score_map, allow_pickle=False)


class MapWriter:
    """Writes the maps of one kind that an evaluation scored, named by image id (``--save-maps``)."""

    def __init__(self, root: Path, image_ids: list[str], kind: str) -> None:
        self.root = Path(root)
        self.image_ids = image_ids  # dataset index -> image id
        self.kind = kind
        self.written = 0

    def __call__(self, indices: np.ndarray, kind: str, maps: np.ndarray) -> None:
        """Write maps (B, H, W) of dataset samples ``indices`` (B,) when they are of the saved kind."""
        if kind != self.kind:
            return
        for index, score_map in zip(indices, maps):
            save_map(self.root, self.image_ids[int(index)], score_map)
            self.written += 1

    def write_manifest(self, info: dict[str, object]) -> None:
        """Write ``saolctl_maps.json``: what the maps are of (data, split, map kind, ...), for ``eval --maps``."""
        self.root.mkdir(parents=True, exist_ok=True)
        payload = {"format": "saolctl maps", "maps": self.written, **info}
        (self.root / MANIFEST).write_text(json.dumps(payload, indent=2) + "\n")


def read_manifest(path: str | Path) -> dict[str, object] | None:
    """Return the ``saolctl_maps.json`` of a map folder, or None when it has none."""
    file = Path(path) / MANIFEST
    if not file.is_file():
        return None
    try:
        info = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise MapError(f"cannot read {file}: {err}") from None
    if not isinstance(info, dict):
        raise MapError(f"{file} must hold a JSON object")
    return info
