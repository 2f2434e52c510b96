"""Procedural grid mazes with a few loops."""
from __future__ import annotations

from typing import Any

import numpy as np

from .core import MARGIN, RES
from .lattice import Lattice
from .raster import masks

UNIT = .1             # metres per lattice unit
CELL = (15, 20)       # cell sides, in units
LOOPS = .1            # chance each wall that would close a loop is removed anyway
LIGHTS = .25          # chance each cell gets a light


def mazes(n: int, seed: int = 0, size: tuple[int, int] = (8, 8), res: float = RES) -> list[dict[str, Any]]:
    """Generates ``n`` grid mazes of ``size = (rows, cols)`` square cells, each 1.5-2 m a side.

    Maze ``i`` depends only on ``(seed, i, size)``; like :func:`floorplans`, seeds ``< TEST_SEED_START``
    are for training and the rest for testing. Each maze is a spanning tree of the cells (every cell
    reachable) with about 10% of the remaining inner walls also knocked through, making loops.

    Returns geometry dicts: ``walls`` (W, 2, 2) metres, collinear runs merged into single walls that never
    cross (they may meet another wall's middle, T-style); ``lights`` (L, 2) metres at the centres of about a
    quarter of the cells (at least one); ``masks`` with one id per cell: cell (r, c), counting rows from
    the top, has id ``1 + r*cols + c``; ``res`` metres per mask cell.
    """
    if seed < 0:
        raise ValueError(f'seed must be non-negative; got {seed}')
    rows, cols = size
    if rows < 1 or cols < 1:
        raise ValueError(f'size must be (rows, cols) with both >= 1; got {size}')
    return [maze(seed, i, size, res) for i in range(n)]


def maze(seed: int, index: int, size: tuple[int, int] = (8, 8), res: float = RES) -> dict[str, Any]:
    """Maze ``index`` of ``seed``: the same as ``mazes(index + 1, seed, size)[index]``."""
    rows, cols = size
    rng = np.random.default_rng([seed, index, rows, cols])
    cell = int(rng.integers(CELL[0], CELL[1] + 1))

    # Inner walls: 'v' walls sit right of cell (r, c), 'h' walls below it; r counts from the top.
    inner = [('v', r, c) for r in range(rows) for c in range(cols - 1)] + \
            [('h', r, c) for r in range(rows - 1) for c in range(cols)]
    parent = list(range(rows*cols))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    lat = Lattice(cols*cell, rows*cell)
    lat.rect(0, 0, cols*cell, rows*cell)
    loops = rng.random(len(inner)) < LOOPS
    for k in rng.permutation(len(inner)):
        kind, r, c = inner[k]
        a, b = r*cols + c, (r*cols + c + 1 if kind == 'v' else (r + 1)*cols + c)
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
        elif not loops[k]:
            y = (rows - r)*cell  # lattice y grows upwards
            if kind == 'v':
                lat.vline((c + 1)*cell, y - cell, y)
            else:
                lat.hline(y - cell, c*cell, (c + 1)*cell)

    walls = lat.walls('crossings')*UNIT + MARGIN
    r, c = np.divmod(np.arange(rows*cols), cols)
    x0, y0 = c*cell*UNIT + MARGIN, (rows - 1 - r)*cell*UNIT + MARGIN
    side = cell*UNIT
    spaces = list(np.stack([x0, y0], -1)[:, None] + side*np.array([[0, 0], [1, 0], [1, 1], [0, 1]]))
    lit = rng.random(rows*cols) < LIGHTS
    lit[rng.integers(rows*cols)] = True
    lights = np.stack([x0 + side/2, y0 + side/2], -1)[lit]
    return {'walls': walls, 'lights': lights, 'masks': masks(walls, spaces, res), 'res': res}
