"""Drawing geometries with matplotlib."""
from __future__ import annotations

from typing import Any

import numpy as np


def display(g: dict[str, Any], ax: Any = None) -> Any:
    """Draws a geometry: its mask as coloured rooms, walls as white lines, lights as yellow dots.

    ``ax`` is a matplotlib Axes to draw on; without one a new figure is made. Axes are in metres, with y up.
    Returns the matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 6))
    fig = ax.figure

    m = np.asarray(g['masks'])
    res = float(g['res'])
    h, w = m.shape
    # Walls dark grey, outside black, rooms cycling through a categorical palette.
    palette = plt.get_cmap('tab20').colors
    n = max(int(m.max()), 1)
    cmap = ListedColormap([(.25, .25, .25), (0, 0, 0)] + [palette[k % len(palette)] for k in range(n)])
    ax.imshow(m + 1, cmap=cmap, vmin=-.5, vmax=n + 1.5, extent=(0, w*res, 0, h*res),
              origin='upper', interpolation='nearest')

    walls = np.asarray(g['walls'], dtype=float).reshape(-1, 2, 2)
    if len(walls):
        from matplotlib.collections import LineCollection
        ax.add_collection(LineCollection(walls, colors='white', linewidths=1.5))
    lights = np.asarray(g['lights'], dtype=float).reshape(-1, 2)
    if len(lights):
        ax.scatter(lights[:, 0], lights[:, 1], c='yellow', s=20, edgecolors='black', linewidths=.5, zorder=3)

    ax.set_xlim(0, w*res)
    ax.set_ylim(0, h*res)
    ax.set_aspect('equal')
    ax.set_xlabel('x (m)')
    ax.set_ylabel('y (m)')
    return fig
