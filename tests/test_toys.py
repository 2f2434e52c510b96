import numpy as np
import pytest

from jaxstep import toys
from jaxstep.geometry import MARGIN, RES, center_coords, indices, validate


def test_box_walls_exact():
    g = toys.box()
    expected = [[[6, 6], [1, 6]], [[1, 6], [1, 1]], [[1, 1], [6, 1]], [[6, 1], [6, 6]]]
    np.testing.assert_allclose(g['walls'], expected, atol=1e-12)
    np.testing.assert_allclose(g['lights'], [[3.5, 3.5]])
    assert g['res'] == RES


def test_box_masks():
    g = validate(toys.box())
    m = g['masks']
    assert m.shape == (36, 36)
    assert set(np.unique(m)) == {-1, 0, 1}
    # The light's cell and everything well inside the walls is free.
    i, j = indices(g['lights'][0], m.shape, g['res'])
    assert m[i, j] == 1
    xy = center_coords(np.argwhere(m != 0), m.shape, g['res'])
    assert xy.min() > 1 - 2*RES and xy.max() < 6 + 2*RES
    interior = np.argwhere(m == 1)
    xy = center_coords(interior, m.shape, g['res'])
    assert (xy > 1).all() and (xy < 6).all()
    # Every wall's cells are marked as wall, including its endpoints and midpoints.
    for wall in g['walls']:
        for t in np.linspace(0, 1, 11):
            i, j = indices((1 - t)*wall[0] + t*wall[1], m.shape, g['res'])
            assert m[i, j] == -1
    # A wall along a grid line marks the cells on both sides.
    assert (m[5:31, 4] == -1).all() and (m[5:31, 5] == -1).all()
    assert (m[7:29, 6] == 1).all()
    # The margin stays outside.
    assert (m[:5] == 0).all() and (m[:, :4] == 0).all()


@pytest.mark.parametrize('width', [3, 5, 8.3])
def test_box_widths(width):
    g = validate(toys.box(width))
    lo = MARGIN
    hi = MARGIN + width
    np.testing.assert_allclose(g['walls'].reshape(-1, 2).min(0), [lo, lo])
    np.testing.assert_allclose(g['walls'].reshape(-1, 2).max(0), [hi, hi])
    assert g['masks'].shape == (int((hi + MARGIN)/RES) + 1,)*2


def test_column():
    g = validate(toys.column())
    assert g['walls'].shape == (4, 2, 2)
    np.testing.assert_allclose(g['walls'].reshape(-1, 2).min(0), [3.45, 3.45])
    np.testing.assert_allclose(g['walls'].reshape(-1, 2).max(0), [3.55, 3.55])
    expected_lights = [[4.5, 4.5], [2.5, 4.5], [2.5, 2.5], [4.5, 2.5]]
    np.testing.assert_allclose(g['lights'], expected_lights, atol=1e-12)
    m = g['masks']
    assert m.shape == (36, 36)
    # The column occupies the single cell holding the centre; the big square room surrounds it.
    assert (m == -1).sum() == 1
    i, j = indices([3.5, 3.5], m.shape, g['res'])
    assert m[i, j] == -1
    assert (m == 1).sum() == 25*25 - 1  # cells 5..29 each way
