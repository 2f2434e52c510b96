"""Pure-JAX versions of the bake, physics and render kernels.

They follow `kernels.h` operation for operation, so they are the tests' oracle, and they run on any device
JAX supports (TPUs included). They are written for one env and vmapped over envs; each env's walls and
lights are gathered into arrays padded to the scenery's `max_walls` / `max_lights`, with a validity mask.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxstep.ffi.types import AGENT_WIDTH, MODEL_LINES, OBSERVATIONS, Agents, Scenery

AMBIENT = np.float32(0.1)
LUMINANCE = np.float32(2.0)
DEG2RAD = np.float32(0.017453292519943295)
INF = np.float32(np.inf)

_CORNERS = np.array(
    [[-0.5, -1], [0.5, -1], [1, -0.5], [1, 0.5], [0.5, 1], [-0.5, 1], [-1, 0.5], [-1, -0.5]], np.float32
)
# (MODEL_LINES, 2, 2) model lines in the agent frame, metres; scaled in float32 as the kernels do
MODEL = np.stack([_CORNERS, np.roll(_CORNERS, -1, axis=0)], 1) * np.float32(AGENT_WIDTH / 2)


def _cross(a, b):
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _dot(a, b):
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1]


def _length(a):
    return jnp.sqrt(_dot(a, a))


def _rotation(degrees):
    radians = degrees * DEG2RAD
    return jnp.cos(radians), jnp.sin(radians)


def _rotate(c, s, v):
    return jnp.stack([c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1]], -1)


def _intersect(P, U, Q, V):
    """(s, t) where P + sU meets Q + tV; inf for nearly parallel lines."""
    UxV = _cross(U, V)
    parallel = jnp.abs(UxV) < 1e-3
    PQ = Q - P
    s = jnp.where(parallel, INF, _cross(PQ, V) / UxV)
    t = jnp.where(parallel, INF, _cross(PQ, U) / UxV)
    return s, t


def _project(P, U, Q):
    """(s, d): Q's fraction along P + sU, and its distance from that line."""
    u = _length(U) + np.float32(1e-6)
    PQ = Q - P
    return _dot(PQ, U) / (u * u), jnp.abs(_cross(PQ, U)) / u


def wrap_degrees(a):
    """Angles in degrees wrapped into [-180, 180)."""
    x = jnp.fmod(a + 180, np.float32(360))
    x = jnp.where(x < 0, x + 360, x)
    x = jnp.where(x >= 360, x - 360, x)
    return x - 180


def model_lines(angles, positions):
    """(A * MODEL_LINES, 2, 2) model lines of agents at angles (A,) and positions (A, 2)."""
    c, s = _rotation(angles)
    lines = _rotate(c[:, None, None], s[:, None, None], MODEL[None]) + positions[:, None, None, :]
    return lines.reshape(-1, 2, 2)


# ----------------------------------------------------------------------------------------------------------
# Per-env views of the packed scenery


def _padded(values, offsets, g, valid_geometry, size):
    """values[offsets[g] + i] for i < size, and whether i is inside geometry g's range."""
    start = offsets[g]
    count = jnp.where(valid_geometry, offsets[g + 1] - start, 0)
    i = jnp.arange(size)
    index = jnp.clip(start + i, 0, max(values.shape[0] - 1, 0))
    if values.shape[0] == 0:
        values = jnp.zeros((1, *values.shape[1:]), values.dtype)
    return values[index], i < count, index


def env_view(scenery: Scenery, g):
    """Padded walls, lights and wall texel ranges of geometry g (a traced scalar)."""
    valid = (g >= 0) & (g < scenery.n_geometries)
    g = jnp.clip(g, 0, scenery.n_geometries - 1)
    walls, wall_valid, wall_index = _padded(scenery.walls, scenery.wall_offsets, g, valid, scenery.max_walls)
    lights, light_valid, _ = _padded(scenery.lights, scenery.light_offsets, g, valid, scenery.max_lights)
    wall_start = scenery.texel_offsets[MODEL_LINES + wall_index]
    wall_width = scenery.texel_offsets[MODEL_LINES + wall_index + 1] - wall_start
    return dict(
        walls=walls, wall_valid=wall_valid, lights=lights, light_valid=light_valid,
        wall_start=wall_start, wall_width=wall_width,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------------------
# Light


def light_intensity(C, lights, light_valid, walls, wall_valid):
    """Light at points C (..., 2) from lights (L, 3), occluded by walls (W, 2, 2); in [0, 1]."""
    I = lights[:, :2]  # noqa: E741

    def occlude(visible, wall):
        a, b, ok = wall
        s, t = _intersect(I, C[..., None, :] - I, a, b - a)
        hidden = (t > 0) & (t < 1) & (s > 0) & (s < np.float32(0.999)) & ok
        return visible & ~hidden, None

    visible = jnp.ones((*C.shape[:-1], lights.shape[0]), bool)
    visible, _ = jax.lax.scan(occlude, visible, (walls[:, 0], walls[:, 1], wall_valid))
    d = I - C[..., None, :]
    gain = LUMINANCE * lights[:, 2] / jnp.maximum(_dot(d, d), np.float32(1))
    gain = jnp.where(visible & light_valid, gain, np.float32(0))

    # summed light by light, in order, as the kernels do
    def add(total, g):
        return total + g, None

    total, _ = jax.lax.scan(add, jnp.full(C.shape[:-1], AMBIENT), jnp.moveaxis(gain, -1, 0))
    return jnp.minimum(total, np.float32(1))


@jax.jit
def bake(scenery: Scenery, points, point_geometry):
    """Light at points (P, 2) of geometries point_geometry (P,)."""

    def one(point, g):
        v = env_view(scenery, g)
        return light_intensity(point, v["lights"], v["light_valid"], v["walls"], v["wall_valid"])

    return jax.vmap(one)(points, point_geometry)


# ----------------------------------------------------------------------------------------------------------
# Physics


def _sensibilize(p):
    return jnp.where(jnp.isnan(p), np.float32(0), jnp.maximum(jnp.minimum(p * np.float32(0.99), 1), 0))


def _first_contact(p, v, q, r):
    """Fraction of the move v from p at which p first comes within r of q; inf if never (see kernels.h)."""
    length = _length(v)
    pq = q - p
    along, across = _dot(pq, v) / length, jnp.abs(_cross(pq, v)) / length
    t = (along - jnp.sqrt(r * r - across * across)) / length
    return jnp.where((length > 0) & (0 < along) & (across < r), t, INF)


def _point_collision(p, v, q, r):
    return _sensibilize(_first_contact(p, v, q, r))


def _wall_collision(p, v, a, b, radius):
    r = np.float32(1.001) * radius
    ab = b - a
    ms, mt = _intersect(p, v, a, ab)
    ap, dp = _project(a, ab, p)
    aq, sd = _project(a, ab, p + v)
    through = _sensibilize((1 - r / dp) * ms)
    x = jnp.where((0 < ms) & (ms < 1) & (0 < mt) & (mt < 1), through, np.float32(1))
    x = jnp.minimum(x, _point_collision(p, v, a, r))
    x = jnp.minimum(x, _point_collision(p, v, b, r))
    side = _sensibilize((dp - r) / (dp - sd))
    x = jnp.minimum(x, jnp.where((0 < aq) & (aq < 1) & (sd < r) & (sd < dp), side, np.float32(1)))
    # grazing: from where the distance from the wall's line falls to r (or has), the first point beside the wall
    u = _length(ab) + np.float32(1e-6)
    cp = _cross(ab, p - a)
    sign = jnp.where(cp < 0, np.float32(-1), np.float32(1))
    sp, sq = sign * cp / u, sign * _cross(ab, p + v - a) / u
    f = jnp.maximum((sp - r) / (sp - sq), np.float32(0))
    af = ap + f * (aq - ap)
    two = np.float32(2)
    g = jnp.where(af > 1, jnp.where(aq < af, (ap - 1) / (ap - aq), two), f)
    g = jnp.where(af < 0, jnp.where(aq > af, ap / (ap - aq), two), g)
    g = jnp.maximum(g, f)
    graze = (sq < sp) & (sq < r) & (g <= 1) & (sp + g * (sq - sp) > -r)
    return jnp.minimum(x, jnp.where(graze, _sensibilize(g), np.float32(1)))


def _env_progress(positions, velocity, walls, wall_valid, fps, radius):
    """(A,) progress of one env's agents: positions, velocity (A, 2); walls (W, 2, 2)."""
    v = velocity * (np.float32(1) / fps)
    A = positions.shape[0]
    r = np.float32(1.001) * np.float32(2) * radius
    pair = _point_collision(positions[:, None], v[:, None] - v[None, :], positions[None, :], r)
    pair = jnp.where(jnp.eye(A, dtype=bool), np.float32(1), pair)
    wall = _wall_collision(positions[:, None], v[:, None], walls[None, :, 0], walls[None, :, 1], radius)
    wall = jnp.where(wall_valid[None, :], wall, np.float32(1))
    return jnp.minimum(jnp.min(pair, -1, initial=1.0), jnp.min(wall, -1, initial=1.0))


def _settle(positions, velocity, progress, fps, radius):
    """One env's progress after settling; see `settle` in kernels.h, followed operation for operation."""
    A = positions.shape[0]
    reach2 = (np.float32(2) * radius) ** 2
    reach = np.float32(1.001) * np.float32(2) * radius
    v = velocity * (np.float32(1) / fps)
    others = ~jnp.eye(A, dtype=bool)
    start = positions[:, None] - positions[None]  # (A, A): i's position less j's

    def catch_up(i, carry):
        progress, changed = carry
        x0 = progress[i]
        q = positions[i] + v[i] * progress[:, None]
        stand = positions + v * progress[:, None]
        t = progress + _first_contact(q, v[i], stand, reach)
        catch = others[i] & (progress < x0) & (t < INF)
        short = progress + np.float32(0.99) * (t - progress)  # 1% short of the rest of the way
        short = jnp.where(jnp.isnan(short), np.float32(0), jnp.clip(short, 0, 1))
        x = jnp.minimum(x0, jnp.min(jnp.where(catch, short, INF)))
        lower = (x0 != 0) & (x < x0)
        return progress.at[i].set(jnp.where(lower, x, x0)), changed | lower

    def guard(i, carry):
        progress, changed = carry
        end = positions + (progress / fps)[:, None] * velocity
        gap = end[i] - end
        closing = (_dot(gap, gap) < reach2) & (_dot(gap, gap) < _dot(start[i], start[i])) & others[i]
        hold = (progress[i] != 0) & closing.any()
        return progress.at[i].set(jnp.where(hold, np.float32(0), progress[i])), changed | hold

    def sweep(carry):
        progress, _, n = carry
        caught, changed = jax.lax.fori_loop(0, A, catch_up, (progress, False))
        guarded, held = jax.lax.fori_loop(0, A, guard, (caught, False))
        # the guard's sweep counts only once no agent was caught up
        return jnp.where(changed, caught, guarded), changed | held, n + 1

    def more(carry):
        return carry[1] & (carry[2] < 4 * A + 4)

    progress, changed, _ = jax.lax.while_loop(more, sweep, (progress, True, 0))
    # still changing after every sweep allowed: hold everyone (they start apart)
    return jnp.where(changed, np.float32(0), progress)


@functools.partial(jax.jit, static_argnums=(2, 3))
def physics(scenery: Scenery, agents: Agents, fps: float, radius: float) -> tuple[Agents, jax.Array]:
    """Reference of `jaxstep.ffi.calls.physics`."""
    fps, radius = np.float32(fps), np.float32(radius)

    def progress(positions, velocity, g):
        v = env_view(scenery, g)
        return _env_progress(positions, velocity, v["walls"], v["wall_valid"], fps, radius)

    x = jax.vmap(progress)(agents.positions, agents.velocity, scenery.env_geometry)
    x = jax.vmap(functools.partial(_settle, fps=fps, radius=radius))(agents.positions, agents.velocity, x)
    k = x / fps
    stopped = x < 1
    moved = Agents(
        angles=wrap_degrees(agents.angles + k * agents.angvelocity),
        positions=agents.positions + k[..., None] * agents.velocity,
        velocity=jnp.where(stopped[..., None], np.float32(0), agents.velocity),
        angvelocity=jnp.where(stopped, np.float32(0), agents.angvelocity),
    )
    return moved, x


# ----------------------------------------------------------------------------------------------------------
# Render


def _cast(p, u, lines, valid, near):
    """Nearest hit of rays p + s u (A, R, 2) on lines (M, 2, 2), scanning lines in order as the kernels do."""
    ulen = _length(u)

    def consider(best, line):
        best_s, index, location, dot = best
        a, b, ok, i = line
        v = b - a
        s, t = _intersect(p, u, a, v)
        hit = (0 <= t) & (t <= 1) & (near < s) & (s < best_s - np.float32(1e-4)) & ok
        cosine = jnp.clip(_dot(u, v) / (ulen * _length(v) + np.float32(1e-6)), -1, 1)
        return (
            jnp.where(hit, s, best_s),
            jnp.where(hit, i, index),
            jnp.where(hit, t, location),
            jnp.where(hit, cosine, dot),
        ), None

    shape = u.shape[:-1]
    init = (jnp.full(shape, INF), jnp.full(shape, -1, jnp.int32), jnp.zeros(shape), jnp.zeros(shape))
    index = jnp.arange(lines.shape[0], dtype=jnp.int32)
    (best_s, index, location, dot), _ = jax.lax.scan(consider, init, (lines[:, 0], lines[:, 1], valid, index))
    distance = jnp.where(index >= 0, best_s * ulen, INF)
    return index, location, dot, distance


def _filter(x, width):
    """Texels (l, r) either side of fraction x along a line of `width` texels, and their weights."""
    y = jnp.minimum(x * (width + 1).astype(jnp.float32), (width - 1).astype(jnp.float32))
    l = jnp.maximum(y - 1, 0).astype(jnp.int32)  # noqa: E741
    r = jnp.minimum(y, (width - 1).astype(jnp.float32)).astype(jnp.int32)
    ld = jnp.abs(y - (l + 1).astype(jnp.float32)) + np.float32(1e-3)
    rd = jnp.abs(y - (r + 1).astype(jnp.float32)) + np.float32(1e-3)
    inv = 1 / (ld + rd)  # one division for both weights, as the kernels do
    return l, r, rd * inv, ld * inv


def _env_render(scenery: Scenery, angles, positions, g, res, half_width, radius, n_viewers):
    v = env_view(scenery, g)
    A = angles.shape[0]
    first_wall = A * MODEL_LINES
    models = model_lines(angles, positions)
    lines = jnp.concatenate([models, v["walls"]])
    valid = jnp.concatenate([jnp.ones(first_wall, bool), v["wall_valid"]])

    r = np.arange(res)
    ray = np.stack([np.ones(res), (res - 2 * r - 1).astype(np.float32) * np.float32(half_width) / np.float32(res)], -1)
    n_viewers = A if n_viewers is None else n_viewers
    c, s = _rotation(angles[:n_viewers])
    u = _rotate(c[:, None], s[:, None], jnp.asarray(ray, jnp.float32)[None])  # (n_viewers, R, 2)
    near = np.float32(radius) / _length(u)
    index, location, dot, distance = _cast(positions[:n_viewers, None, :], u, lines, valid, near)

    # shading
    hit = index >= 0
    is_model = index < first_wall
    m = jnp.clip(index, 0, first_wall - 1) % MODEL_LINES
    w = jnp.clip(index - first_wall, 0, max(scenery.max_walls - 1, 0))
    model_start = scenery.texel_offsets[m]
    model_width = scenery.texel_offsets[m + 1] - model_start
    if scenery.max_walls:
        wall_start, wall_width = v["wall_start"][w], v["wall_width"][w]
    else:
        wall_start, wall_width = model_start, model_width
    start = jnp.where(is_model, model_start, wall_start)
    width = jnp.where(is_model, model_width, wall_width)
    fl, fr, lw, rw = _filter(location, width)

    line = lines[jnp.clip(index, 0, lines.shape[0] - 1)]
    point = line[..., 0, :] * (1 - location[..., None]) + line[..., 1, :] * location[..., None]
    live = light_intensity(point, v["lights"], v["light_valid"], v["walls"], v["wall_valid"])
    baked = lw * scenery.baked[start + fl] + rw * scenery.baked[start + fr]
    light = jnp.where(is_model, live, baked)
    colour = lw[..., None] * scenery.texels[start + fl] + rw[..., None] * scenery.texels[start + fr]
    screen = ((1 - dot * dot) * light)[..., None] * colour
    screen = jnp.where(hit[..., None], screen, np.float32(0))
    return index, location, dot, distance, screen


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def render(
    scenery: Scenery,
    agents: Agents,
    res: int,
    half_width: float,
    radius: float,
    n_viewers: int | None = None,
    mask: jax.Array | None = None,
) -> tuple[jax.Array, ...]:
    """Reference of `jaxstep.ffi.calls.render`."""

    def one(angles, positions, g):
        return _env_render(scenery, angles, positions, g, res, half_width, radius, n_viewers)

    out = jax.vmap(one)(agents.angles, agents.positions, scenery.env_geometry)
    if mask is None:
        return out
    # views not wanted are empty: what a ray that hits nothing gives
    empty = (np.int32(-1), np.float32(0), np.float32(0), INF, np.float32(0))
    return tuple(jnp.where(_expand(mask, x), x, e) for x, e in zip(out, empty, strict=True))


def _expand(mask, x):
    return mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))


def columns(
    rendered: tuple[jax.Array, ...], subsample: int, radius: float, max_depth: float, outputs=OBSERVATIONS
) -> tuple[jax.Array | None, ...]:
    """The image columns of `render`'s outputs (indices, locations, dots, distances, screen), as
    `jaxstep.ffi.calls.observe` makes them: (rgb, depth, indices, locations), None where not in `outputs`."""
    index, location, _, distance, screen = rendered
    lead, res = index.shape[:-1], index.shape[-1]
    shape = (*lead, res // subsample, subsample)

    def mean(x):
        return x.reshape(*shape, *x.shape[len(lead) + 1 :]).sum(len(lead) + 1) / np.float32(subsample)

    def middle(x):
        return x.reshape(shape)[..., subsample // 2]

    depth = 1 - jnp.clip((distance - np.float32(radius)) / np.float32(max_depth), 0, 1)
    values = dict(rgb=mean(screen), depth=mean(depth), indices=middle(index), locations=middle(location))
    return tuple(values[name] if name in outputs else None for name in OBSERVATIONS)


def observe(
    scenery: Scenery,
    agents: Agents,
    res: int,
    half_width: float,
    radius: float,
    n_viewers: int | None = None,
    mask: jax.Array | None = None,
    subsample: int = 1,
    max_depth: float = 10.0,
    outputs=OBSERVATIONS,
) -> tuple[jax.Array | None, ...]:
    """Reference of `jaxstep.ffi.calls.observe`."""
    rendered = render(scenery, agents, res, half_width, radius, n_viewers, mask)
    return columns(rendered, subsample, radius, max_depth, outputs)
