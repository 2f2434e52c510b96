"""Sanity checks on geometries: crossing walls and whether a disc-shaped agent can get everywhere."""
from __future__ import annotations

from typing import Any

import numpy as np

AGENT_RADIUS = .106
"""Metres; the radius of the agents' discs, used to judge which gaps an agent fits through."""


def crossings(walls: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    """Pairs of walls that cross or overlap: (W, 2, 2) metres -> (K, 2) int indices, ``i < j``.

    Two walls cross when each passes strictly through the other's interior, and overlap when they are
    collinear and share a stretch of positive length. Meeting at endpoints, or one wall's endpoint lying on
    another (a T-junction), is allowed.
    """
    walls = np.asarray(walls, dtype=float).reshape(-1, 2, 2)
    i, j = np.triu_indices(len(walls), 1)
    a, b = walls[i], walls[j]

    def orient(p, q, r):
        return (q[:, 0] - p[:, 0])*(r[:, 1] - p[:, 1]) - (q[:, 1] - p[:, 1])*(r[:, 0] - p[:, 0])

    # Scale the collinearity tolerance by the walls' lengths, so it's in metres.
    la = np.linalg.norm(a[:, 1] - a[:, 0], axis=-1)
    lb = np.linalg.norm(b[:, 1] - b[:, 0], axis=-1)
    d1, d2 = orient(a[:, 0], a[:, 1], b[:, 0])/la, orient(a[:, 0], a[:, 1], b[:, 1])/la
    d3, d4 = orient(b[:, 0], b[:, 1], a[:, 0])/lb, orient(b[:, 0], b[:, 1], a[:, 1])/lb
    proper = (((d1 > tol) & (d2 < -tol)) | ((d1 < -tol) & (d2 > tol))) & \
             (((d3 > tol) & (d4 < -tol)) | ((d3 < -tol) & (d4 > tol)))

    # Collinear: project b onto a's direction and measure the shared stretch.
    collinear = (np.abs(d1) <= tol) & (np.abs(d2) <= tol)
    u = (a[:, 1] - a[:, 0])/la[:, None]
    t0 = ((b[:, 0] - a[:, 0])*u).sum(-1)
    t1 = ((b[:, 1] - a[:, 0])*u).sum(-1)
    shared = np.minimum(la, np.maximum(t0, t1)) - np.maximum(0, np.minimum(t0, t1))
    overlap = collinear & (shared > tol)
    bad = proper | overlap
    return np.stack([i[bad], j[bad]], -1)


def free_space(g: dict[str, Any], radius: float = AGENT_RADIUS, step: float = .05) -> np.ndarray:
    """Where an agent's centre can be: a fine (Hf, Wf) bool grid of ``step``-metre cells.

    A fine cell is free when its centre lies in a room cell of ``g['masks']`` and is farther than ``radius``
    metres from every wall. Row 0 is the top, like the mask; the grid covers the mask's extent.
    """
    m = np.asarray(g['masks'])
    res = float(g['res'])
    h, w = m.shape
    hf, wf = int(round(h*res/step)), int(round(w*res/step))
    x = (np.arange(wf) + .5)*step
    y = h*res - (np.arange(hf) + .5)*step
    ci = np.clip(((h*res - y)/res).astype(int), 0, h - 1)
    cj = np.clip((x/res).astype(int), 0, w - 1)
    free = m[ci[:, None], cj[None, :]] > 0

    walls = np.asarray(g['walls'], dtype=float).reshape(-1, 2, 2)
    if not len(walls):
        return free
    # Only fine cells in each wall's padded bounding box can be near it.
    lo, hi = walls.min(1) - radius, walls.max(1) + radius
    j0 = np.clip(np.floor(lo[:, 0]/step).astype(int), 0, wf - 1)
    j1 = np.clip(np.floor(hi[:, 0]/step).astype(int), 0, wf - 1)
    i0 = np.clip(np.floor((h*res - hi[:, 1])/step).astype(int), 0, hf - 1)
    i1 = np.clip(np.floor((h*res - lo[:, 1])/step).astype(int), 0, hf - 1)
    nj = j1 - j0 + 1
    counts = (i1 - i0 + 1)*nj
    seg = np.repeat(np.arange(len(walls)), counts)
    local = np.arange(counts.sum()) - (np.cumsum(counts) - counts)[seg]
    i = i0[seg] + local // nj[seg]
    j = j0[seg] + local % nj[seg]
    p = np.stack([x[j], y[i]], -1)
    a, b = walls[seg, 0], walls[seg, 1]
    d = b - a
    t = np.clip(((p - a)*d).sum(-1)/np.maximum((d**2).sum(-1), 1e-30), 0, 1)
    near = np.linalg.norm(p - a - t[:, None]*d, axis=-1) <= radius
    free[i[near], j[near]] = False
    return free


def components(free: np.ndarray) -> np.ndarray:
    """Labels the 4-connected regions of a bool grid: (H, W) -> (H, W) int, 0 where not free, 1..N otherwise."""
    free = np.asarray(free, bool)
    h, w = free.shape
    labels = np.zeros((h, w), int)
    flat_free = free.ravel()
    flat = labels.ravel()
    count = 0
    while True:
        todo = flat_free & (flat == 0)
        seed = int(todo.argmax())
        if not todo[seed]:
            break
        count += 1
        flat[seed] = count
        frontier = np.array([seed])
        # Breadth-first flood fill, a whole frontier at a time.
        while len(frontier):
            r, c = np.divmod(frontier, w)
            nbrs = np.concatenate([frontier[r > 0] - w, frontier[r < h - 1] + w,
                                   frontier[c > 0] - 1, frontier[c < w - 1] + 1])
            nbrs = np.unique(nbrs[flat_free[nbrs] & (flat[nbrs] == 0)])
            flat[nbrs] = count
            frontier = nbrs
    return labels
