"""Loading Cubicasa5k-style SVG floor plans."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np

from .core import MARGIN, RES
from .raster import masks

DOOR_BUFFER = 5.
"""Centimetres each door polygon is grown by before it's cut out of the walls, so no sliver of wall is left."""

_NUMBER = re.compile(r'[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?')


def _shapely():
    try:
        import shapely
        import shapely.ops
    except ImportError as e:
        raise ImportError('from_svg needs shapely; install it with `pip install jaxstep[svg]`') from e
    return shapely


def _local(tag: str) -> str:
    """Tag name without its XML namespace."""
    return tag.rsplit('}', 1)[-1]


def _points(attr: str) -> np.ndarray:
    """An SVG ``points`` attribute, ``"x,y x,y ..."``, as a (P, 2) float array."""
    nums = [float(v) for v in _NUMBER.findall(attr)]
    if len(nums) % 2:
        raise ValueError(f'polygon points {attr[:60]!r}... hold an odd number of coordinates')
    return np.asarray(nums, float).reshape(-1, 2)


def _polygons(root: ET.Element) -> dict[str, list[np.ndarray]]:
    """Polygons directly under each ``<g>`` whose class starts with Wall, Door or Space.

    Only direct children count: Cubicasa nests doors and windows inside wall groups, and panels inside doors.
    """
    out: dict[str, list[np.ndarray]] = {'Wall': [], 'Door': [], 'Space': []}
    for g in root.iter():
        if _local(g.tag) != 'g':
            continue
        words = g.get('class', '').split()
        if not words or words[0] not in out:
            continue
        for child in g:
            if _local(child.tag) == 'polygon' and child.get('points'):
                pts = _points(child.get('points'))
                if len(pts) >= 3:
                    out[words[0]].append(pts)
    return out


def _centroid(poly: np.ndarray) -> np.ndarray:
    """Area centroid of a simple polygon (P, 2); the vertex mean if it has no area."""
    x, y = poly[:, 0], poly[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x*yn - xn*y
    area = cross.sum()/2
    if abs(area) < 1e-12:
        return poly.mean(0)
    return np.array([((x + xn)*cross).sum(), ((y + yn)*cross).sum()])/(6*area)


def _rings(geom: Any) -> list[np.ndarray]:
    """Every ring (exterior and holes) of a (Multi)Polygon or collection, as (P, 2) closed coordinate arrays."""
    if geom.is_empty:
        return []
    if hasattr(geom, 'geoms'):
        return [r for part in geom.geoms for r in _rings(part)]
    if geom.geom_type != 'Polygon':
        return []
    return [np.asarray(geom.exterior.coords)] + [np.asarray(r.coords) for r in geom.interiors]


def _unique_edges(rings: list[np.ndarray]) -> np.ndarray:
    """Ring edges as (W, 2, 2), dropping zero-length edges and duplicates (either direction)."""
    if not rings:
        return np.zeros((0, 2, 2))
    edges = np.concatenate([np.stack([r[:-1], r[1:]], 1) for r in rings if len(r) > 1])
    edges = edges[np.linalg.norm(edges[:, 1] - edges[:, 0], axis=-1) > 1e-9]
    # Order each edge's endpoints so reversed duplicates compare equal.
    key = np.round(edges, 6)
    flip = (key[:, 0, 0] > key[:, 1, 0]) | ((key[:, 0, 0] == key[:, 1, 0]) & (key[:, 0, 1] > key[:, 1, 1]))
    key[flip] = key[flip, ::-1]
    _, first = np.unique(key.reshape(-1, 4), axis=0, return_index=True)
    return edges[np.sort(first)]


def from_svg(svg: str, res: float = RES) -> dict[str, Any]:
    """Builds a geometry from a Cubicasa5k-style SVG floor plan, given as the SVG's text.

    Reads ``<polygon points="x,y x,y ...">`` elements sitting directly in ``<g class="Wall">``,
    ``<g class="Door">`` and ``<g class="Space ...">`` groups (the class may carry more words, like
    ``"Space Kitchen"``). Coordinates are centimetres with y down; transforms are ignored.

    Walls are the boundary edges of the union of wall polygons, less the door polygons grown by
    :data:`DOOR_BUFFER` cm, so every door leaves a gap; straight runs are merged and duplicates removed.
    Coordinates become metres with y up, shifted so the plan's left and bottom edges (over all wall and space
    points) sit at :data:`MARGIN`. Each space gets a
    light at its centroid and its own room id in ``masks``, in document order. Needs shapely
    (``pip install jaxstep[svg]``).
    """
    shapely = _shapely()
    try:
        root = ET.fromstring(svg)
    except ET.ParseError as e:
        raise ValueError(f'from_svg could not parse the SVG: {e}') from e
    polys = _polygons(root)
    if not polys['Wall']:
        raise ValueError('from_svg found no <polygon> directly under a <g class="Wall"> group')
    if not polys['Space']:
        raise ValueError('from_svg found no <polygon> directly under a <g class="Space ..."> group')

    # buffer(0) repairs self-touching or badly wound polygons before the boolean operations.
    walls = shapely.ops.unary_union([shapely.Polygon(p).buffer(0) for p in polys['Wall']])
    if polys['Door']:
        doors = shapely.ops.unary_union([shapely.Polygon(p).buffer(0) for p in polys['Door']])
        walls = walls.difference(doors.buffer(DOOR_BUFFER, join_style='mitre'))
    # simplify(0) drops the collinear vertices that unions leave behind, merging straight runs.
    edges = _unique_edges(_rings(walls.simplify(0)))

    pts = np.concatenate(polys['Wall'] + polys['Space'])
    left, bottom = pts[:, 0].min(), pts[:, 1].max()

    def to_metres(p: np.ndarray) -> np.ndarray:
        return np.stack([(p[..., 0] - left)/100 + MARGIN, (bottom - p[..., 1])/100 + MARGIN], -1)

    walls_m = to_metres(edges)
    spaces = [to_metres(p) for p in polys['Space']]
    lights = np.stack([_centroid(s) for s in spaces])
    return {'walls': walls_m, 'lights': lights, 'masks': masks(walls_m, spaces, res), 'res': res}
