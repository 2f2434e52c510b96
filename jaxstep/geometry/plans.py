"""Procedural home-like floor plans.

Each plan is a rectangle of 8-16 m a side, cut into rooms by recursive subdivision, sometimes with a
corridor down the middle and a corner room taken out (giving an L-shaped outline). Doors join the rooms
into one connected home; some rooms get a column or a short partition wall. Everything lies on a 10 cm
lattice, which keeps doors, junctions and wall merging exact.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .core import MARGIN, RES
from .lattice import Lattice
from .raster import masks, polygon_cells

TEST_SEED_START: int = 2**30
"""Seeds below this are for training, seeds from it on are held out for testing."""

UNIT = .1                    # metres per lattice unit
MIN_ROOM, MAX_ROOM = 20, 60  # room sides, in units
CORRIDOR = (12, 16)          # corridor widths, in units
DOOR = (8, 12)               # door widths, in units
DOOR_FRAME = 2               # units of wall left either side of a door
MIN_WALLS, MAX_WALLS = 50, 400


def floorplans(n: int, seed: int = 0, res: float = RES) -> list[dict[str, Any]]:
    """Generates ``n`` home-like floor plans.

    Plan ``i`` depends only on ``(seed, i)``, so ``floorplans(10, seed)[3] == floorplans(4, seed)[3]``.
    By convention, seeds ``< TEST_SEED_START`` (2**30) are for training and seeds ``>= TEST_SEED_START``
    are held out for testing. Plans are practically all distinct: the first 5000 of a seed are.

    Each plan is a geometry dict: ``walls`` (W, 2, 2) metres with 50 <= W <= 400, walls meeting only at
    their endpoints; ``lights`` (R, 2) metres, one in the middle of each room; ``masks`` with room ids
    1..R; ``res`` metres per cell. Doors are 0.8-1.2 m wide and every room can be reached from every other.
    """
    if seed < 0:
        raise ValueError(f'seed must be non-negative; got {seed}')
    return [floorplan(seed, i, res) for i in range(n)]


def floorplan(seed: int, index: int, res: float = RES) -> dict[str, Any]:
    """Plan ``index`` of ``seed``: the same as ``floorplans(index + 1, seed)[index]``."""
    rng = np.random.default_rng([seed, index])
    # About a third of attempts are rejected (too few walls, rooms cut off); the rng just moves on.
    while True:
        plan = _attempt(rng, res)
        if plan is not None:
            return plan


def _attempt(rng: np.random.Generator, res: float) -> dict[str, Any] | None:
    nx, ny = rng.integers(80, 161, 2)
    rooms = _subdivide(rng, nx, ny)
    edges = _adjacency(rooms)
    if not _connected(len(rooms), edges):
        return None
    rooms, edges = _drop_corner(rng, rooms, edges, nx, ny)

    lat = Lattice(int(nx), int(ny))
    for r in rooms:
        lat.rect(*r)
    for _, _, axis, line, s0, s1 in _doors(rng, len(rooms), edges):
        width = rng.integers(DOOR[0], min(DOOR[1], s1 - s0 - 2*DOOR_FRAME) + 1)
        start = rng.integers(s0 + DOOR_FRAME, s1 - DOOR_FRAME - width + 1)
        (lat.vline if axis == 0 else lat.hline)(line, start, start + width, False)
    columns = [c for c in (_furnish(rng, lat, r) for r in rooms) if c is not None]

    walls = lat.walls()
    if not MIN_WALLS <= len(walls) <= MAX_WALLS:
        return None
    walls = walls*UNIT + MARGIN
    rooms = np.asarray(rooms, float)*UNIT + MARGIN
    spaces = [np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]) for x0, y0, x1, y1 in rooms]
    lights = (rooms[:, :2] + rooms[:, 2:])/2
    m = masks(walls, spaces, res)
    if columns:
        # Columns are solid: no free cells inside them.
        boxes = [np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])*UNIT + MARGIN for x0, y0, x1, y1 in columns]
        _, i, j = polygon_cells(boxes, m.shape, res)
        m[i, j] = -1
    return {'walls': walls, 'lights': lights, 'masks': m, 'res': res}


def _subdivide(rng: np.random.Generator, nx: int, ny: int) -> list[tuple[int, int, int, int]]:
    """Rooms (x0, y0, x1, y1) in units tiling the nx by ny rectangle; maybe with a corridor across the middle."""
    rooms: list[tuple[int, int, int, int]] = []
    long_x = nx >= ny
    short = ny if long_x else nx
    cw = rng.integers(CORRIDOR[0], CORRIDOR[1] + 1)
    if short >= 2*MIN_ROOM + cw and rng.random() < .5:
        c0 = rng.integers(MIN_ROOM, short - MIN_ROOM - cw + 1)
        if long_x:
            parts = [(0, 0, nx, c0), (0, c0 + cw, nx, ny)]
            rooms.append((0, c0, nx, c0 + cw))
        else:
            parts = [(0, 0, c0, ny), (c0 + cw, 0, nx, ny)]
            rooms.append((c0, 0, c0 + cw, ny))
    else:
        parts = [(0, 0, nx, ny)]
    for p in parts:
        _split(rng, p, rooms)
    return rooms


def _split(rng: np.random.Generator, rect: tuple[int, int, int, int], out: list) -> None:
    x0, y0, x1, y1 = rect
    w, h = x1 - x0, y1 - y0
    can = [w >= 2*MIN_ROOM, h >= 2*MIN_ROOM]
    must = max(w, h) > MAX_ROOM
    if not any(can) or (not must and rng.random() < (.7 if max(w, h) <= 50 else .3)):
        out.append((int(x0), int(y0), int(x1), int(y1)))
        return
    # Prefer cutting across the longer side, so rooms stay roughly square.
    if all(can):
        axis = int(h > w) if rng.random() < .85 else int(h <= w)
    else:
        axis = 0 if can[0] else 1
    if axis == 0:
        x = rng.integers(x0 + MIN_ROOM, x1 - MIN_ROOM + 1)
        _split(rng, (x0, y0, x, y1), out)
        _split(rng, (x, y0, x1, y1), out)
    else:
        y = rng.integers(y0 + MIN_ROOM, y1 - MIN_ROOM + 1)
        _split(rng, (x0, y0, x1, y), out)
        _split(rng, (x0, y, x1, y1), out)


def _adjacency(rooms: list) -> list[tuple[int, int, int, int, int, int]]:
    """Pairs of rooms sharing enough wall for a door: (a, b, axis, line, start, end) in units.

    ``axis`` 0 means a vertical shared wall at x = line running from y = start to end; 1 a horizontal one.
    """
    r = np.asarray(rooms)
    out = []
    for axis in (0, 1):
        lo, hi = r[:, axis], r[:, axis + 2]           # extent across the shared wall
        s_lo, s_hi = r[:, 1 - axis], r[:, 3 - axis]   # extent along it
        a, b = np.nonzero(hi[:, None] == lo[None, :])
        s0 = np.maximum(s_lo[a], s_lo[b])
        s1 = np.minimum(s_hi[a], s_hi[b])
        ok = s1 - s0 >= DOOR[0] + 2*DOOR_FRAME
        pairs = zip(a[ok], b[ok], s0[ok], s1[ok], strict=True)
        out += [(int(i), int(j), axis, int(hi[i]), int(p), int(q)) for i, j, p, q in pairs]
    return out


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def _connected(n: int, edges: list) -> bool:
    parent = list(range(n))
    for e in edges:
        parent[_find(parent, e[0])] = _find(parent, e[1])
    return len({_find(parent, i) for i in range(n)}) == 1


def _drop_corner(rng: np.random.Generator, rooms: list, edges: list, nx: int, ny: int) -> tuple[list, list]:
    """Sometimes removes one room in a corner of the outline, if the rest stays connected."""
    if len(rooms) < 5 or rng.random() > .4:
        return rooms, edges
    corner = [k for k, (x0, y0, x1, y1) in enumerate(rooms)
              if (x0 == 0 or x1 == nx) and (y0 == 0 or y1 == ny) and x1 - x0 >= MIN_ROOM and y1 - y0 >= MIN_ROOM]
    if not corner:
        return rooms, edges
    k = corner[rng.integers(len(corner))]
    kept = [e for e in edges if k not in e[:2]]
    if not _connected(len(rooms) - 1, [(a - (a > k), b - (b > k)) for a, b, *_ in kept]):
        return rooms, edges
    shift = lambda i: i - (i > k)  # noqa: E731
    return rooms[:k] + rooms[k + 1:], [(shift(a), shift(b), *rest) for a, b, *rest in kept]


def _doors(rng: np.random.Generator, n: int, edges: list) -> list:
    """A random spanning tree of the adjacency graph plus a few extra doors, making loops."""
    order = rng.permutation(len(edges))
    parent = list(range(n))
    chosen = []
    for k in order:
        a, b = _find(parent, edges[k][0]), _find(parent, edges[k][1])
        if a != b:
            parent[a] = b
            chosen.append(edges[k])
        elif rng.random() < .2:
            chosen.append(edges[k])
    return chosen


def _furnish(rng: np.random.Generator, lat: Lattice, room: tuple[int, int, int, int]
             ) -> tuple[int, int, int, int] | None:
    """Maybe adds a column or a short partition wall to a room, keeping 1 m clear around them.

    Returns the column's (x0, y0, x1, y1) in units if one was added.
    """
    x0, y0, x1, y1 = room
    w, h = x1 - x0, y1 - y0
    u = rng.random()
    if u < .2 and min(w, h) >= 35:
        size = rng.integers(2, 5)
        cx, cy = (x0 + x1)//2, (y0 + y1)//2
        for _ in range(4):
            px = rng.integers(x0 + 10, x1 - 10 - size + 1)
            py = rng.integers(y0 + 10, y1 - 10 - size + 1)
            if max(abs(px + size/2 - cx), abs(py + size/2 - cy)) >= 6:  # keep the light clear
                lat.rect(px, py, px + size, py + size)
                return px, py, px + size, py + size
    elif u < .4 and min(w, h) >= 30:
        side = rng.integers(4)
        vertical = side < 2  # partitions off the bottom/top walls run vertically
        along0, along1 = (x0, x1) if vertical else (y0, y1)
        depth = h if vertical else w
        base = rng.integers(along0 + 10, along1 - 10 + 1)
        length = rng.integers(6, int(.4*depth) + 1)
        if vertical:
            y = y0 if side == 0 else y1
            # Stay 0.5 m clear of any door in the host wall.
            if lat.hor[y, base - 5:base + 5].all():
                lat.vline(base, y, y + length if side == 0 else y - length)
        else:
            x = x0 if side == 2 else x1
            if lat.ver[base - 5:base + 5, x].all():
                lat.hline(base, x, x + length if side == 2 else x - length)
    return None
