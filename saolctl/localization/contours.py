"""Contours of thresholded score maps, as OpenCV's ``findContours`` sees them, without OpenCV.

The WSOL reference protocol (clovaai/wsolevaluation) quantises a score map to 8 bits, thresholds it at
``int(tau * max8)`` (foreground: strictly greater) and asks OpenCV for the contours of the foreground
(``RETR_TREE``): one contour per 8-connected foreground component, one per hole (a 4-connected background
region that cannot reach the image border). A component's box is its pixel bounding box; a hole's box is
the hole's bounding box grown by one pixel (its contour runs through the surrounding foreground). Both are
reported as ``(x, y, min(x + w, W - 1), min(y + h, H - 1))``. MaxBoxAcc (V1) keeps only the contour of
largest OpenCV ``contourArea`` (shoelace area of the traced outer border, which equals
``#(2x2 windows fully inside the filled component) + 0.5 * #(windows with exactly 3 pixels inside)``),
ties going to the contour OpenCV lists first (the top-level component whose first raster pixel comes
last). See docs/metrics.md for the rules and how they were checked.

Two ways to get the contours:

- one threshold (:func:`contours_at_level`, :func:`boxes_at_threshold`, :func:`largest_box`): labels the
  foreground and background with ``scipy.ndimage`` and returns the boxes in OpenCV's order;
- every threshold at once (:func:`level_candidates`): component trees of the foreground (8-connected) and
  of the background (4-connected, with the outside as one extra node) built over "steepest-ascent regions",
  which gives every contour's box at all 255 integer levels in one pass (see :class:`_Tree`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import minimum_spanning_tree

from saolctl.errors import UserError

__all__ = [
    "ContourSet",
    "LevelCandidates",
    "boxes_at_threshold",
    "contours_at_level",
    "integer_thresholds",
    "largest_box",
    "level_candidates",
    "quantize",
]

_EIGHT = np.ones((3, 3), dtype=bool)
_FOUR = ndimage.generate_binary_structure(2, 1)
_NUM_LEVELS = 255  # integer thresholds 0..254 can leave foreground (q <= 255)


# --------------------------------------------------------------------------------------------------
# Quantisation and thresholds
# --------------------------------------------------------------------------------------------------


def quantize(score_map: np.ndarray) -> np.ndarray:
    """Return the reference's 8-bit map ``floor(255 * m)`` (float64 product, truncated) as uint8 (H, W)."""
    return (np.asarray(score_map, dtype=np.float64) * 255).astype(np.uint8)


def integer_thresholds(thresholds: np.ndarray, max8: int) -> np.ndarray:
    """Return ``int(tau * max8)`` for every threshold tau (float64 product, truncated) as int64 (T,)."""
    return (np.asarray(thresholds, dtype=np.float64) * float(max8)).astype(np.int64)


def _outer_box(x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray, width: int, height: int) -> np.ndarray:
    """Return the reference's box of a component with inclusive pixel extent x0..x1, y0..y1 as (n, 4)."""
    return np.stack([x0, y0, np.minimum(x1 + 1, width - 1), np.minimum(y1 + 1, height - 1)], axis=1).astype(np.int64)


def _hole_box(x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray, width: int, height: int) -> np.ndarray:
    """Return the reference's box of a hole with inclusive pixel extent x0..x1, y0..y1 as (n, 4)."""
    return np.stack([x0 - 1, y0 - 1, np.minimum(x1 + 2, width - 1), np.minimum(y1 + 2, height - 1)], axis=1).astype(
        np.int64
    )


# --------------------------------------------------------------------------------------------------
# One threshold: labels, OpenCV order
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContourSet:
    """The contours of one binary image, in OpenCV's ``RETR_TREE`` order.

    boxes: (n, 4) int64 reference boxes; is_hole: (n,) bool; parent: (n,) int64 index of the enclosing
    contour or -1; area: (n,) float64 OpenCV ``contourArea`` of outer contours (NaN for holes).
    """

    boxes: np.ndarray
    is_hole: np.ndarray
    parent: np.ndarray
    area: np.ndarray


def _filled_area(component: np.ndarray) -> float:
    """Return OpenCV's contourArea of the outer border of the single component in a (h, w) bool crop."""
    background = np.pad(~component, 1, constant_values=True)  # (h+2, w+2)
    labels, _ = ndimage.label(background, _FOUR)
    filled = ~(labels == labels[0, 0])  # component plus everything it encloses
    f = filled.astype(np.int8)
    count = f[:-1, :-1] + f[:-1, 1:] + f[1:, :-1] + f[1:, 1:]  # pixels of each 2x2 window
    return float((count == 4).sum()) + 0.5 * float((count == 3).sum())


def _first_pixels(labels: np.ndarray, count: int) -> np.ndarray:
    """Return the first raster index of each label 1..count of a flat label array (index 0 unused)."""
    first = np.full(count + 1, -1, np.int64)
    idx = np.flatnonzero(labels)
    found, at = np.unique(labels[idx], return_index=True)
    first[found] = idx[at]
    return first


def contours_at_level(q: np.ndarray, level: int, areas: bool = True) -> ContourSet:
    """Return the contours of ``q > level`` (q: (H, W) integer map) in OpenCV's order, with boxes and areas."""
    q = np.asarray(q)
    height, width = q.shape
    fg = q > level  # (H, W)
    comp, n_comp = ndimage.label(fg, _EIGHT)
    bg_labels, _ = ndimage.label(np.pad(~fg, 1, constant_values=True), _FOUR)  # (H+2, W+2)
    outside = bg_labels[0, 0]
    bg = bg_labels[1:-1, 1:-1]
    n_bg = int(bg.max()) if bg.size else 0
    if n_comp == 0:
        empty = np.zeros((0, 4), np.int64)
        return ContourSet(empty, np.zeros(0, bool), np.zeros(0, np.int64), np.zeros(0))
    flat_c, flat_b = comp.ravel(), bg.ravel()
    c_first = _first_pixels(flat_c, n_comp)  # (n_comp + 1,) first raster pixel per label
    h_first = _first_pixels(flat_b, n_bg)
    hole_ids = np.setdiff1d(np.arange(1, n_bg + 1), [outside])
    # tree: a component's parent is the hole left of its first pixel (or the frame); a hole's parent is the
    # component left of its first pixel. Siblings are listed in reverse discovery (raster) order.
    children: dict[tuple[str, int], list[tuple[int, tuple[str, int]]]] = {}
    for c in range(1, n_comp + 1):
        i = int(c_first[c])
        left = int(flat_b[i - 1]) if i % width else outside
        key = ("frame", 0) if left == outside else ("hole", left)
        children.setdefault(key, []).append((i, ("comp", c)))
    for h in hole_ids.tolist():
        i = int(h_first[h])
        children.setdefault(("comp", int(flat_c[i - 1])), []).append((i, ("hole", h)))
    order: list[tuple[str, int]] = []
    parents: list[int] = []
    stack = [(("frame", 0), -1)]
    while stack:  # depth-first, pre-order
        node, node_pos = stack.pop()
        if node[0] != "frame":
            parents.append(node_pos)
            order.append(node)
            node_pos = len(order) - 1
        kids = sorted(children.get(node, []), reverse=True)
        stack.extend((kid, node_pos) for _, kid in reversed(kids))
    c_slices = ndimage.find_objects(comp)
    h_slices = ndimage.find_objects(bg)
    comp_area = _top_level_areas(comp, n_comp, bg_labels == outside) if areas else None
    boxes = np.zeros((len(order), 4), np.int64)
    is_hole = np.zeros(len(order), bool)
    area = np.full(len(order), np.nan)
    for k, (kind, i) in enumerate(order):
        sl = c_slices[i - 1] if kind == "comp" else h_slices[i - 1]
        ext = [np.array([e]) for e in (sl[1].start, sl[0].start, sl[1].stop - 1, sl[0].stop - 1)]
        if kind == "comp":
            boxes[k] = _outer_box(*ext, width, height)[0]
            if comp_area is not None:
                area[k] = comp_area[i] if comp_area[i] >= 0 else _filled_area(comp[sl] == i)
        else:
            boxes[k] = _hole_box(*ext, width, height)[0]
            is_hole[k] = True
    return ContourSet(boxes, is_hole, np.asarray(parents, np.int64), area)


def _top_level_areas(comp: np.ndarray, n_comp: int, outside: np.ndarray) -> np.ndarray:
    """Return the contourArea of every top-level component (n_comp + 1,), -1 for components in holes.

    comp: (H, W) component labels; outside: (H+2, W+2) the background region that reaches the border.
    Everything not outside is a top-level component with its holes filled; a 2x2 window with 4 (3) such
    pixels adds 1 (1/2) to the area of the component it lies in.
    """
    filled = ~outside  # (H+2, W+2)
    parts, _ = ndimage.label(filled, _EIGHT)  # one part per top-level component
    f = filled.astype(np.int8)
    count = f[:-1, :-1] + f[:-1, 1:] + f[1:, :-1] + f[1:, 1:]
    owner = np.maximum(np.maximum(parts[:-1, :-1], parts[:-1, 1:]), np.maximum(parts[1:, :-1], parts[1:, 1:]))
    weight = (count == 4) + 0.5 * (count == 3)
    part_area = np.bincount(owner.ravel(), weights=weight.ravel(), minlength=int(parts.max()) + 1)
    inner = parts[1:-1, 1:-1]  # (H, W)
    fg = comp > 0
    touching = fg & (outside[:-2, 1:-1] | outside[2:, 1:-1] | outside[1:-1, :-2] | outside[1:-1, 2:])
    area = np.full(n_comp + 1, -1.0)
    area[comp[touching]] = part_area[inner[touching]]  # top-level: 4-adjacent to the outside region
    return area


def _largest_index(contours: ContourSet) -> int:
    """Return the index of the first contour of maximal area (Python's ``max`` rule), or -1."""
    if len(contours.boxes) == 0:
        return -1
    area = np.where(contours.is_hole, -1.0, contours.area)  # a hole never beats its own component
    return int(np.argmax(area))


def boxes_at_threshold(score_map: np.ndarray, tau: float, multi_contour: bool = True) -> np.ndarray:
    """Return the reference's candidate boxes (n, 4) of one (H, W) map at threshold tau, in OpenCV order."""
    q = quantize(score_map)
    contours = contours_at_level(q, int(integer_thresholds(np.array([tau]), int(q.max()))[0]), areas=not multi_contour)
    if len(contours.boxes) == 0:
        return np.zeros((1, 4), np.int64)
    if multi_contour:
        return contours.boxes
    return contours.boxes[[_largest_index(contours)]]


def largest_box(score_map: np.ndarray, tau: float) -> np.ndarray:
    """Return the MaxBoxAcc (V1) box (4,) of one (H, W) map at threshold tau: the largest contour's box."""
    return boxes_at_threshold(score_map, tau, multi_contour=False)[0]


# --------------------------------------------------------------------------------------------------
# Every threshold at once: component trees over steepest-ascent regions
# --------------------------------------------------------------------------------------------------
#
# For an integer map v and a level t, FG_t = {v > t}. Every pixel points to the neighbour (or itself) of
# largest key, keys being a strict total order that refines v; following the pointers climbs to a local
# maximum of the key (a region's root). All pixels on that path have v >= v[p], so within one region the
# pixels above any level stay connected: a component of FG_t is a union of region pieces, and two pieces
# touch when some adjacent pixel pair across their regions has min(v) > t. Kruskal over region pairs
# (largest saddle first) yields the component tree: each node is alive on an interval of levels
# [lo, hi]. A pixel joins the tree at level v - 1 in the node alive then ("entry node"); the pixels of a
# node at level t are those of its descendants plus its own entries at levels >= t.

_NO_PIXEL = 1 << 40  # neutral element for minima (anything larger than a coordinate)
_TABLE_REGIONS = 48  # up to this many regions, node extents come from per-region row/column tables
_MASKED_REGIONS = 6  # up to this many, the tables come from one masked pass per region


@dataclass(frozen=True)
class _KeySpec:
    """Bit layout of the pixel order keys: value (8 bits) | tie-break | pixel index.

    32-bit keys (8-bit tie-break) for maps of at most 65536 pixels, else 64-bit keys (30-bit tie-break):
    the key arrays are the largest temporaries and memory traffic dominates the run time.
    """

    dtype: type
    idx_bits: int
    tie_bits: int

    @staticmethod
    def for_size(n: int) -> _KeySpec:
        """Return the layout for a map of n pixels."""
        if n <= 1 << 16:
            return _KeySpec(np.uint32, 16, 8)
        if n <= 1 << 25:
            return _KeySpec(np.int64, 25, 30)
        raise UserError(f"score map too large for the level evaluator: {n} pixels")

    @property
    def val_shift(self) -> int:
        """Return the position of the value bits."""
        return self.idx_bits + self.tie_bits

    @property
    def idx_mask(self) -> int:
        """Return the mask of the pixel-index bits."""
        return (1 << self.idx_bits) - 1

    @property
    def below_all(self) -> int:
        """Return a padding key that no pixel's key is below."""
        return 0 if self.dtype is np.uint32 else -1

    def above_all(self, index: int) -> int:
        """Return a key above every pixel's key whose index bits hold ``index`` (the outside)."""
        total = 32 if self.dtype is np.uint32 else 63
        return ((1 << total) - (1 << self.idx_bits)) | index


def _tie_break(scaled: np.ndarray, spec: _KeySpec) -> np.ndarray:
    """Return 30 tie-break bits (H, W) that order pixels by their score (64-bit layout only).

    scaled: the float64 product 255 * m the 8-bit map was truncated from.
    """
    m32 = (scaled / 255.0).astype(np.float32)  # non-negative floats order like their bit patterns
    return m32.view(np.uint32).astype(spec.dtype)


def _key_base(values: np.ndarray, tie: np.ndarray, spec: _KeySpec) -> np.ndarray:
    """Return the high bits of the order keys (H, W): value, then tie-break."""
    return (values.astype(spec.dtype) << spec.val_shift) | (tie << spec.idx_bits)


def _score_key_base(scaled: np.ndarray, spec: _KeySpec) -> tuple[np.ndarray, np.ndarray]:
    """Return the 8-bit map q = floor(scaled) (H, W) and the key bits of the map: q, then the score.

    In the 32-bit layout the tie-break is the next 8 bits of the score: floor(256 * scaled) holds q in
    its high byte and the position of the score inside q's step in its low byte (exact: 256 * x is).
    """
    if spec.tie_bits == 8:
        fine = (scaled * 256.0).astype(np.uint32)  # < 65536 since scaled <= 255
        return (fine >> 8).astype(np.uint8), fine << 16
    q = scaled.astype(np.uint8)
    return q, _key_base(q, _tie_break(scaled, spec), spec)


def _ascending_keys(base: np.ndarray, spec: _KeySpec) -> np.ndarray:
    """Return strict order keys (H, W) increasing with the value (ties: tie-break, then pixel index)."""
    return base | np.arange(base.size, dtype=spec.dtype).reshape(base.shape)


def _descending_keys(base: np.ndarray, spec: _KeySpec) -> np.ndarray:
    """Return strict order keys (H, W) decreasing with the value and tie-break (ties: pixel index)."""
    top = spec.dtype((255 << spec.val_shift) | (((1 << spec.tie_bits) - 1) << spec.idx_bits))
    return (top - base) | np.arange(base.size, dtype=spec.dtype).reshape(base.shape)


def _ascent(keys: np.ndarray, conn: int, outside: bool, spec: _KeySpec) -> tuple[np.ndarray, np.ndarray]:
    """Return each pixel's neighbour of largest key (itself included) as flat indices (N [+1],) and the
    roots (pixels that are their own best, plus the outside if any)."""
    height, width = keys.shape
    n, row = height * width, width + 2
    padded = np.full((height + 2, row), spec.above_all(n) if outside else spec.below_all, spec.dtype)
    padded[1:-1, 1:-1] = keys
    flat = padded.ravel()  # contiguous 1-D slices are much faster than 2-D shifted views
    if conn == 8:  # the 3x3 maximum is separable
        across = np.maximum(flat[:-2], flat[1:-1])
        np.maximum(across, flat[2:], out=across)  # across[i]: centred on flat[i + 1]
        best = np.maximum(across[: -2 * row], across[row:-row])
        np.maximum(best, across[2 * row:], out=best)  # best[i]: centred on flat[i + row + 1]
    else:
        best = np.maximum(flat[row - 1: -row - 1], flat[row + 1: flat.size - row + 1])  # centred on i + row
        np.maximum(best, flat[: -2 * row], out=best)
        np.maximum(best, flat[2 * row:], out=best)
        np.maximum(best, flat[row:-row], out=best)
        best = best[1:]  # best[i]: centred on flat[i + row + 1]
    item = best.itemsize
    view = np.lib.stride_tricks.as_strided(best, shape=(height, width), strides=(row * item, item))  # (H, W)
    roots = np.flatnonzero(view == keys)
    parent = np.empty(n + 1 if outside else n, np.intp)
    np.bitwise_and(view, spec.dtype(spec.idx_mask), out=parent[:n].reshape(height, width), casting="unsafe")
    if outside:
        parent[n] = n  # the outside (index N) is its own root
        roots = np.append(roots, n)
    return parent, roots


def _find_roots(parent: np.ndarray) -> np.ndarray:
    """Return the root of every element of a pointer forest (pointer jumping)."""
    r = parent
    probe = slice(None, None, max(1, r.size // 997))  # cheap convergence test before the full one
    while True:
        r2 = np.take(r, r, mode="clip")  # indices are in range: "clip" skips the checks
        if np.array_equal(r2[probe], r[probe]) and np.array_equal(r2, r):
            return r
        r = r2


@dataclass
class _Regions:
    """Steepest-ascent regions: label (N [+1],) region of each pixel; top (R,) value at each root."""

    label: np.ndarray
    top: np.ndarray
    count: int

    def compact(self, n: int) -> np.ndarray:
        """Return the first n labels in the smallest integer type (less memory traffic than intp)."""
        return self.label[:n].astype(np.uint8 if self.count <= 256 else np.int32)


def _regions(values: np.ndarray, keys: np.ndarray, conn: int, outside: bool, spec: _KeySpec) -> _Regions:
    """Return the steepest-ascent regions of a key map (the outside, if any, is the last element)."""
    parent, roots = _ascent(keys, conn, outside, spec)
    flat = values.ravel()
    top = np.append(flat, 256)[roots] if outside else flat[roots]  # the outside is above every level
    top = top.astype(np.int64)
    if roots.size == 1:
        return _Regions(np.zeros(parent.size, np.intp), top, 1)
    region_id = np.empty(parent.size, np.intp)
    region_id[roots] = np.arange(roots.size)
    return _Regions(np.take(region_id, _find_roots(parent), mode="clip"), top, int(roots.size))


def _region_edges(label: np.ndarray, values: np.ndarray, width: int,
                  conn: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (a, b, w): adjacent region pairs (a < b) and min(value) of each touching pixel pair.

    label: (N,) region of each pixel; values: (N,) int32. Pairs meeting at w join for levels t < w.
    """
    n = label.size  # label: a compact integer type (see _Regions.compact)
    shifts = [(0, 1), (1, 0)] if conn == 4 else [(0, 1), (1, 0), (1, 1), (1, -1)]
    aa, bb, ww = [], [], []
    for dy, dx in shifts:
        d = dy * width + dx  # flat offset; pairs that wrap around a row end are dropped below
        if d >= n or (dx != 0 and width == 1):
            continue
        p = np.flatnonzero(label[: n - d] != label[d:])
        if dx == 1:
            p = p[p % width != width - 1]
        elif dx == -1:
            p = p[p % width != 0]
        w = np.minimum(values[p], values[p + d])
        keep = w > 0
        aa.append(label[p[keep]].astype(np.int64))
        bb.append(label[p[keep] + d].astype(np.int64))
        ww.append(w[keep])
    if not aa:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    a, b, w = np.concatenate(aa).astype(np.int64), np.concatenate(bb).astype(np.int64), np.concatenate(ww)
    return np.minimum(a, b), np.maximum(a, b), w


def _strongest_pairs(a: np.ndarray, b: np.ndarray, w: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reduce region pairs to one per pair with its largest weight, then to a maximum spanning forest."""
    if a.size == 0:
        return a, b, w
    key = np.sort(((a * n + b) << 9) | w)  # by pair, then weight
    pair = key >> 9
    last = np.append(pair[1:] != pair[:-1], True)  # the largest weight of each pair comes last
    pair, w = pair[last], key[last] & 511
    a, b = pair // n, pair % n
    if a.size > max(4 * n, 4096):  # the same components at every level come from any maximum spanning forest
        forest = minimum_spanning_tree(coo_matrix((512 - w, (a, b)), shape=(n, n)).tocsr()).tocoo()
        a, b, w = forest.row.astype(np.int64), forest.col.astype(np.int64), 512 - forest.data.astype(np.int64)
    return a, b, w


@dataclass
class _Tree:
    """Component tree over regions: leaves 0..R-1 are regions, later nodes are merges.

    parent (M,) (-1 at roots); lo, hi (M,) levels during which the node is a component (empty if lo > hi);
    pos (M,) pre-order position; size (M,) subtree size (nodes).
    """

    parent: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    pos: np.ndarray
    size: np.ndarray

    @property
    def count(self) -> int:
        """Return the number of nodes."""
        return int(self.parent.size)


def _kruskal(top: np.ndarray, a: np.ndarray, b: np.ndarray, w: np.ndarray) -> _Tree:
    """Return the component tree of regions with tops ``top`` (R,) joined by edges (a, b) at weights w."""
    n = int(top.size)
    order = np.argsort(-w, kind="stable")
    edges = zip(a[order].tolist(), b[order].tolist(), w[order].tolist())
    find = list(range(n))  # union-find over regions
    node_of = list(range(n))  # current tree node of each union-find root
    parent = [-1] * n
    lo = [0] * n
    hi = (np.minimum(top, 256) - 1).tolist()
    head, tail, nxt, size = list(range(n)), list(range(n)), [-1] * n, [1] * n  # pre-order linked lists
    for x, y, weight in edges:
        while find[x] != x:
            find[x] = find[find[x]]
            x = find[x]
        while find[y] != y:
            find[y] = find[find[y]]
            y = find[y]
        if x == y:
            continue
        nx, ny, new = node_of[x], node_of[y], len(parent)
        parent[nx] = parent[ny] = new
        lo[nx] = lo[ny] = weight
        parent.append(-1)
        lo.append(0)
        hi.append(weight - 1)
        size.append(size[nx] + size[ny] + 1)
        nxt.append(head[nx])
        nxt[tail[nx]] = head[ny]
        head.append(new)
        tail.append(tail[ny])
        find[y] = x
        node_of[x] = new
    pos = [0] * len(parent)
    k = 0
    for root in [i for i, p in enumerate(parent) if p < 0]:
        i = head[root]
        while i != -1:
            pos[i] = k
            k += 1
            i = nxt[i]
    return _Tree(np.asarray(parent, np.intp), np.asarray(lo, np.int64), np.asarray(hi, np.int64),
                 np.asarray(pos, np.intp), np.asarray(size, np.intp))


def _entry_nodes(tree: _Tree, leaf: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Return, for each (leaf, level), the ancestor-or-self alive at that level (binary lifting)."""
    up = np.where(tree.parent < 0, np.arange(tree.count), tree.parent)
    jumps = [up]
    while True:
        nxt = jumps[-1][jumps[-1]]
        if np.array_equal(nxt, jumps[-1]):
            break
        jumps.append(nxt)
    node = leaf
    for jump in reversed(jumps):  # climb while the landing node is still alive only above `level`
        cand = jump[node]
        node = np.where(tree.lo[cand] > level, cand, node)
    return np.where(tree.lo[node] > level, up[node], node)


def _segment_minimum(values: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Return the running minimum of ``values`` (P,), restarted at each new (non-decreasing) ``segment`` id."""
    shift = segment * (4 * _NO_PIXEL)  # later segments lie below every earlier value
    return np.minimum.accumulate(values - shift) + shift


def _range_reduce(op: np.ufunc, values: np.ndarray, start: np.ndarray, stop: np.ndarray,
                  neutral: int = 0) -> np.ndarray:
    """Return op over values[start:stop] along axis 0 for many ranges (sparse table); neutral if empty.

    values: (R,) or (R, K); start, stop: (M,); returns (M,) or (M, K).
    """
    out = np.full((start.size,) + values.shape[1:], neutral, values.dtype)
    length = stop - start
    nonempty = length > 0
    if not nonempty.any():
        return out
    table = [values]
    while (1 << len(table)) <= values.shape[0]:
        half = 1 << (len(table) - 1)
        table.append(op(table[-1][:-half], table[-1][half:]))
    k = np.zeros(start.size, np.intp)
    k[nonempty] = np.log2(length[nonempty]).astype(np.intp)
    for j in np.unique(k[nonempty]).tolist():
        sel = nonempty & (k == j)
        out[sel] = op(table[j][start[sel]], table[j][stop[sel] - (1 << j)])
    return out


def _extents(columns: np.ndarray, rows: np.ndarray, node: np.ndarray, level: np.ndarray) -> _NodeLevels:
    """Return the extents of components (node, level) from each node's largest value per column and row.

    columns: (M, W), rows: (M, H) non-negative values below 512. The component spans the columns and rows
    whose value exceeds the level: x0 is the first column whose running maximum exceeds it, and so on.
    """
    count, width = columns.shape
    height = rows.shape[1]
    size = max(width, height)
    profiles = np.zeros((count, 4, size), np.int32)  # left-to-right, right-to-left, top-down, bottom-up
    profiles[:, 0, :width] = columns
    profiles[:, 1, :width] = columns[:, ::-1]
    profiles[:, 2, :height] = rows
    profiles[:, 3, :height] = rows[:, ::-1]
    ahead = np.maximum.accumulate(profiles, axis=2)
    ahead += (np.arange(count * 4, dtype=np.int32) * 512).reshape(count, 4, 1)  # sorted once flattened
    row = node[:, None] * 4 + np.arange(4)  # (P, 4)
    first = np.searchsorted(ahead.ravel(), level[:, None] + row * 512, side="right") - row * size
    return _NodeLevels(node, level, first[:, 0], first[:, 2], width - 1 - first[:, 1], height - 1 - first[:, 3])


@dataclass
class _NodeLevels:
    """Per (node, level) pairs of a tree: the pixel extent of each component at each level it lives."""

    node: np.ndarray  # (P,)
    level: np.ndarray  # (P,)
    x0: np.ndarray
    y0: np.ndarray
    x1: np.ndarray
    y1: np.ndarray
    first: np.ndarray | None = None  # (P,) first raster pixel


class _LevelTree:
    """The component tree of ``values > t`` for t in 0..254, with per-pixel entry (node, level) pairs.

    ``pixels`` restricts the per-pixel work to a subset (flat indices); by default every pixel.
    """

    def __init__(self, values: np.ndarray, regions: _Regions, conn: int, pixels: np.ndarray | None = None) -> None:
        """Build the tree of ``values`` (H, W) over its upward ``regions`` (conn: 8 or 4)."""
        self.height, self.width = values.shape
        self.values2d = values
        self.values = values.ravel().astype(np.int32)  # (N,)
        self.regions = regions
        self.compact_label: np.ndarray | None = None
        if regions.count == 1:
            self.tree = _kruskal(regions.top, *(np.zeros(0, np.int64),) * 3)
        else:
            self.compact_label = regions.compact(values.size)  # (N,) uint8 or int32
            edges = _region_edges(self.compact_label, self.values, self.width, conn)
            self.tree = _kruskal(regions.top, *_strongest_pairs(*edges, regions.count))
        length = np.maximum(self.tree.hi - self.tree.lo + 1, 0)
        self.offset = np.concatenate([[0], np.cumsum(length)])  # (M+1,) first pair of each node
        self.pixels = pixels
        self._pair: np.ndarray | None = None

    @property
    def pair(self) -> np.ndarray:
        """Return each (selected) pixel's entry pair index; pixels that never join get the dump slot P."""
        if self._pair is None:
            values = self.values if self.pixels is None else self.values[self.pixels]
            leaf = self.regions.label[: self.values.size]
            leaf = leaf if self.pixels is None else leaf[self.pixels]
            self._pair = self._pair_of(leaf, values - 1)
        return self._pair

    def _pair_of(self, leaf: np.ndarray, level: np.ndarray) -> np.ndarray:
        """Return the pair index of the node alive at ``level`` above each leaf (level -1: dump slot P)."""
        tree, dump = self.tree, self.offset[-1]
        columns = _NUM_LEVELS + 1  # levels -1..254
        if tree.count == 1:
            return np.where(level < 0, dump, tree.hi[0] - level)
        n = self.regions.count
        if n * columns <= leaf.size:  # tabulate (leaf, level) -> pair
            grid_leaf, grid_col = np.divmod(np.arange(n * columns), columns)
            grid_level = grid_col - 1
            node = _entry_nodes(tree, grid_leaf, np.maximum(grid_level, 0))
            table = np.where(grid_level < 0, dump, self.offset[node] + (tree.hi[node] - grid_level))
            return table[leaf * columns + (level + 1)]
        node = _entry_nodes(tree, leaf, np.maximum(level, 0))
        return np.where(level < 0, dump, self.offset[node] + (tree.hi[node] - level))

    def _pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return node (P,), level (P,) of every pair and the pair count of each node (M,)."""
        length = np.diff(self.offset)
        node = np.repeat(np.arange(self.tree.count), length)
        level = self.tree.hi[node] - (np.arange(int(self.offset[-1])) - self.offset[node])
        return node, level, length

    def node_levels(self, first: bool = False) -> _NodeLevels:
        """Return the pixel extent of every node at every level it lives (optionally its first pixel)."""
        if self.tree.count == 1 and self.pixels is None:
            return self._single_node_levels()
        if self.regions.count <= _TABLE_REGIONS and not first:
            return self._table_levels()
        n_pairs = int(self.offset[-1])
        pair = self.pair
        if self.pixels is None:
            index = np.arange(self.values.size, dtype=np.int64)
            xs = np.tile(np.arange(self.width, dtype=np.int64), self.height)
        else:
            index = self.pixels.astype(np.int64)
            xs = index % self.width
        own = np.full((4, n_pairs + 1), _NO_PIXEL, np.int64)  # min x, min idx, -max x, -max idx per pair
        np.minimum.at(own[0], pair, xs)
        np.minimum.at(own[1], pair, index)
        np.minimum.at(own[2], pair, -xs)
        np.minimum.at(own[3], pair, -index)
        node, level, length = self._pairs()
        merged = [self._with_descendants(_segment_minimum(own[i, :-1], node), node, length)
                  for i in range(4)]
        width = self.width
        result = _NodeLevels(node, level, merged[0], merged[1] // width, -merged[2], (-merged[3]) // width)
        if first:
            result.first = merged[1]
        return result

    def _with_descendants(self, running: np.ndarray, node: np.ndarray, length: np.ndarray) -> np.ndarray:
        """Return min(running own value, minimum over all strict descendants' own values) per pair."""
        tree = self.tree
        if tree.count == 1:
            return running
        total = np.full(tree.count, _NO_PIXEL, np.int64)
        alive = length > 0
        total[alive] = running[self.offset[1:][alive] - 1]
        by_pos = np.empty(tree.count, np.intp)
        by_pos[tree.pos] = np.arange(tree.count)
        below = _range_reduce(np.minimum, total[by_pos], tree.pos + 1, tree.pos + tree.size, _NO_PIXEL)
        return np.minimum(running, below[node])

    def _leaf_ranges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return the leaves in pre-order (R,) and each node's [start, stop) range in that order (M,)."""
        tree = self.tree
        leaf_pos = tree.pos[: self.regions.count]
        order = np.argsort(leaf_pos)
        sorted_pos = leaf_pos[order]
        return order, np.searchsorted(sorted_pos, tree.pos), np.searchsorted(sorted_pos, tree.pos + tree.size)

    def _selected(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (leaf, value, flat index) of the pixels the per-pixel work runs on."""
        leaf, values = self.regions.label[: self.values.size], self.values
        if self.pixels is None:
            return leaf, values, np.arange(values.size)
        return leaf[self.pixels], values[self.pixels], self.pixels

    def _table_levels(self) -> _NodeLevels:
        """Return node extents from per-region row and column maxima (few regions)."""
        leaf, values, index = self._selected()
        height, width, n_leaves = self.height, self.width, self.regions.count
        order, start, stop = self._leaf_ranges()
        if self.pixels is None and n_leaves <= _MASKED_REGIONS:  # one masked pass per region
            values2d = self.values2d
            label2d = (self.compact_label if self.compact_label is not None else leaf).reshape(height, width)
            rows = np.empty((n_leaves, width + height), np.int32)
            for r in range(n_leaves):
                masked = values2d * (label2d == r)  # (H, W): the region's values, 0 elsewhere
                rows[r, :width] = masked.max(axis=0)
                rows[r, width:] = masked.max(axis=1)
            profiles = _range_reduce(np.maximum, rows[order], start, stop)
            node, level, _ = self._pairs()
            return _extents(profiles[:, :width], profiles[:, width:], node, level)
        if self.pixels is None:  # (region, column) and (region, row) slots without divisions
            leaf2d = leaf.reshape(height, width)
            by_column = np.multiply(leaf2d, width)
            by_column += np.arange(width)
            by_row = np.multiply(leaf2d, height)
            by_row += np.arange(height)[:, None]
            slots = (by_column, by_row)
        else:
            slots = (leaf * width + index % width, leaf * height + index // width)
        by_column = np.zeros(n_leaves * width, np.int32)  # largest value per (region, column)
        np.maximum.at(by_column, slots[0].ravel(), values)
        by_row = np.zeros(n_leaves * height, np.int32)  # largest value per (region, row)
        np.maximum.at(by_row, slots[1].ravel(), values)
        rows = np.hstack([by_column.reshape(n_leaves, width), by_row.reshape(n_leaves, height)])[order]  # (R, W+H)
        profiles = _range_reduce(np.maximum, rows, start, stop)  # (M, W + H) per node
        node, level, _ = self._pairs()
        return _extents(profiles[:, :width], profiles[:, width:], node, level)

    def first_pixel(self, node: np.ndarray, level: np.ndarray, y0: np.ndarray) -> np.ndarray:
        """Return the first raster pixel of some components (node, level) whose top row is y0."""
        order, start, stop = self._leaf_ranges()
        label2d = self.regions.label[: self.values.size].reshape(self.height, self.width)
        values2d = self.values.reshape(self.height, self.width)
        out = np.empty(node.size, np.int64)
        for k, (n, t, y) in enumerate(zip(node.tolist(), level.tolist(), y0.tolist())):
            member = np.zeros(self.regions.count, bool)
            member[order[start[n]: stop[n]]] = True
            inside = (values2d[y] > t) & member[label2d[y]]
            out[k] = y * self.width + int(np.argmax(inside))
        return out

    def _single_node_levels(self) -> _NodeLevels:
        """Return the extents of the only component at each level from row and column maxima."""
        node, level, _ = self._pairs()
        ext = []
        for profile in (self.values2d.max(axis=0), self.values2d.max(axis=1)):  # (W,), (H,)
            size = profile.size
            ahead = np.maximum.accumulate(profile)  # foreground reaches index i at level t iff ahead[i] > t
            behind = np.maximum.accumulate(profile[::-1])
            ext.append(np.searchsorted(ahead, level, side="right"))
            ext.append(size - 1 - np.searchsorted(behind, level, side="right"))
        return _NodeLevels(node, level, ext[0], ext[2], ext[1], ext[3])

    def area2(self, levels: _NodeLevels, lowest: int) -> np.ndarray:
        """Return twice the outer contour (filled) area of the components (node, level) of ``levels``.

        Only areas at levels >= ``lowest`` are exact (others are not needed). A 2x2 window adds 1/2 when
        its third pixel joins the component and 1/2 when its fourth does (see :func:`_window_events`).
        """
        node, level = levels.node, levels.level
        values2d = self.values.reshape(self.height, self.width)
        if self.regions.count <= _TABLE_REGIONS:
            n_leaves = self.regions.count
            labels = (self.compact_label if self.compact_label is not None
                      else self.regions.label[: self.values.size]).reshape(self.height, self.width)
            at = level == lowest  # windows counted at levels >= lowest lie around the foreground there
            ys = slice(max(int(levels.y0[at].min()) - 1, 0), int(levels.y1[at].max()) + 2)
            xs = slice(max(int(levels.x0[at].min()) - 1, 0), int(levels.x1[at].max()) + 2)
            per_leaf = _window_counts(self.values2d[ys, xs], labels[ys, xs], n_leaves)  # (R, levels)
            order, start, stop = self._leaf_ranges()
            prefix = np.vstack([np.zeros((1, _NUM_LEVELS), np.int64), np.cumsum(per_leaf[order], axis=0)])
            per_node = prefix[stop] - prefix[start]  # (M, levels) events per node and join level
            at_or_above = np.cumsum(per_node[:, ::-1], axis=1)[:, ::-1]  # events at join levels >= t
            return at_or_above[node, level]
        events = _window_events(values2d, self.pair.reshape(self.height, self.width))
        own = np.bincount(events, minlength=int(self.offset[-1]) + 1)[:-1]  # half-windows per entry pair
        running = np.cumsum(own)
        running -= np.concatenate([[0], running])[self.offset[:-1]][node]  # restart at each node
        tree = self.tree
        total = np.zeros(tree.count, np.int64)
        alive = np.diff(self.offset) > 0
        total[alive] = running[self.offset[1:][alive] - 1]
        by_pos = np.empty(tree.count, np.intp)
        by_pos[tree.pos] = np.arange(tree.count)
        prefix = np.concatenate([[0], np.cumsum(total[by_pos])])
        return running + (prefix[tree.pos + tree.size] - prefix[tree.pos + 1])[node]


def _window_counts(values: np.ndarray, labels: np.ndarray, n_labels: int) -> np.ndarray:
    """Return the half-area events of the 2x2 windows per (region, join level) (n_labels, 255).

    values: (h, w) uint8 map; labels: (h, w) region ids below 256. As :func:`_window_events`, with
    16-bit keys value * 256 + label (less memory traffic) and a histogram of the keys.
    """
    height, width = values.shape
    if height < 2 or width < 2:
        return np.zeros((n_labels, _NUM_LEVELS), np.int64)
    keys = ((values.astype(np.uint16) << 8) | labels.astype(np.uint16)).ravel()  # (h * w,)
    a, b, c, d = keys[: -width - 1], keys[1:-width], keys[width:-1], keys[width + 1:]  # window at i
    lo1, hi1, lo2, hi2 = np.minimum(a, b), np.maximum(a, b), np.minimum(c, d), np.maximum(c, d)
    third = np.maximum(lo1, lo2)
    np.minimum(third, np.minimum(hi1, hi2, out=hi1), out=third)
    fourth = np.minimum(lo1, lo2, out=lo1)
    third[width - 1:: width] = 0  # windows that would wrap around a row end (value 0: never counted)
    fourth[width - 1:: width] = 0
    counts = np.bincount(third, minlength=1 << 16) + np.bincount(fourth, minlength=1 << 16)
    return counts.reshape(256, 256)[1:, :n_labels].T  # value v >= 1 joins at level v - 1


def _window_events(values: np.ndarray, tags: np.ndarray) -> np.ndarray:
    """Return the tags of the pixels that complete 3 and 4 pixels of each 2x2 window (never-joining dropped).

    values: (H, W) integer map; tags: (H, W) non-negative ints below 2**32 (entry pairs). A window is half
    inside a component from the level where its third largest pixel joins (that pixel's value - 1) and
    fully inside from where its smallest one joins; any pixel of that value is then in the same component
    as the window's larger pixels, and joins at its own entry level, so the event is its entry pair's.
    """
    height, width = values.shape
    if height < 2 or width < 2:
        return np.zeros(0, np.intp)
    keys = ((values.astype(np.int64) << 32) | tags.astype(np.int64)).ravel()  # (N,) by value, then tag
    a, b, c, d = keys[: -width - 1], keys[1:-width], keys[width:-1], keys[width + 1:]  # window at i
    lo1, hi1, lo2, hi2 = np.minimum(a, b), np.maximum(a, b), np.minimum(c, d), np.maximum(c, d)
    events = np.empty(2 * a.size, np.int64)
    third, fourth = events[: a.size], events[a.size:]
    np.maximum(lo1, lo2, out=third)
    np.minimum(third, np.minimum(hi1, hi2, out=hi1), out=third)
    np.minimum(lo1, lo2, out=fourth)
    third[width - 1:: width] = 0  # windows that would wrap around a row end
    fourth[width - 1:: width] = 0
    return (events[events >= 1 << 32] & 0xFFFFFFFF).astype(np.intp)


@dataclass(frozen=True)
class LevelCandidates:
    """Candidate boxes of one map at every integer level 0..max8-1.

    level: (P,) int64 and boxes: (P, 4) int64, one row per candidate (V2: every contour; V1: the largest);
    max8: the map's 8-bit maximum; height, width: map size.
    """

    level: np.ndarray
    boxes: np.ndarray
    max8: int
    height: int
    width: int


def _holes_and_fill(q: np.ndarray, base: np.ndarray, spec: _KeySpec,
                    want_holes: bool) -> tuple[_NodeLevels | None, np.ndarray]:
    """Return the holes' extents per (node, level) (levels in q's scale) and the hole-filled map e.

    e[p] is the lowest level t at which pixel p belongs to the background region reaching the border, so
    ``e > t`` is the foreground with every hole filled: its components are the top-level components.
    The background at level t is ``255 - q > 254 - t``: a component tree of the inverted map, 4-connected,
    with the outside as an extra always-present node.
    """
    n = q.size
    inverted = 255 - q  # (H, W) uint8
    regions = _regions(inverted, _descending_keys(base, spec), 4, True, spec)
    if regions.count == 1:  # every pixel climbs to the outside: no hole at any level
        return None, q
    lower = _LevelTree(inverted, regions, 4, pixels=np.zeros(0, np.intp))
    tree = lower.tree
    on_outside_chain = np.zeros(tree.count, bool)
    node = int(regions.label[n])
    while node >= 0:
        on_outside_chain[node] = True
        node = int(tree.parent[node])
    jump = np.where(on_outside_chain | (tree.parent < 0), np.arange(tree.count), tree.parent)
    while True:  # first ancestor on the outside's chain
        nxt = jump[jump]
        if np.array_equal(nxt, jump):
            break
        jump = nxt
    spill_of_leaf = np.where(on_outside_chain[jump], 254 - tree.hi[jump], 255)[: regions.count]
    spill = spill_of_leaf.astype(np.int16)[regions.label[:n]]  # level where each pixel's region reaches out
    flat_q = q.ravel()
    filled = np.maximum(flat_q, spill).astype(np.uint8).reshape(q.shape)
    holes = None
    if want_holes:
        lower.pixels = np.flatnonzero(spill > flat_q)  # pixels that are in a hole at some level
        levels = lower.node_levels()
        keep = ~on_outside_chain[levels.node]
        holes = _NodeLevels(levels.node[keep], 254 - levels.level[keep], levels.x0[keep], levels.y0[keep],
                            levels.x1[keep], levels.y1[keep])
    return holes, filled


def _upper_tree(values: np.ndarray, keys: np.ndarray, spec: _KeySpec) -> _LevelTree:
    """Return the 8-connected component tree of ``values > t``."""
    return _LevelTree(values, _regions(values, keys, 8, False, spec), 8)


def level_candidates(score_map: np.ndarray, multi_contour: bool) -> LevelCandidates:
    """Return the reference's candidate boxes of one (H, W) map at every integer level, in one pass."""
    v1, v2 = _candidates(score_map, want_v1=not multi_contour, want_v2=multi_contour)
    return v2 if multi_contour else v1  # type: ignore[return-value]


def level_candidates_v1_v2(score_map: np.ndarray) -> tuple[LevelCandidates, LevelCandidates]:
    """Return the V1 (largest contour) and V2 (every contour) candidates of one map, sharing their common work."""
    v1, v2 = _candidates(score_map, want_v1=True, want_v2=True)
    return v1, v2  # type: ignore[return-value]


def _candidates(score_map: np.ndarray, want_v1: bool, want_v2: bool) -> tuple[LevelCandidates | None, LevelCandidates | None]:
    """Return (V1, V2) candidates of one map, each None unless wanted; the 8-bit map and hole filling are shared."""
    scaled = np.asarray(score_map, dtype=np.float64) * 255  # (H, W) the reference's product
    height, width = scaled.shape
    spec = _KeySpec.for_size(scaled.size)
    q, base = _score_key_base(scaled, spec)  # the 8-bit map and the value and tie-break bits of the keys
    max8 = int(q.max())
    if max8 == 0:
        empty = LevelCandidates(np.zeros(0, np.int64), np.zeros((0, 4), np.int64), 0, height, width)
        return (empty if want_v1 else None), (empty if want_v2 else None)
    holes, filled = _holes_and_fill(q, base, spec, want_holes=want_v2)
    v2 = None
    if want_v2:
        upper = _upper_tree(q, _ascending_keys(base, spec), spec).node_levels()
        level = [upper.level]
        boxes = [_outer_box(upper.x0, upper.y0, upper.x1, upper.y1, width, height)]
        if holes is not None:
            level.append(holes.level)
            boxes.append(_hole_box(holes.x0, holes.y0, holes.x1, holes.y1, width, height))
        level_all = np.concatenate(level)
        keep = level_all < max8
        v2 = LevelCandidates(level_all[keep], np.concatenate(boxes)[keep], max8, height, width)
    if not want_v1:
        return None, v2
    if filled is not q:  # filled holes are flat in e: order them by the full score (64-bit keys)
        spec = _KeySpec(np.int64, 25, 30)
        base = _key_base(filled, _tie_break(scaled, spec), spec)
    top_level = _upper_tree(filled, _ascending_keys(base, spec), spec)
    levels = top_level.node_levels(first=top_level.regions.count > _TABLE_REGIONS)
    keep = _largest_per_level(top_level, levels)
    keep &= levels.level < max8
    boxes_v1 = _outer_box(levels.x0[keep], levels.y0[keep], levels.x1[keep], levels.y1[keep], width, height)
    order = np.argsort(levels.level[keep], kind="stable")
    return LevelCandidates(levels.level[keep][order], boxes_v1[order], max8, height, width), v2


def _largest_per_level(tree: _LevelTree, levels: _NodeLevels) -> np.ndarray:
    """Return a mask of the (node, level) pairs that are OpenCV's largest contour at their level.

    Largest filled area first; among equal areas the component whose first raster pixel is last.
    """
    count = np.bincount(levels.level, minlength=_NUM_LEVELS)
    if count.max() <= 1:
        return np.ones(levels.level.size, bool)
    area2 = tree.area2(levels, int(np.flatnonzero(count > 1)[0]))  # exact where several components live
    best = np.full(_NUM_LEVELS, -1, np.int64)
    np.maximum.at(best, levels.level, area2)
    keep = area2 == best[levels.level]
    tied = np.bincount(levels.level[keep], minlength=_NUM_LEVELS)[levels.level] > 1
    if tied.any():
        idx = np.flatnonzero(keep & tied)
        if levels.first is not None:
            first = levels.first[idx]
        else:
            first = tree.first_pixel(levels.node[idx], levels.level[idx], levels.y0[idx])
        last = np.full(_NUM_LEVELS, -1, np.int64)
        np.maximum.at(last, levels.level[idx], first)
        keep[idx] = first == last[levels.level[idx]]
    return keep
