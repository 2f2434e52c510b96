"""Core of the geometry format: constants, coordinate conversions and validation.

A geometry is a plain dict:

- ``walls``: (W, 2, 2) float, metres; wall ``i`` runs from ``walls[i, 0]`` to ``walls[i, 1]``, each an (x, y).
- ``lights``: (L, 2) float, metres.
- ``masks``: (H, Wm) int; row 0 is the top (largest y). ``k > 0`` is a free cell of room ``k``,
  ``0`` is outside and ``-1`` is wall.
- ``res``: float, metres per mask cell.

Cell ``(i, j)`` has its centre at ``x = res*(j + .5)``, ``y = res*(H - (i + .5))``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

MARGIN: float = 1.
"""Metres of empty space left around a geometry's content, so all coordinates are positive."""

RES: float = .2
"""Default metres per mask cell."""

REQUIRED_KEYS = ('walls', 'lights', 'masks', 'res')


def cyclic_pairs(points: np.ndarray) -> np.ndarray:
    """Pairs each point with the next, wrapping around: (P, 2) -> (P, 2, 2).

    Turns a polygon's corners into its edges, ``out[k] = (points[k], points[(k+1) % P])``.
    """
    points = np.asarray(points, dtype=float)
    return np.stack([points, np.roll(points, -1, axis=0)], 1)


def center_coords(indices: np.ndarray, shape: tuple[int, int], res: float) -> np.ndarray:
    """Centres of mask cells: (..., 2) int (i, j) indices -> (..., 2) float (x, y) metres.

    ``shape`` is the mask's (H, Wm); row 0 is the top of the world.
    """
    indices = np.asarray(indices)
    i, j = indices[..., 0], indices[..., 1]
    return np.stack([res*(j + .5), res*(shape[0] - (i + .5))], -1)


def indices(coords: np.ndarray, shape: tuple[int, int], res: float) -> np.ndarray:
    """Mask cells holding points: (..., 2) float (x, y) metres -> (..., 2) int (i, j).

    Inverse of :func:`center_coords`. Points outside the mask give indices outside ``shape``.
    """
    coords = np.asarray(coords, dtype=float)
    x, y = coords[..., 0], coords[..., 1]
    j = np.floor(x/res).astype(int)
    i = shape[0] - 1 - np.floor(y/res).astype(int)
    return np.stack([i, j], -1)


def _shape_error(key: str, arr: np.ndarray, expected: str) -> ValueError:
    return ValueError(f'geometry[{key!r}] has shape {arr.shape} and dtype {arr.dtype}; expected {expected}')


def _float_array(g: dict, key: str, tail: tuple[int, ...], expected: str) -> np.ndarray:
    raw = g[key]
    try:
        arr = np.asarray(raw, dtype=float)
    except (TypeError, ValueError) as e:
        raise ValueError(f'geometry[{key!r}] could not be read as a float array ({e}); expected {expected}') from e
    if arr.size == 0:
        # An empty list has shape (0,); treat it as zero items of the right shape.
        arr = arr.reshape((0, *tail))
    if arr.ndim != 1 + len(tail) or arr.shape[1:] != tail:
        raise _shape_error(key, arr, expected)
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = np.argwhere(bad)[0][0]
        raise ValueError(f'geometry[{key!r}] with shape {arr.shape} holds NaN or inf (first at index {idx}); '
                         'expected finite coordinates in metres')
    return arr


def validate(g: dict[str, Any]) -> dict[str, Any]:
    """Checks a geometry and returns a copy with ``walls``/``lights`` as float64, ``masks`` as int, ``res`` as float.

    Raises ``TypeError`` if ``g`` isn't a dict, and ``ValueError``, naming the key, its shape and what was
    expected, for: missing keys, wrong shapes or dtypes, NaN/inf coordinates, zero-length walls, walls outside
    the mask's extent (``0..Wm*res`` by ``0..H*res`` metres) and masks without any free cell. Keys other than
    the four required are passed through.
    """
    if not isinstance(g, dict):
        raise TypeError(f'geometry must be a dict with keys {REQUIRED_KEYS}; got {type(g).__name__}')
    missing = [k for k in REQUIRED_KEYS if k not in g]
    if missing:
        raise ValueError(f'geometry is missing key(s) {missing}; expected keys {list(REQUIRED_KEYS)}')

    try:
        res = float(g['res'])
    except (TypeError, ValueError) as e:
        raise ValueError(f"geometry['res'] is {g['res']!r}; expected a positive float (metres per cell)") from e
    if not (np.isfinite(res) and res > 0):
        raise ValueError(f"geometry['res'] is {res}; expected a positive finite float (metres per cell)")

    walls = _float_array(g, 'walls', (2, 2), '(W, 2, 2) floats: W walls, each two (x, y) endpoints in metres')
    lights = _float_array(g, 'lights', (2,), '(L, 2) floats: L lights, each an (x, y) in metres')

    masks = np.asarray(g['masks'])
    if masks.ndim != 2 or masks.size == 0:
        raise _shape_error('masks', masks, '(H, Wm) ints with H, Wm > 0')
    if masks.dtype == bool or not np.issubdtype(masks.dtype, np.integer):
        raise _shape_error('masks', masks, 'an integer dtype (room id k > 0, 0 outside, -1 wall)')
    masks = masks.astype(int)
    if masks.min() < -1:
        raise ValueError(f"geometry['masks'] with shape {masks.shape} holds {masks.min()}; "
                         'expected values >= -1 (room id k > 0, 0 outside, -1 wall)')
    if not (masks > 0).any():
        raise ValueError(f"geometry['masks'] with shape {masks.shape} has no free cells; "
                         'expected at least one cell with a room id > 0')

    lengths = np.linalg.norm(walls[:, 1] - walls[:, 0], axis=-1)
    if (lengths == 0).any():
        idx = np.flatnonzero(lengths == 0)
        raise ValueError(f"geometry['walls'] with shape {walls.shape} has zero-length walls at indices "
                         f'{idx[:10].tolist()}; expected every wall to have two distinct endpoints')

    h, w = masks.shape
    extent = np.array([w*res, h*res])
    pts = walls.reshape(-1, 2)
    outside = ((pts < 0) | (pts > extent)).any(-1)
    if outside.any():
        first = int(np.flatnonzero(outside)[0])//2
        raise ValueError(f"geometry['walls'] with shape {walls.shape} has wall {first} at {walls[first].tolist()} "
                         f"outside the mask's extent; expected x in [0, {extent[0]:g}] and y in [0, {extent[1]:g}] "
                         f"(masks shape {masks.shape} at res {res:g} m)")

    out = dict(g)
    out.update(walls=walls, lights=lights, masks=masks, res=res)
    return out
