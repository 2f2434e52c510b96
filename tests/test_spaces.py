"""Tests for jaxstep.spaces: sampling, membership, equality, and constructor checks."""

import dataclasses
import math
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from jaxstep.spaces import Dict, MultiConstant, MultiDiscrete, MultiImage, MultiVector, Space

FAST = settings(max_examples=25, deadline=None)

# shapes are shared where they can be, since every new shape costs a compile
SPACES = {
    "image": MultiImage(2, 3, 4, 4, 3),
    "image_bounds": MultiImage(2, 3, 4, 4, 3, low=-2.0, high=-0.5),
    "vector": MultiVector(2, 3, 4),
    "vector_bounded": MultiVector(2, 3, 4, low=-1.0, high=2.0),
    "vector_low": MultiVector(2, 3, 4, low=1.5),
    "vector_high": MultiVector(2, 3, 4, high=-1.5),
    "vector_huge": MultiVector(2, 3, 4, low=-3e38, high=3e38),
    "discrete": MultiDiscrete(2, 3, 5),
    "constant": MultiConstant(2, 3, 7.0),
    "constant_inexact": MultiConstant(2, 3, 0.1),
    "dict": Dict(
        rgb=MultiImage(2, 3, 4, 4, 3),
        imu=MultiVector(2, 3, 4),
        nested=Dict({"action": MultiDiscrete(2, 3, 4), "id": MultiConstant(2, 3, 1.0)}),
    ),
}
RANDOM = [name for name, space in SPACES.items() if not isinstance(space, MultiConstant)]


def _leaves(x):
    return jax.tree_util.tree_leaves(x)


def _same(a, b) -> bool:
    la, lb = _leaves(a), _leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(u), np.asarray(v)) for u, v in zip(la, lb, strict=True))


def _check_layout(space: Space, x) -> None:
    if isinstance(space, Dict):
        assert set(x) == set(space)
        for name in space:
            _check_layout(space[name], x[name])
        return
    assert x.shape == space.shape
    assert x.dtype == space.dtype
    assert x.shape[:2] == (space.n_envs, space.n_agents)
    assert x.shape[2:] == space.agent_shape


# ---------------------------------------------------------------------------------------------------------------------
# sampling


@pytest.mark.parametrize("name", SPACES)
def test_sample_contained_with_shape_and_dtype(name):
    space = SPACES[name]
    x = space.sample(jax.random.key(0))
    _check_layout(space, x)
    assert space.contains(x) is True


@pytest.mark.parametrize("name", SPACES)
def test_sample_deterministic_per_key(name):
    space = SPACES[name]
    assert _same(space.sample(jax.random.key(3)), space.sample(jax.random.key(3)))


@pytest.mark.parametrize("name", RANDOM)
def test_sample_differs_across_keys(name):
    space = SPACES[name]
    a, b = space.sample(jax.random.key(0)), space.sample(jax.random.key(1))
    for u, v in zip(_leaves(a), _leaves(b), strict=True):
        if not np.all(np.asarray(u) == np.asarray(u).flat[0]):  # skip constant members
            assert not np.array_equal(np.asarray(u), np.asarray(v))


def test_sample_under_jit():
    spaces = list(SPACES.values())

    @jax.jit
    def f(key):  # one compile for all the spaces
        samples = [space.sample(k) for space, k in zip(spaces, jax.random.split(key, len(spaces)), strict=True)]
        return samples, [space.contains(x) for space, x in zip(spaces, samples, strict=True)]

    key = jax.random.key(5)
    samples, oks = f(key)
    for space, k, x, ok in zip(spaces, jax.random.split(key, len(spaces)), samples, oks, strict=True):
        _check_layout(space, x)
        assert bool(ok)
        assert space.contains(x)
        # the same numbers as eager sampling, up to XLA's fusion of float arithmetic
        for u, v in zip(_leaves(x), _leaves(space.sample(k)), strict=True):
            np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-6)


@pytest.mark.parametrize("name", SPACES)
def test_zeros_valid(name):
    space = SPACES[name]
    z = space.zeros()
    _check_layout(space, z)
    assert space.contains(z)


def test_zeros_values():
    assert np.all(np.asarray(MultiImage(1, 1, 2, 2, 1).zeros()) == 0)
    assert np.all(np.asarray(SPACES["image_bounds"].zeros()) == -0.5)
    assert np.all(np.asarray(SPACES["vector_low"].zeros()) == 1.5)
    assert np.all(np.asarray(SPACES["discrete"].zeros()) == 0)
    assert np.all(np.asarray(SPACES["constant"].zeros()) == 7.0)


def test_raw_uint32_keys_work():
    space = SPACES["vector_bounded"]
    a, b = space.sample(jax.random.PRNGKey(3)), space.sample(jax.random.PRNGKey(3))
    assert _same(a, b) and space.contains(a)


def test_constant_sample_is_constant():
    space = SPACES["constant"]
    assert np.all(np.asarray(space.sample(jax.random.key(0))) == 7.0)
    assert _same(space.sample(jax.random.key(0)), space.sample(jax.random.key(1)))


def test_unbounded_vector_is_roughly_standard_normal():
    x = np.asarray(MultiVector(64, 8, 16).sample(jax.random.key(0)))
    assert abs(x.mean()) < 0.05 and abs(x.std() - 1) < 0.05
    assert (x < 0).any() and (x > 0).any()


def test_half_bounded_vectors_respect_their_bound():
    lo = np.asarray(MultiVector(16, 4, 8, low=1.5).sample(jax.random.key(0)))
    hi = np.asarray(MultiVector(16, 4, 8, high=-1.5).sample(jax.random.key(0)))
    assert lo.min() >= 1.5 and hi.max() <= -1.5


def test_discrete_sample_covers_all_actions():
    x = np.asarray(MultiDiscrete(64, 8, 5).sample(jax.random.key(0)))
    assert set(np.unique(x)) == set(range(5))


@FAST
@given(
    low=st.floats(-1e6, 1e6),
    width=st.floats(1e-3, 1e6),
    seed=st.integers(0, 2**31 - 1),
)
def test_bounded_samples_in_bounds(low, width, seed):
    high = low + width
    assume(np.float32(low) < np.float32(high))
    for space in (MultiVector(2, 3, 4, low=low, high=high), MultiImage(2, 3, 4, 4, 3, low=low, high=high)):
        x = space.sample(jax.random.key(seed))
        assert space.contains(x)
        assert float(x.min()) >= np.float32(low) and float(x.max()) <= np.float32(high)


@FAST
@given(n_actions=st.integers(1, 2**31 - 1), seed=st.integers(0, 2**31 - 1))
def test_discrete_samples_in_range(n_actions, seed):
    space = MultiDiscrete(2, 3, n_actions)
    x = np.asarray(space.sample(jax.random.key(seed)))
    assert x.min() >= 0 and x.max() < n_actions
    assert space.contains(x)
    assert not space.contains(np.full(space.shape, n_actions, np.int64))


# ---------------------------------------------------------------------------------------------------------------------
# membership


ARRAY_SPACES = [name for name, space in SPACES.items() if not isinstance(space, Dict)]


@pytest.mark.parametrize("name", ARRAY_SPACES)
def test_contains_rejects_wrong_shape(name):
    space = SPACES[name]
    x = np.asarray(space.zeros())
    assert space.contains(x)
    assert not space.contains(x[None])
    assert not space.contains(x[..., None])
    assert not space.contains(x[0])
    assert not space.contains(np.swapaxes(x, 0, 1))
    assert not space.contains(x.reshape(-1))
    assert not space.contains(x.ravel()[0])
    assert not space.contains(jnp.asarray(x)[:1])


@pytest.mark.parametrize("name", ARRAY_SPACES)
def test_contains_rejects_wrong_dtype(name):
    space = SPACES[name]
    x = np.asarray(space.zeros())
    assert not space.contains(x.astype(bool))
    assert not space.contains(x.astype(np.complex64))
    assert not space.contains(x.astype(str))
    if space.dtype.kind == "f":
        assert not space.contains(x.astype(np.int32))
        assert space.contains(x.astype(np.float64))
        half = jnp.asarray(x, jnp.bfloat16)
        assert space.contains(half) == np.array_equal(np.asarray(half, np.float32), x)  # if bfloat16 holds the values
    else:
        assert not space.contains(x.astype(np.float32))
        assert space.contains(x.astype(np.int64))
        assert space.contains(x.astype(np.uint8))


@pytest.mark.parametrize("name", ARRAY_SPACES)
def test_contains_rejects_non_finite(name):
    space = SPACES[name]
    if space.dtype.kind != "f":
        return
    x = np.asarray(space.zeros()).copy()
    for bad in (np.nan, np.inf, -np.inf):
        y = x.copy()
        y.flat[-1] = bad
        assert not space.contains(y)
        assert not space.contains(jnp.asarray(y))


@pytest.mark.parametrize("name", ARRAY_SPACES)
def test_contains_never_raises_on_junk(name):
    space = SPACES[name]
    for junk in (None, "abc", object(), [[1, 2], [3]], {"a": 1}, 1.0, [], jax.random.key(0)):
        assert space.contains(junk) is False


def test_contains_accepts_nested_lists():
    assert MultiVector(1, 2, 2, low=0.0, high=1.0).contains([[[0.0, 0.5], [1.0, 0.25]]])
    assert MultiDiscrete(1, 2, 3).contains([[0, 2]])
    assert not MultiDiscrete(1, 2, 3).contains([[0, 3]])


def test_contains_rejects_out_of_bounds():
    image = MultiImage(1, 2, 2, 2, 1, low=0.0, high=1.0)
    x = np.zeros(image.shape, np.float32)
    assert image.contains(x) and image.contains(x + 1)
    assert not image.contains(x + 1.001)
    assert not image.contains(x - 1e-3)
    vector = MultiVector(1, 2, 3, low=-1.0, high=1.0)
    y = np.zeros(vector.shape, np.float32)
    y[0, 1, 2] = 1.5
    assert not vector.contains(y)
    discrete = MultiDiscrete(2, 2, 3)
    assert discrete.contains(np.full(discrete.shape, 2, np.int32))
    assert not discrete.contains(np.full(discrete.shape, 3, np.int32))
    assert not discrete.contains(np.full(discrete.shape, -1, np.int32))
    assert not discrete.contains(np.full(discrete.shape, 2**40, np.int64))
    constant = MultiConstant(2, 2, 3.0)
    c = np.full(constant.shape, 3.0, np.float32)
    assert constant.contains(c)
    c[1, 1] = 3.0001
    assert not constant.contains(c)
    assert not MultiConstant(2, 2).contains(np.ones((2, 2), np.float32))


@FAST
@given(low=st.floats(-1e6, 1e6), width=st.floats(1e-2, 1e6), excess=st.floats(1e-2, 1e6))
def test_contains_rejects_values_past_either_bound(low, width, excess):
    high = low + width
    assume(np.float32(low) < np.float32(high))
    space = MultiVector(1, 1, 2, low=low, high=high)
    assert space.contains(np.array([[[low, high]]], np.float64))
    above = np.float32(high) + max(excess, abs(high) * 1e-3)
    below = np.float32(low) - max(excess, abs(low) * 1e-3)
    assert not space.contains(np.array([[[low, above]]], np.float32))
    assert not space.contains(np.array([[[below, high]]], np.float32))


def test_contains_allows_float32_rounding_of_bounds():
    # float32(0.1) > 0.1 and float32(0.1) is what a float32 array holds for 0.1
    assert MultiVector(1, 1, 1, high=0.1).contains(jnp.full((1, 1, 1), 0.1))
    assert MultiVector(1, 1, 1, low=0.1).contains(np.full((1, 1, 1), 0.1))
    assert MultiConstant(1, 2, 0.1).contains(jnp.full((1, 2), 0.1))
    assert MultiConstant(1, 2, 0.1).contains(np.full((1, 2), 0.1))


def test_contains_under_jit_returns_traced_bool():
    space = MultiVector(2, 2, 2, low=0.0, high=1.0)

    @jax.jit
    def check(x):
        return space.contains(x)

    assert bool(check(jnp.full(space.shape, 0.5)))
    assert not bool(check(jnp.full(space.shape, 2.0)))
    assert not bool(check(jnp.full(space.shape, jnp.nan)))
    assert not bool(check(jnp.zeros((2, 2))))  # a wrong shape is decided statically
    discrete = MultiDiscrete(2, 2, 3)
    assert not bool(jax.jit(discrete.contains)(jnp.full(discrete.shape, 3)))


# ---------------------------------------------------------------------------------------------------------------------
# Dict


def test_dict_is_a_read_only_mapping():
    d = SPACES["dict"]
    assert list(d.keys()) == ["rgb", "imu", "nested"]
    assert len(d) == 3 and "imu" in d and "missing" not in d
    assert d["imu"] == MultiVector(2, 3, 4)
    assert dict(d.items())["nested"]["action"] == MultiDiscrete(2, 3, 4)
    assert (d.n_envs, d.n_agents) == (2, 3)
    assert d.shape == {"rgb": (2, 3, 4, 4, 3), "imu": (2, 3, 4), "nested": {"action": (2, 3), "id": (2, 3)}}
    assert d.dtype["nested"] == {"action": np.dtype(np.int32), "id": np.dtype(np.float32)}
    with pytest.raises(AttributeError):
        d.foo = 1
    with pytest.raises(TypeError):
        d["imu"] = MultiVector(2, 3, 1)


def test_dict_contains_rejects_missing_extra_and_bad_members():
    d = SPACES["dict"]
    x = d.sample(jax.random.key(0))
    assert d.contains(x)
    assert not d.contains({k: v for k, v in x.items() if k != "imu"})
    assert not d.contains({**x, "extra": x["imu"]})
    assert not d.contains({**x, "nested": {"action": x["nested"]["action"]}})
    assert not d.contains({**x, "nested": {**x["nested"], "extra": x["imu"]}})
    assert not d.contains({**x, "nested": {**x["nested"], "action": x["nested"]["action"] + 10}})
    assert not d.contains({**x, "imu": x["imu"].at[0, 0, 0].set(jnp.nan)})
    assert not d.contains({**x, "rgb": x["rgb"][..., :1]})
    assert not d.contains({**x, "nested": x["imu"]})
    assert not d.contains(list(x.values()))
    assert not d.contains(None)


def test_dict_contains_under_jit():
    d = SPACES["dict"]
    x = d.zeros()
    assert bool(jax.jit(d.contains)(x))
    assert not bool(jax.jit(d.contains)({**x, "rgb": x["rgb"] + 2}))


def test_dict_sample_independent_of_insertion_order():
    a = Dict(x=MultiVector(1, 2, 3), y=MultiVector(1, 2, 3), z=MultiDiscrete(1, 2, 9))
    b = Dict({"z": MultiDiscrete(1, 2, 9), "y": MultiVector(1, 2, 3)}, x=MultiVector(1, 2, 3))
    assert a == b and hash(a) == hash(b)
    sa, sb = a.sample(jax.random.key(0)), b.sample(jax.random.key(0))
    assert list(sb) == ["z", "y", "x"]
    for name in a:
        assert np.array_equal(sa[name], sb[name])
    assert not np.array_equal(sa["x"], sa["y"])  # members get their own keys


def test_dict_constructor_errors():
    v = MultiVector(1, 2, 3)
    with pytest.raises(ValueError, match="at least one"):
        Dict()
    with pytest.raises(ValueError, match="both name"):
        Dict({"a": v}, a=v)
    with pytest.raises(ValueError, match=r"spaces\['a'\] must be a Space"):
        Dict(a=np.zeros(3))
    with pytest.raises(ValueError, match="keys must be str"):
        Dict({1: v})
    with pytest.raises(ValueError, match="spaces must be a mapping"):
        Dict([("a", v)])
    with pytest.raises(ValueError, match="n_envs"):
        Dict(a=v, b=MultiVector(2, 2, 3))
    with pytest.raises(ValueError, match="n_agents"):
        Dict(a=v, b=Dict(c=MultiDiscrete(1, 3, 2)))


# ---------------------------------------------------------------------------------------------------------------------
# equality, hashing, repr


def test_equality_and_hash_by_value():
    assert MultiImage(2, 3, 4, 5, 3) == MultiImage(2, 3, 4, 5, 3, low=0, high=1)
    assert hash(MultiImage(2, 3, 4, 5, 3)) == hash(MultiImage(2, 3, 4, 5, 3, low=0, high=1))
    assert MultiVector(np.int64(2), 3, 4) == MultiVector(2, 3, 4)
    assert MultiVector(2, 3, 4) != MultiVector(2, 3, 5)
    assert MultiVector(2, 3, 4) != MultiVector(2, 3, 4, high=1.0)
    assert MultiDiscrete(2, 3, 4) != MultiDiscrete(2, 3, 5)
    assert MultiConstant(2, 3, 1) == MultiConstant(2, 3, 1.0) == MultiConstant(2, 3, True)
    assert MultiConstant(2, 3) != MultiDiscrete(2, 3, 1)
    assert Dict(a=MultiDiscrete(1, 1, 2)) != Dict(a=MultiDiscrete(1, 1, 3))
    assert Dict(a=MultiDiscrete(1, 1, 2)) != Dict(b=MultiDiscrete(1, 1, 2))
    assert Dict(a=MultiDiscrete(1, 1, 2)) != {"a": MultiDiscrete(1, 1, 2)}
    assert len({space for space in SPACES.values()} | set(SPACES.values())) == len(SPACES)


@pytest.mark.parametrize("name", SPACES)
def test_pickle_roundtrip_and_frozen(name):
    space = SPACES[name]
    copy = pickle.loads(pickle.dumps(space))
    assert copy == space and hash(copy) == hash(space)
    with pytest.raises(AttributeError):
        space.n_envs = 9


def test_frozen_dataclass():
    with pytest.raises(dataclasses.FrozenInstanceError):
        MultiDiscrete(1, 1, 2).n_actions = 3


def test_spaces_are_static_jit_config():
    traces = []

    def f(space, key):
        traces.append(space)
        return space.sample(key)

    g = jax.jit(f, static_argnums=0)
    g(MultiVector(2, 2, 2), jax.random.key(0))
    g(MultiVector(2, 2, 2), jax.random.key(1))
    g(Dict(a=MultiDiscrete(2, 2, 3)), jax.random.key(0))
    g(Dict(a=MultiDiscrete(2, 2, 3)), jax.random.key(1))
    assert len(traces) == 2


def test_repr():
    assert repr(MultiDiscrete(2, 3, 4)) == "MultiDiscrete(n_envs=2, n_agents=3, n_actions=4)"
    assert "low=-inf" in repr(MultiVector(1, 1, 1))
    assert repr(Dict(a=MultiConstant(1, 1))) == "Dict({'a': MultiConstant(n_envs=1, n_agents=1, value=0.0)})"


# ---------------------------------------------------------------------------------------------------------------------
# constructor checks


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: MultiDiscrete(1, 1, 0), "n_actions: expected a positive int"),
        (lambda: MultiDiscrete(1, 1, 2.0), "n_actions: expected a positive int"),
        (lambda: MultiDiscrete(1, 1, True), "n_actions: expected a positive int"),
        (lambda: MultiDiscrete(1, 1, 2**31), "n_actions: expected at most"),
        (lambda: MultiDiscrete(0, 1, 2), "n_envs: expected a positive int"),
        (lambda: MultiDiscrete(1, -1, 2), "n_agents: expected a positive int"),
        (lambda: MultiVector("2", 1, 2), "n_envs: expected a positive int"),
        (lambda: MultiImage(1, 1, 0, 1, 1), "height: expected a positive int"),
        (lambda: MultiImage(1, 1, 1, -3, 1), "width: expected a positive int"),
        (lambda: MultiImage(1, 1, 1, 1, 1.5), "channels: expected a positive int"),
        (lambda: MultiImage(1, 1, 1, 1, 1, low=1.0, high=0.0), "low must be less than high"),
        (lambda: MultiImage(1, 1, 1, 1, 1, low=1.0, high=1.0), "low must be less than high"),
        (lambda: MultiImage(1, 1, 1, 1, 1, high=math.inf), "high must be finite"),
        (lambda: MultiImage(1, 1, 1, 1, 1, low=-math.inf), "low must be finite"),
        (lambda: MultiVector(1, 1, 0), "dim: expected a positive int"),
        (lambda: MultiVector(1, 1, 1, low=math.nan), "low must not be NaN"),
        (lambda: MultiVector(1, 1, 1, high="1"), "high must be a real number"),
        (lambda: MultiVector(1, 1, 1, low=math.inf), "low must be less than high"),
        (lambda: MultiVector(1, 1, 1, low=1e39), "low must be within float32 range"),
        (lambda: MultiVector(1, 1, 1, low=1.0, high=1.0 + 1e-12), "differ in float32"),
        (lambda: MultiConstant(1, 1, math.nan), "value must not be NaN"),
        (lambda: MultiConstant(1, 1, math.inf), "value must be finite"),
        (lambda: MultiConstant(1, 1, None), "value must be a real number"),
    ],
)
def test_constructor_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()
