"""Geometries: 2D flatland worlds of walls, lights and rooms, as plain dicts.

See :mod:`jaxstep.geometry.core` for the format. This package holds the format's helpers
(:func:`validate`, :func:`masks`, coordinate conversions) and generators of geometries.
"""
from .checks import AGENT_RADIUS, components, crossings, free_space
from .core import MARGIN, RES, center_coords, cyclic_pairs, indices, validate
from .maze import maze, mazes
from .plans import TEST_SEED_START, floorplan, floorplans
from .plot import display
from .raster import WALL_BUFFER, mask_shape, masks
from .svg import from_svg

__all__ = [
    'AGENT_RADIUS', 'MARGIN', 'RES', 'TEST_SEED_START', 'WALL_BUFFER',
    'display', 'floorplan', 'floorplans', 'from_svg', 'maze', 'mazes',
    'center_coords', 'components', 'crossings', 'cyclic_pairs', 'free_space', 'indices', 'mask_shape', 'masks',
    'validate',
]
