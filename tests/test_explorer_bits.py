"""Explorer's packed `seen` table: the bit helpers, and rewards against a plain bool table."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import jaxstep
from jaxstep import core
from jaxstep.envs.explorer import count_bits, n_words, scatter_bits, unpack_bits
from jaxstep.ffi.types import MODEL_LINES
from jaxstep.pytree import replace


def property_test(strategy, examples=60):
    """Runs a test over hypothesis-drawn examples (hypothesis is a test dependency)."""

    def wrap(f):
        return settings(max_examples=examples, deadline=None)(given(strategy())(f))

    return wrap


def bool_arrays():
    # a few leading (batch) dims, and lengths on both sides of multiples of 32, 0 included
    shapes = st.tuples(st.lists(st.integers(0, 3), max_size=2), st.integers(0, 200))
    return shapes.flatmap(lambda s: hnp.arrays(bool, (*s[0], s[1])))


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """bool (..., n) -> uint32 (..., ceil(n / 32)), the packing of `ExplorerState.seen`: bit i % 32 (least
    significant first) of word i // 32, padding zero, which is numpy's little-endian packing."""
    n = bits.shape[-1]
    padded = np.zeros((*bits.shape[:-1], 32 * n_words(n)), bool)
    padded[..., :n] = bits
    return np.packbits(padded, axis=-1, bitorder="little").view("<u4")


@property_test(bool_arrays)
def test_unpack_bits_inverts_the_packing(bits):
    n = bits.shape[-1]
    words = jnp.asarray(pack_bits(bits))
    assert words.shape == (*bits.shape[:-1], n_words(n)) and n_words(n) == -(-n // 32)
    back = unpack_bits(words, n)
    assert back.dtype == jnp.bool_ and back.shape == bits.shape
    np.testing.assert_array_equal(back, bits)
    if bits.ndim == 2:
        np.testing.assert_array_equal(count_bits(words), bits.sum(-1, keepdims=True))


def index_rows():
    # rows of indices with repeats, and some outside [0, n) on both sides, for lengths around multiples of 32
    sizes = st.tuples(st.integers(0, 70), st.integers(1, 4), st.integers(0, 12))
    return sizes.flatmap(
        lambda s: st.tuples(st.just(s[0]), hnp.arrays(np.int32, (s[1], s[2]), elements=st.integers(-3, s[0] + 3)))
    )


@property_test(index_rows)
def test_scatter_bits_sets_exactly_the_bits_of_in_range_indices(case):
    n, indices = case
    expected = np.zeros((len(indices), n), bool)
    for row, values in enumerate(indices):
        for i in values:
            if 0 <= i < n:
                expected[row, i] = True
    words = scatter_bits(jnp.asarray(indices), n)
    assert words.dtype == jnp.uint32 and words.shape == (len(indices), n_words(n))
    np.testing.assert_array_equal(words, pack_bits(expected))


def test_count_bits_of_full_words():
    words = jnp.asarray([[0xFFFFFFFF, 0x80000001, 0], [0, 0, 0]], jnp.uint32)
    np.testing.assert_array_equal(count_bits(words), [[34], [0]])
    assert count_bits(words).dtype == jnp.int32


def texels_hit(env, agents) -> np.ndarray:
    """(n_envs, max_texels) bool: the wall texels (relative to each env's first) that agents' rays hit,
    computed directly from the render, one ray at a time."""
    view = core.render(env.scenery, agents, env.res, env.fov, env.backend)
    s = env.scenery
    geometry, wall_offsets, texel_offsets = (np.asarray(a) for a in (s.env_geometry, s.wall_offsets, s.texel_offsets))
    hit = np.zeros((env.n_envs, env.max_texels), bool)
    for e in range(env.n_envs):
        first_line = MODEL_LINES + wall_offsets[geometry[e]]
        for index, location in zip(np.asarray(view.indices[e, 0]), np.asarray(view.locations[e, 0]), strict=True):
            if index >= MODEL_LINES:  # one agent: lines past its model are walls
                line = first_line + index - MODEL_LINES
                start, end = int(texel_offsets[line]), int(texel_offsets[line + 1])
                texel = min(int(np.floor(np.float32(end - start) * np.float32(location))), end - start - 1)
                hit[e, start + texel - texel_offsets[first_line]] = True
    return hit


def test_explorer_rewards_match_a_bool_table():
    """A random-action rollout (with resets) against a reference that keeps a plain bool table per env."""
    env = jaxstep.make("explorer", n_envs=3, seed=5, res=32)
    params = replace(env.default_params, patience=-40)  # ends episodes within the rollout
    step, move = jax.jit(env.step), jax.jit(env._move)
    key, sub = jax.random.split(jax.random.PRNGKey(1))
    state, _ = env.reset(sub, params)
    table = texels_hit(env, state.agents)  # the first view counts as seen
    resets = 0
    for _ in range(40):
        assert state.seen.shape == (env.n_envs, n_words(env.max_texels)) and state.seen.dtype == jnp.uint32
        np.testing.assert_array_equal(unpack_bits(state.seen, env.max_texels), table)
        np.testing.assert_array_equal(state.potential[:, 0], table.sum(-1))
        key, sub = jax.random.split(key)
        action = env.action_space.sample(sub)
        now = texels_hit(env, move(state, action, params).agents)  # what the moved agents see, before any reset
        state, ts = step(state, action, params)
        new = now & ~table
        np.testing.assert_array_equal(ts.reward[:, 0], new.sum(-1).astype(np.float32) / env.res)
        table |= now
        done = np.asarray(ts.done[:, 0])
        if done.any():  # a fresh episode starts with what its fresh agent sees
            table[done] = texels_hit(env, state.agents)[done]
            resets += int(done.sum())
    assert resets > 0 and np.asarray(ts.reward).sum() > 0, "the rollout should cover resets and rewards"
