"""Tiny hand-made geometries for tests and demos."""
from __future__ import annotations

from typing import Any

import numpy as np

from .geometry import MARGIN, RES, cyclic_pairs, masks


def _unit_square() -> np.ndarray:
    """Corners of a square inscribed in the unit circle, (4, 2): top-right, top-left, bottom-left, bottom-right."""
    angles = np.arange(np.pi/4, 2*np.pi, np.pi/2)
    return np.stack([np.cos(angles), np.sin(angles)], -1)


def box(width: float = 5) -> dict[str, Any]:
    """An empty square room ``width`` metres across, with one light in the middle.

    Walls (4, 2, 2) run top, left, bottom, right; for ``width=5`` the corners are (6, 6), (1, 6), (1, 1), (6, 1).
    """
    corners = width/np.sqrt(2)*_unit_square() + width/2 + MARGIN
    walls = cyclic_pairs(corners)
    lights = np.full((1, 2), width/2 + MARGIN)
    return {'walls': walls, 'lights': lights, 'masks': masks(walls, [corners]), 'res': RES}


def column(width: float = 5, column_width: float = .1) -> dict[str, Any]:
    """A square room ``width`` metres across with no outer walls, just a square column in the middle.

    Walls (4, 2, 2) are the column's; four lights sit around it, each 1 m from the centre on a diagonal.
    """
    unit = _unit_square()
    corners = width/np.sqrt(2)*unit + width/2 + MARGIN
    walls = cyclic_pairs(column_width/np.sqrt(2)*unit + width/2 + MARGIN)
    lights = np.sqrt(2)*unit + width/2 + MARGIN
    return {'walls': walls, 'lights': lights, 'masks': masks(walls, [corners]), 'res': RES}
