"""Per-geometry uniform grids, built once at scenery time, so that a ray or a move reads only the walls near it.

Each geometry's walls' bounding box is cut into square cells. For each cell and each *reach* r (REACHES, a few
metres), the grid lists, in ascending order, the walls that come within r of some point of the cell. So from any
point p of a cell, the cell's list for reach r holds every wall within r metres of p (a small margin covers
rounding in the kernels' cell lookup).

How the kernels use them (they stay exact: the grid only skips walls that cannot change a result):
- physics: a move reads the list of the least reach within which its swept box lies (a wall that cannot touch
  the box cannot stop the move, and the min over walls does not depend on their order);
- render: a warp of rays first considers its viewer's list for the first reach, in index order; a ray whose hit
  lies well within the reach, and which turned no hit down as a near-tie, is then final (see `settled` in
  kernels.h). The warp tries the next reach, then every wall, only while some ray is not final.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = ["CELL", "MAX_CELLS_ACROSS", "REACHES", "Grids", "build"]

CELL = 1.0  # metres: the side of a cell, unless the geometry is more than MAX_CELLS_ACROSS cells wide or high
MAX_CELLS_ACROSS = 64
# metres, ascending: a step's move nearly always lies within 1 m of its start; a ray's hit usually lies within 3 m
# in a floor plan, within 6 m nearly always
REACHES = (1.0, 3.0, 6.0)
MARGIN = 0.01  # metres added to each reach when listing, far above the rounding of the kernels' cell lookup
TINY = 2e-5  # metres, in float32: walls shorter are listed everywhere (the kernels never cull those under 1e-5)


class Grids(NamedTuple):
    """The packed grids of G geometries over L = len(REACHES) reaches, as numpy arrays.

    Attributes:
    frames: (G, 3 + L) float32: the grid's lower-left corner x, y (metres), cells per metre (1 / the cell side),
        then its reaches (metres).
    shapes: (G, 3) int32: cells across (nx), cells up (ny), index of its first cell among all geometries' cells.
    cell_offsets: (C * L + 1,) int32, for C cells in all: the list of cell c for reach l (cell c's row y, column x:
        c = first + y * nx + x) is cell_walls[cell_offsets[c * L + l] : cell_offsets[c * L + l + 1]].
    cell_walls: (N,) int32 wall indices within the geometry, ascending in each list.
    """

    frames: np.ndarray
    shapes: np.ndarray
    cell_offsets: np.ndarray
    cell_walls: np.ndarray


def _segments_meet_boxes(walls: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(C, W) whether each of walls (W, 2, 2) meets each of the boxes lo, hi (C, 2), by clipping the segment
    against the box's slabs (Liang-Barsky); a few million (box, wall) pairs at a time, to bound the memory."""
    step = max(1, 2**21 // max(len(walls), 1))
    if len(lo) > step:
        return np.concatenate([_segments_meet_boxes(walls, lo[i : i + step], hi[i : i + step])
                               for i in range(0, len(lo), step)])  # fmt: skip
    a = walls[None, :, 0]  # (1, W, 2)
    d = walls[None, :, 1] - a
    lo, hi = lo[:, None], hi[:, None]  # (C, 1, 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        t0, t1 = (lo - a) / d, (hi - a) / d
    enter = np.where(d != 0, np.minimum(t0, t1), -np.inf)
    leave = np.where(d != 0, np.maximum(t0, t1), np.inf)
    parallel_inside = np.where(d == 0, (a >= lo) & (a <= hi), True)  # a segment parallel to an axis
    start = np.maximum(enter.max(-1), 0.0)
    end = np.minimum(leave.min(-1), 1.0)
    return (start <= end) & parallel_inside.all(-1)


def _one(walls: np.ndarray, reaches: Sequence[float]) -> tuple[np.ndarray, tuple[int, int], np.ndarray]:
    """(corner x, y and cells per metre; (nx, ny); (nx * ny, L, W) whether each wall is on each cell's list for each
    reach) for one geometry's walls (W, 2, 2)."""
    if len(walls) == 0:
        return np.zeros(3), (0, 0), np.zeros((0, len(reaches), 0), bool)
    points = walls.reshape(-1, 2)
    lo, hi = points.min(0), points.max(0)
    cell = max(CELL, float((hi - lo).max()) / MAX_CELLS_ACROSS)
    nx, ny = (np.maximum(np.ceil((hi - lo) / cell), 1)).astype(int)
    ys, xs = np.divmod(np.arange(nx * ny), nx)
    cell_lo = lo + np.stack([xs, ys], -1) * cell
    ends = walls.astype(np.float32).astype(np.float64)  # as the kernels hold them
    tiny = np.sqrt(((ends[:, 1] - ends[:, 0]) ** 2).sum(-1)) < TINY
    margin = MARGIN + 1e-5 * np.abs(points).max()  # float32 coordinates far from the origin round coarser
    near = [_segments_meet_boxes(walls, cell_lo - (r + margin), cell_lo + cell + (r + margin)) | tiny for r in reaches]
    return np.array([lo[0], lo[1], 1 / cell]), (int(nx), int(ny)), np.stack(near, 1)


def build(geometry_walls: Sequence[np.ndarray], reaches: Sequence[float] = REACHES) -> Grids:
    """Grids for each geometry's walls (W, 2, 2) metres, packed as `Grids` describes."""
    frames, shapes, counts, lists = [], [], [], []
    first = 0
    for walls in geometry_walls:
        frame, (nx, ny), near = _one(np.asarray(walls, np.float64), reaches)
        frames.append([*frame, *reaches])
        shapes.append([nx, ny, first])
        counts.append(near.sum(-1).ravel())
        lists.append(np.nonzero(near)[2])  # row-major: each (cell, reach)'s walls in turn, ascending
        first += nx * ny
    return Grids(
        frames=np.asarray(frames, np.float32).reshape(-1, 3 + len(reaches)),
        shapes=np.asarray(shapes, np.int32).reshape(-1, 3),
        cell_offsets=np.concatenate([[0], np.cumsum(np.concatenate(counts))]).astype(np.int32),
        cell_walls=np.concatenate(lists).astype(np.int32),
    )
