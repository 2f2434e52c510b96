"""Rasterising rooms and walls into a geometry's ``masks``, in plain numpy.

A cell counts as *touched* by a shape when the shape meets the cell's interior (the "all touched" rule):
shapes that only graze a cell's edge or corner don't touch it, which keeps grid-aligned rooms from leaking
into the neighbouring row of cells.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .core import MARGIN, RES

WALL_BUFFER = .01
"""Metres each wall is thickened by when marking wall cells, so walls along grid lines mark both sides."""

_TOL = 1e-7  # metres cells are shrunk by, so float noise on grid-aligned shapes doesn't touch extra cells


def mask_shape(walls: np.ndarray, spaces: Sequence[np.ndarray], res: float = RES) -> tuple[int, int]:
    """(H, Wm) of the mask that covers all wall and space points plus :data:`MARGIN` metres, at ``res`` m/cell."""
    pts = [np.asarray(walls, dtype=float).reshape(-1, 2)] + [np.asarray(s, dtype=float).reshape(-1, 2) for s in spaces]
    pts = np.concatenate(pts)
    if len(pts) == 0:
        raise ValueError('masks needs at least one wall or space point to size the mask; got none')
    right, top = pts.max(0) + MARGIN
    return int(top/res) + 1, int(right/res) + 1


def _segment_cells(segs: np.ndarray, radius: float, shape: tuple[int, int], res: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cells touched by each segment thickened by ``radius`` metres.

    segs: (N, 2, 2) metres. Returns flat int arrays (segment index, i, j), one entry per touched cell.
    """
    h, w = shape
    segs = np.asarray(segs, dtype=float).reshape(-1, 2, 2)
    empty = np.zeros(0, int)
    if len(segs) == 0:
        return empty, empty, empty

    # Candidate cells: each segment's bounding box, padded by the radius.
    lo, hi = segs.min(1) - radius, segs.max(1) + radius
    j0 = np.clip(np.floor(lo[:, 0]/res).astype(int), 0, w - 1)
    j1 = np.clip(np.floor(hi[:, 0]/res).astype(int), 0, w - 1)
    i0 = np.clip(h - 1 - np.floor(hi[:, 1]/res).astype(int), 0, h - 1)
    i1 = np.clip(h - 1 - np.floor(lo[:, 1]/res).astype(int), 0, h - 1)
    ni, nj = i1 - i0 + 1, j1 - j0 + 1
    counts = ni*nj

    # Enumerate all candidate cells of all segments at once.
    seg = np.repeat(np.arange(len(segs)), counts)
    starts = np.cumsum(counts) - counts
    local = np.arange(counts.sum()) - starts[seg]
    i = i0[seg] + local // nj[seg]
    j = j0[seg] + local % nj[seg]

    keep = _dist_segment_box(segs[seg], res*j + _TOL, res*(j + 1) - _TOL,
                             res*(h - i - 1) + _TOL, res*(h - i) - _TOL) <= radius
    return seg[keep], i[keep], j[keep]


def _dist_segment_box(segs: np.ndarray, x0: np.ndarray, x1: np.ndarray, y0: np.ndarray, y1: np.ndarray) -> np.ndarray:
    """Distance from each segment (N, 2, 2) to its axis-aligned box [x0, x1] x [y0, y1]; 0 when they meet."""
    a, b = segs[:, 0], segs[:, 1]
    d = b - a

    # Separating-axis test: the box's two axes and the segment's normal.
    overlap_x = (np.minimum(a[:, 0], b[:, 0]) <= x1) & (np.maximum(a[:, 0], b[:, 0]) >= x0)
    overlap_y = (np.minimum(a[:, 1], b[:, 1]) <= y1) & (np.maximum(a[:, 1], b[:, 1]) >= y0)
    corners = np.stack([np.stack(c, -1) for c in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))], 1)  # (N, 4, 2)
    rel = corners - a[:, None]
    side = d[:, None, 0]*rel[..., 1] - d[:, None, 1]*rel[..., 0]
    straddles = (side.min(1) <= 0) & (side.max(1) >= 0)
    meets = overlap_x & overlap_y & straddles

    # Apart, the closest pair involves an endpoint of the segment or a corner of the box.
    def point_box(p):
        dx = np.maximum(np.maximum(x0 - p[:, 0], p[:, 0] - x1), 0)
        dy = np.maximum(np.maximum(y0 - p[:, 1], p[:, 1] - y1), 0)
        return np.hypot(dx, dy)

    len2 = np.maximum((d**2).sum(-1), 1e-30)[:, None]
    t = np.clip((rel*d[:, None]).sum(-1)/len2, 0, 1)
    corner_dist = np.linalg.norm(rel - t[..., None]*d[:, None], axis=-1).min(1)
    dist = np.minimum(np.minimum(point_box(a), point_box(b)), corner_dist)
    return np.where(meets, 0., dist)


def polygon_cells(polys: Sequence[np.ndarray], shape: tuple[int, int], res: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cells touched by each polygon (P, 2) in metres: its boundary's cells plus those whose centre is inside.

    Returns flat int arrays (polygon index, i, j). All polygons are handled in one batch, padding the shorter
    ones' edge lists with zero-length edges (which touch nothing beyond their point and never cross a ray).
    """
    h, w = shape
    polys = [np.asarray(p, dtype=float).reshape(-1, 2) for p in polys]
    ids = [k for k, p in enumerate(polys) if len(p) >= 3]
    if not ids:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0, int)
    most = max(len(polys[k]) for k in ids)
    padded = np.stack([np.concatenate([polys[k], np.repeat(polys[k][-1:], most - len(polys[k]), 0)]) for k in ids])
    edges = np.stack([padded, np.roll(padded, -1, axis=1)], 2)  # (K, P, 2, 2)
    ids = np.asarray(ids)

    seg, ei, ej = _segment_cells(edges.reshape(-1, 2, 2), 0., shape, res)
    ek = ids[seg // most]

    # Candidate cells for centre-in-polygon: each polygon's bounding box.
    lo, hi = padded.min(1), padded.max(1)
    j0 = np.maximum(np.floor(lo[:, 0]/res).astype(int), 0)
    j1 = np.minimum(np.ceil(hi[:, 0]/res).astype(int), w)
    i0 = np.maximum(h - np.ceil(hi[:, 1]/res).astype(int), 0)
    i1 = np.minimum(h - np.floor(lo[:, 1]/res).astype(int), h)
    ni, nj = np.maximum(i1 - i0, 0), np.maximum(j1 - j0, 0)
    counts = ni*nj
    poly = np.repeat(np.arange(len(ids)), counts)
    local = np.arange(counts.sum()) - (np.cumsum(counts) - counts)[poly]
    nj_safe = np.maximum(nj, 1)[poly]
    i = i0[poly] + local // nj_safe
    j = j0[poly] + local % nj_safe
    # Chunked, so polygons with many corners over large areas don't need huge temporaries.
    step = max(1, 2**20 // most)
    inside = np.concatenate([np.zeros(0, bool)] + [
        _points_in_polygon(res*(j[s:s + step] + .5), res*(h - i[s:s + step] - .5), edges[poly[s:s + step]])
        for s in range(0, len(poly), step)])
    return np.concatenate([ek, ids[poly[inside]]]), np.concatenate([ei, i[inside]]), np.concatenate([ej, j[inside]])


def _points_in_polygon(x: np.ndarray, y: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Even-odd rule: (N,) points x, y, each against its own polygon's (N, E, 2, 2) edges -> (N,) bool."""
    ax, ay, bx, by = edges[..., 0, 0], edges[..., 0, 1], edges[..., 1, 0], edges[..., 1, 1]
    y = y[:, None]
    crosses = (ay > y) != (by > y)
    with np.errstate(divide='ignore', invalid='ignore'):
        xcross = ax + (y - ay)*(bx - ax)/(by - ay)
    return ((crosses & (x[:, None] < xcross)).sum(1) % 2) == 1


def masks(walls: np.ndarray, spaces: Sequence[np.ndarray], res: float = RES) -> np.ndarray:
    """Rasterises rooms and walls into an (H, Wm) int mask.

    walls: (W, 2, 2) metres. spaces: a sequence of (P, 2) room polygons in metres; room ``k`` is ``spaces[k-1]``.
    The mask is sized by :func:`mask_shape`. Each cell touched by room ``k`` gets ``k`` (later rooms overwrite
    earlier ones), then each cell touched by a wall thickened by :data:`WALL_BUFFER` gets ``-1``; the rest is 0.
    Row 0 is the top (largest y).
    """
    walls = np.asarray(walls, dtype=float).reshape(-1, 2, 2)
    shape = mask_shape(walls, spaces, res)
    out = np.zeros(shape, int)
    k, i, j = polygon_cells(spaces, shape, res)
    np.maximum.at(out, (i, j), k + 1)  # later rooms win
    _, i, j = _segment_cells(walls, WALL_BUFFER, shape, res)
    out[i, j] = -1
    return out
