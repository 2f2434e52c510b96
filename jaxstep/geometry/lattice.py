"""Axis-aligned walls drawn on a lattice of unit edges, for the generators.

Generators draw walls as unit edges between lattice points, erase edges to make doors and gaps, and then
read off walls as maximal straight runs, so shared walls between neighbouring rooms come out once. Runs
are broken where perpendicular walls meet them, so walls never cross: either at every junction (walls then
meet only at their endpoints) or only where a perpendicular wall passes straight through (fewer, longer
walls, some meeting others' middles in T-junctions).
"""
from __future__ import annotations

import numpy as np


class Lattice:
    """Unit edges on an ``nx`` by ``ny`` lattice of cells (``nx + 1`` by ``ny + 1`` points).

    ``hor[y, x]`` is the edge from point (x, y) to (x + 1, y), shape (ny + 1, nx);
    ``ver[y, x]`` is the edge from point (x, y) to (x, y + 1), shape (ny, nx + 1).
    """

    def __init__(self, nx: int, ny: int):
        self.nx, self.ny = nx, ny
        self.hor = np.zeros((ny + 1, nx), bool)
        self.ver = np.zeros((ny, nx + 1), bool)

    def hline(self, y: int, x0: int, x1: int, value: bool = True) -> None:
        """Sets (or with ``value=False`` erases) the horizontal edges from (x0, y) to (x1, y)."""
        self.hor[y, min(x0, x1):max(x0, x1)] = value

    def vline(self, x: int, y0: int, y1: int, value: bool = True) -> None:
        """Sets (or erases) the vertical edges from (x, y0) to (x, y1)."""
        self.ver[min(y0, y1):max(y0, y1), x] = value

    def rect(self, x0: int, y0: int, x1: int, y1: int, value: bool = True) -> None:
        """Sets (or erases) the outline of the rectangle [x0, x1] x [y0, y1]."""
        self.hline(y0, x0, x1, value)
        self.hline(y1, x0, x1, value)
        self.vline(x0, y0, y1, value)
        self.vline(x1, y0, y1, value)

    def walls(self, break_at: str = 'junctions') -> np.ndarray:
        """Maximal straight runs of edges: (W, 2, 2) in lattice units (x, y).

        ``break_at='junctions'`` breaks runs at every point a perpendicular edge touches, so walls meet only
        at endpoints. ``'crossings'`` breaks only horizontal runs, where a vertical run passes through.
        """
        if break_at not in ('junctions', 'crossings'):
            raise ValueError(f"break_at must be 'junctions' or 'crossings'; got {break_at!r}")
        below = np.zeros((self.ny + 1, self.nx + 1), bool)
        below[1:] = self.ver
        above = np.zeros((self.ny + 1, self.nx + 1), bool)
        above[:-1] = self.ver
        hjunc = np.zeros((self.ny + 1, self.nx + 1), bool)
        if break_at == 'crossings':
            vjunc = above & below
        else:
            vjunc = above | below
            hjunc[:, :-1] |= self.hor
            hjunc[:, 1:] |= self.hor

        hor = self._runs(self.hor, vjunc)
        ver = self._runs(self.ver.T, hjunc.T)[:, :, ::-1]
        return np.concatenate([hor, ver]).astype(float)

    @staticmethod
    def _runs(edges: np.ndarray, junctions: np.ndarray) -> np.ndarray:
        """Runs along the last axis of ``edges`` (rows, n), broken where ``junctions`` (rows, n + 1) is set.

        Returns (R, 2, 2) as ((start, row), (end, row)).
        """
        rows, n = edges.shape
        pad = np.zeros((rows, 1), bool)
        prev = np.concatenate([pad, edges[:, :-1]], 1)
        nxt = np.concatenate([edges[:, 1:], pad], 1)
        starts = edges & (~prev | junctions[:, :-1])
        ends = edges & (~nxt | junctions[:, 1:])
        sr, sc = np.nonzero(starts)
        _, ec = np.nonzero(ends)  # row-major order pairs each start with its end
        return np.stack([np.stack([sc, sr], -1), np.stack([ec + 1, sr], -1)], 1)
