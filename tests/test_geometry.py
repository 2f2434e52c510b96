from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxstep import toys
from jaxstep.geometry import (
    AGENT_RADIUS,
    MARGIN,
    RES,
    TEST_SEED_START,
    center_coords,
    components,
    crossings,
    cyclic_pairs,
    display,
    floorplan,
    floorplans,
    free_space,
    from_svg,
    indices,
    mask_shape,
    masks,
    maze,
    mazes,
    validate,
)

FIXTURES = Path(__file__).parent / 'fixtures'


def property_test(strategy, examples=8):
    """Runs a test over hypothesis-drawn seeds (hypothesis is a test dependency)."""
    def wrap(f):
        return settings(max_examples=examples, deadline=None)(given(strategy())(f))
    return wrap

# ---------------------------------------------------------------- core


def test_constants():
    assert MARGIN == 1. and RES == .2


def test_cyclic_pairs():
    pts = np.array([[0, 0], [1, 0], [1, 1]])
    pairs = cyclic_pairs(pts)
    assert pairs.shape == (3, 2, 2)
    np.testing.assert_array_equal(pairs[2], [[1, 1], [0, 0]])
    np.testing.assert_array_equal(pairs[0], [[0, 0], [1, 0]])


def test_center_coords_and_indices_roundtrip():
    shape, res = (10, 7), .25
    ij = np.stack(np.meshgrid(np.arange(10), np.arange(7), indexing='ij'), -1).reshape(-1, 2)
    xy = center_coords(ij, shape, res)
    np.testing.assert_allclose(xy[0], [.125, res*(10 - .5)])
    np.testing.assert_array_equal(indices(xy, shape, res), ij)
    # Any point in a cell maps to that cell.
    rng = np.random.default_rng(0)
    jitter = rng.uniform(-.49, .49, xy.shape)*res
    np.testing.assert_array_equal(indices(xy + jitter, shape, res), ij)


def test_masks_shape_and_overwrite():
    a = np.array([[1, 1], [3, 1], [3, 3], [1, 3]], float)
    b = a + [1, 0]
    m = masks(np.zeros((0, 2, 2)), [a, b], res=.5)
    assert m.shape == mask_shape(np.zeros((0, 2, 2)), [a, b], .5) == (9, 11)
    # Room 2 overwrites room 1 where they overlap.
    i, j = indices([2.5, 2], m.shape, .5)
    assert m[i, j] == 2
    i, j = indices([1.2, 2], m.shape, .5)
    assert m[i, j] == 1
    assert (m >= 0).all()


def test_masks_all_touched():
    # A thin triangle that covers no cell centre still marks the cells it passes through.
    tri = np.array([[1.05, 1.05], [2.95, 1.1], [1.05, 1.1]])
    m = masks(np.zeros((0, 2, 2)), [tri], res=.2)
    rows = np.unique(np.argwhere(m == 1)[:, 0])
    assert len(rows) == 1
    assert (m == 1).sum() == 10


def test_masks_diagonal_wall():
    wall = np.array([[[1., 1.], [3., 3.]]])
    m = masks(wall, [], res=.2)
    cells = np.argwhere(m == -1)
    # The thickened diagonal passes through its own cells and (by the 1 cm buffer) the ones it grazes at corners.
    xy = center_coords(cells, m.shape, .2)
    assert np.abs(xy[:, 0] - xy[:, 1]).max() <= .2 + 1e-9
    for t in np.linspace(0, 1, 21):
        i, j = indices([1 + 2*t, 1 + 2*t], m.shape, .2)
        assert m[i, j] == -1


# ---------------------------------------------------------------- validate


def _good():
    return toys.box()


def test_validate_converts():
    g = _good()
    g['walls'] = g['walls'].astype(np.float32).tolist()
    g['lights'] = []
    g['masks'] = g['masks'].astype(np.int8)
    g['extra'] = 'kept'
    out = validate(g)
    assert out['walls'].dtype == np.float64 and out['walls'].shape == (4, 2, 2)
    assert out['lights'].shape == (0, 2)
    assert np.issubdtype(out['masks'].dtype, np.integer)
    assert out['extra'] == 'kept'


@pytest.mark.parametrize('change, match', [
    (lambda g: g.pop('walls'), r"missing key\(s\) \['walls'\]"),
    (lambda g: g.pop('res'), r"missing key\(s\) \['res'\]"),
    (lambda g: g.update(walls=np.zeros((4, 2))), r"geometry\['walls'\] has shape \(4, 2\).*expected \(W, 2, 2\)"),
    (lambda g: g.update(lights=np.zeros((2, 3))), r"geometry\['lights'\] has shape \(2, 3\).*expected \(L, 2\)"),
    (lambda g: g.update(masks=np.zeros(5, int)), r"geometry\['masks'\] has shape \(5,\).*expected \(H, Wm\)"),
    (lambda g: g.update(masks=g['masks'].astype(float)), r"geometry\['masks'\].*float64.*integer dtype"),
    (lambda g: g['walls'].__setitem__((0, 0, 0), np.nan), r"geometry\['walls'\] with shape \(4, 2, 2\) holds NaN"),
    (lambda g: g['lights'].__setitem__((0, 1), np.inf), r"geometry\['lights'\] with shape \(1, 2\) holds NaN or inf"),
    (lambda g: g['walls'].__setitem__((1, 1), g['walls'][1, 0]), r"zero-length walls at indices \[1\]"),
    (lambda g: g['walls'].__setitem__((2, 1, 0), 7.3),
     r"wall 2 .* outside the mask's extent; expected x in \[0, 7.2\]"),
    (lambda g: g['walls'].__setitem__((2, 1, 1), -.1), r"wall 2 .* outside the mask's extent"),
    (lambda g: g.update(masks=np.where(g['masks'] > 0, 0, g['masks'])), r"geometry\['masks'\] .* no free cells"),
    (lambda g: g.update(masks=g['masks'] - 1), r"geometry\['masks'\] .* holds -2"),
    (lambda g: g.update(res=0), r"geometry\['res'\] is 0"),
    (lambda g: g.update(res='a'), r"geometry\['res'\] is 'a'"),
])
def test_validate_errors(change, match):
    g = _good()
    change(g)
    with pytest.raises(ValueError, match=match):
        validate(g)


def test_validate_not_a_dict():
    with pytest.raises(TypeError, match='must be a dict'):
        validate([1, 2])


def test_masks_match_shapely_reference():
    shapely = pytest.importorskip('shapely')
    rng = np.random.default_rng(1)
    res, tol = .2, 1e-6
    for _ in range(5):
        tri = rng.uniform(1, 4, (3, 2))
        wall = rng.uniform(1, 4, (1, 2, 2))
        m = masks(wall, [tri], res)
        h, w = m.shape
        poly, line = shapely.Polygon(tri), shapely.LineString(wall[0]).buffer(.01, quad_segs=64)
        for i in range(h):
            for j in range(w):
                cell = shapely.box(res*j + tol, res*(h - i - 1) + tol, res*(j + 1) - tol, res*(h - i) - tol)
                expected = -1 if cell.intersects(line) else (1 if cell.intersects(poly) else 0)
                # The reference's polygonised disc ends differ from exact ones by well under a micron.
                assert m[i, j] == expected or cell.distance(line) < 1e-5, (i, j)


# ---------------------------------------------------------------- checks


def test_crossings():
    walls = np.array([
        [[0, 0], [2, 2]],
        [[0, 2], [2, 0]],      # crosses 0
        [[2, 2], [3, 2]],      # meets 0 at an endpoint
        [[2.5, 2], [2.5, 3]],  # T-junction onto 2
        [[2.8, 2], [4, 2]],    # overlaps 2
        [[5, 5], [6, 6]],
        [[7, 7], [8, 8]],      # collinear with 5 but apart
    ], float)
    assert crossings(walls).tolist() == [[0, 1], [2, 4]]


def test_components():
    free = np.array([[1, 1, 0, 1],
                     [0, 1, 0, 1],
                     [1, 0, 0, 1]], bool)
    labels = components(free)
    assert labels.max() == 3
    assert (labels > 0).sum() == free.sum()
    assert labels[0, 0] == labels[1, 1] != labels[0, 3] != labels[2, 0]


def test_free_space_box():
    g = toys.box()
    free = free_space(g, step=.05)
    assert free.shape == (144, 144)
    assert components(free).max() == 1
    # Free centres are inside the box, farther than the radius from its walls.
    ij = np.argwhere(free)
    xy = center_coords(ij, free.shape, .05)
    assert xy.min() > 1 + AGENT_RADIUS and xy.max() < 6 - AGENT_RADIUS


# ---------------------------------------------------------------- generators


def _check_passable(g):
    """Every room has room for an agent, and an agent can get from anywhere free to anywhere else."""
    free = free_space(g, AGENT_RADIUS, step=.05)
    labels = components(free)
    assert labels.max() == 1
    # Each room id in the mask keeps some free space.
    m = g['masks']
    ij = np.argwhere(free)
    rooms = m[tuple(indices(center_coords(ij, free.shape, .05), m.shape, g['res']).T)]
    assert set(np.unique(rooms)) == set(range(1, m.max() + 1))


def _check_plan(g):
    g = validate(g)
    walls = g['walls']
    assert 50 <= len(walls) <= 400
    assert (np.linalg.norm(walls[:, 1] - walls[:, 0], axis=-1) > 0).all()
    assert len(crossings(walls)) == 0
    assert walls.min() >= MARGIN
    # One light per room, each in its own room.
    m = g['masks']
    assert len(g['lights']) == m.max()
    i, j = indices(g['lights'], m.shape, g['res']).T
    np.testing.assert_array_equal(m[i, j], np.arange(1, m.max() + 1))
    _check_passable(g)


@pytest.mark.parametrize('seed', [0, 1, TEST_SEED_START])
def test_floorplans(seed):
    for g in floorplans(6, seed=seed):
        _check_plan(g)


@property_test(lambda: st.tuples(st.integers(0, 2**31), st.integers(0, 10**6)))
def test_floorplan_property(seed_index):
    _check_plan(floorplan(*seed_index))


def test_floorplans_deterministic():
    a, b = floorplans(10, seed=0), floorplans(4, seed=0)
    for k in range(4):
        for key in ('walls', 'lights', 'masks'):
            np.testing.assert_array_equal(a[k][key], b[k][key])
    np.testing.assert_array_equal(floorplan(0, 3)['walls'], a[3]['walls'])


def test_floorplans_differ():
    plans = floorplans(200, seed=7)
    assert len({p['walls'].tobytes() for p in plans}) == 200
    other = floorplans(3, seed=8)
    for p, q in zip(plans, other, strict=False):
        assert p['walls'].shape != q['walls'].shape or not np.array_equal(p['walls'], q['walls'])


def test_floorplans_bad_seed():
    with pytest.raises(ValueError, match='non-negative'):
        floorplans(1, seed=-1)


def _check_maze(g, size):
    g = validate(g)
    rows, cols = size
    m = g['masks']
    assert m.max() == rows*cols
    assert len(crossings(g['walls'])) == 0
    assert len(g['lights']) >= 1
    # Lights sit in the middle of cells; every cell is reachable.
    i, j = indices(g['lights'], m.shape, g['res']).T
    assert (m[i, j] > 0).all()
    _check_passable(g)
    # Collinear runs are merged: vertical runs are never split, horizontal ones only where a vertical
    # wall passes straight through, so walls never cross.
    w = g['walls']
    horizontal = np.isclose(w[:, 0, 1], w[:, 1, 1])
    vertical = np.isclose(w[:, 0, 0], w[:, 1, 0])
    assert (horizontal ^ vertical).all()
    assert len(_joints(w[vertical])) == 0
    v = w[vertical]
    for x, y in _joints(w[horizontal]):
        assert (np.isclose(v[:, 0, 0], x) & (v[:, :, 1].min(1) < y - 1e-9) & (v[:, :, 1].max(1) > y + 1e-9)).any()


def _joints(walls):
    """Points where two of these walls meet end to end."""
    uniq, counts = np.unique(np.round(walls.reshape(-1, 2), 6), axis=0, return_counts=True)
    return uniq[counts > 1]


@pytest.mark.parametrize('size', [(8, 8), (3, 5), (1, 1)])
def test_mazes(size):
    for g in mazes(3, seed=0, size=size):
        _check_maze(g, size)


@property_test(lambda: st.integers(0, 2**31))
def test_maze_property(seed):
    _check_maze(maze(seed, 0), (8, 8))


def test_mazes_deterministic_and_distinct():
    a, b = mazes(5, seed=2), mazes(2, seed=2)
    np.testing.assert_array_equal(a[1]['walls'], b[1]['walls'])
    np.testing.assert_array_equal(a[1]['masks'], b[1]['masks'])
    assert len({g['walls'].tobytes() for g in mazes(50, seed=2)}) == 50


def test_maze_cell_ids():
    g = maze(0, 0, size=(2, 3))
    m, res = g['masks'], g['res']
    cell = (g['walls'][:, :, 0].max() - MARGIN)/3
    for r in range(2):
        for c in range(3):
            xy = [MARGIN + (c + .5)*cell, MARGIN + (2 - r - .5)*cell]
            i, j = indices(xy, m.shape, res)
            assert m[i, j] == 1 + r*3 + c


# ---------------------------------------------------------------- svg


def _svg(name):
    return (FIXTURES/name).read_text()


def _has_wall(walls, a, b):
    w = np.round(walls, 6)
    a, b = np.round(a, 6), np.round(b, 6)
    return any((np.array_equal(x, a) and np.array_equal(y, b)) or (np.array_equal(x, b) and np.array_equal(y, a))
               for x, y in w)


def test_svg_two_rooms():
    pytest.importorskip('shapely')
    g = validate(from_svg(_svg('two_rooms.svg')))
    m = g['masks']
    assert m.max() == 2 and len(g['lights']) == 2
    np.testing.assert_allclose(g['lights'], [[2.6, 2.6], [5.7, 2.6]], atol=1e-9)
    # Coordinates: metres, y up, left/bottom at the margin.
    np.testing.assert_allclose(g['walls'].reshape(-1, 2).min(0), [MARGIN, MARGIN])
    np.testing.assert_allclose(g['walls'].reshape(-1, 2).max(0), [7.3, 4.2])
    # The outer outline comes out as four merged walls, with no duplicates anywhere.
    assert _has_wall(g['walls'], [1, 1], [7.3, 1]) and _has_wall(g['walls'], [1, 1], [1, 4.2])
    assert len(g['walls']) == 16
    # The 90 cm door plus 5 cm either side leaves a 1 m gap, from y = 2.15 to 3.15, with jambs either end.
    assert _has_wall(g['walls'], [4.1, 2.15], [4.2, 2.15]) and _has_wall(g['walls'], [4.1, 3.15], [4.2, 3.15])
    middle = g['walls'][np.isclose(g['walls'][:, :, 0], 4.1).all(1)]
    lo, hi = middle[:, :, 1].min(1), middle[:, :, 1].max(1)
    assert ((hi <= 2.15 + 1e-9) | (lo >= 3.15 - 1e-9)).all()
    assert len(crossings(g['walls'])) == 0
    assert components(free_space(g)).max() == 1


def test_svg_no_door_separates_rooms():
    pytest.importorskip('shapely')
    svg = _svg('two_rooms.svg').replace('<polygon points="310,110 320,110 320,200 310,200"/>', '')
    g = validate(from_svg(svg))
    assert components(free_space(g)).max() == 2


def test_svg_three_rooms():
    pytest.importorskip('shapely')
    g = validate(from_svg(_svg('three_rooms_l.svg')))
    m = g['masks']
    assert m.max() == 3 and len(g['lights']) == 3
    # Rooms keep document order: bedroom (bottom left), living room (top left), kitchen (top right).
    np.testing.assert_allclose(g['lights'], [[3.05, 2.55], [3.05, 5.55], [6.55, 5.55]], atol=1e-9)
    i, j = indices(g['lights'], m.shape, g['res']).T
    np.testing.assert_array_equal(m[i, j], [1, 2, 3])
    # The window doesn't cut the outer wall, and the bed is ignored.
    assert _has_wall(g['walls'], [1, 1], [1, 7.1])
    assert not np.isclose(g['walls'][..., 0], 1.5).any() and not np.isclose(g['walls'][..., 0], 3.5).any()
    assert len(crossings(g['walls'])) == 0
    _check_passable(g)


def test_svg_one_room():
    pytest.importorskip('shapely')
    g = validate(from_svg(_svg('one_room.svg')))
    assert g['masks'].max() == 1
    # Outer and inner outline of the wall ring; the duplicated top wall adds nothing.
    assert len(g['walls']) == 8
    np.testing.assert_allclose(g['lights'], [[2.1, 1.85]])


def test_svg_errors():
    pytest.importorskip('shapely')
    with pytest.raises(ValueError, match='could not parse'):
        from_svg('<svg><g class="Wall"></svg>')
    with pytest.raises(ValueError, match='Wall'):
        from_svg('<svg><g class="Space A"><polygon points="0,0 1,0 1,1"/></g></svg>')
    with pytest.raises(ValueError, match='Space'):
        from_svg('<svg><g class="Wall"><polygon points="0,0 1,0 1,1"/></g></svg>')


def test_svg_without_shapely(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, 'shapely', None)
    with pytest.raises(ImportError, match=r'pip install jaxstep\[svg\]'):
        from_svg(_svg('one_room.svg'))


# ---------------------------------------------------------------- display


@pytest.mark.parametrize('make', [toys.box, lambda: floorplan(0, 0), lambda: maze(0, 0)])
def test_display(make, tmp_path):
    matplotlib = pytest.importorskip('matplotlib')
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    g = make()
    fig = display(g)
    assert isinstance(fig, matplotlib.figure.Figure)
    ax = fig.axes[0]
    assert len(ax.images) == 1 and len(ax.collections) == 2
    h, w = g['masks'].shape
    np.testing.assert_allclose(ax.images[0].get_extent(), [0, w*g['res'], 0, h*g['res']])
    fig.savefig(tmp_path/'g.png')
    plt.close(fig)

    fig, ax = plt.subplots()
    assert display(g, ax) is fig
    plt.close(fig)
