"""Comparisons of two kernel outputs, shared by the CPU and GPU tests.

Two implementations of the same float32 math differ by rounding (cos, sin and FMA differ between libraries).
A ray through the point where two lines meet, or grazing the camera's near plane, may then pick either line, so
indices are allowed to differ on a tiny fraction of rays; every ray that hits the same line in both must agree.
"""

import numpy as np

from jaxstep import core

MAX_INDEX_MISMATCH = 1e-3  # fraction of rays


def assert_renders_close(a: core.Render, b: core.Render, atol: float = 1e-4) -> None:
    ia, ib = np.asarray(a.indices), np.asarray(b.indices)
    same = ia == ib
    allowed = max(1, MAX_INDEX_MISMATCH * same.size)  # one junction ray is allowed in small comparisons
    assert (~same).sum() <= allowed, f"{(~same).sum()} of {same.size} rays hit different lines"
    da, db = np.asarray(a.distances), np.asarray(b.distances)
    both = np.isfinite(da) & np.isfinite(db) & same
    np.testing.assert_allclose(da[both], db[both], rtol=1e-4, atol=atol)
    assert (np.isfinite(da) != np.isfinite(db)).sum() <= allowed
    for name in ("locations", "dots"):
        np.testing.assert_allclose(np.asarray(getattr(a, name))[same], np.asarray(getattr(b, name))[same], atol=atol)
    np.testing.assert_allclose(np.asarray(a.screen)[same], np.asarray(b.screen)[same], atol=atol)
    for out in (a, b):
        assert np.isfinite(np.asarray(out.screen)).all()
        assert np.isfinite(np.asarray(out.locations)).all() and np.isfinite(np.asarray(out.dots)).all()


def assert_observations_close(a: core.Observation, b: core.Observation, atol: float = 1e-4) -> None:
    """As assert_renders_close, for image columns: a column averages several rays, so one junction ray changes its
    colour and depth (and a grazing middle ray its location more than elsewhere); as many columns as rays are
    allowed to differ."""
    for name in core.OBSERVATIONS:
        assert (getattr(a, name) is None) == (getattr(b, name) is None), f"{name}: made by one side only"
    same = None
    if a.indices is not None:
        ia, ib = np.asarray(a.indices), np.asarray(b.indices)
        same = ia == ib
        allowed = max(1, MAX_INDEX_MISMATCH * same.size)
        assert (~same).sum() <= allowed, f"{(~same).sum()} of {same.size} middle rays hit different lines"
    for name in ("rgb", "depth", "locations"):
        if getattr(a, name) is None:
            continue
        x, y = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        assert x.shape == y.shape and np.isfinite(x).all() and np.isfinite(y).all(), name
        far = np.abs(x - y) > atol
        if name == "locations":  # (..., W): compared where both middle rays hit the same line
            far = far & same if same is not None else far
        else:  # per column: rgb (..., W, 3), depth (..., W, 1)
            far = far.any(-1)
        assert far.sum() <= max(1, MAX_INDEX_MISMATCH * far.size), f"{name}: {far.sum()} of {far.size} columns differ"


def assert_physics_close(a, b, atol: float = 1e-4) -> None:
    (agents_a, progress_a), (agents_b, progress_b) = a, b
    np.testing.assert_allclose(progress_a, progress_b, atol=atol)
    np.testing.assert_allclose(agents_a.positions, agents_b.positions, atol=atol)
    np.testing.assert_allclose(agents_a.velocity, agents_b.velocity, atol=atol)
    np.testing.assert_allclose(agents_a.angvelocity, agents_b.angvelocity, atol=atol)
    # angles near the wrap point may land either side of +-180
    da = np.asarray(agents_a.angles) - np.asarray(agents_b.angles)
    np.testing.assert_allclose((da + 180) % 360 - 180, 0, atol=1e-2)
