"""Benchmarks: kernel throughput on the present device, as JSON.

Each measurement jits a `lax.scan` of `steps` kernel calls (so per-call dispatch is amortised, as in a real
rollout), runs it once to compile, then times `repeats` runs and keeps the median.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxstep import core, scene


def _geometries(name: str, count: int) -> list[dict]:
    if name == "box":
        from jaxstep import toys

        return [toys.box()]
    from jaxstep import geometry

    # the largest of 8x as many plans, nearer the wall counts of real homes
    plans = sorted(geometry.floorplans(count * 8, seed=0), key=lambda g: -len(g["walls"]))
    return plans[:count]


def _random_agents(scenery: scene.Scenery, geometries: Sequence[dict], seed: int) -> core.Agents:
    """Agents at random free mask cells of their env's geometry, random angles, random velocities."""
    rng = np.random.default_rng(seed)
    n, a = scenery.n_envs, scenery.n_agents
    env_geometry = np.asarray(scenery.env_geometry)
    positions = np.empty((n, a, 2))
    for g, geom in enumerate(geometries):
        masks = np.asarray(geom["masks"])
        free = np.argwhere(masks > 0)
        envs = np.flatnonzero(env_geometry == g)
        cells = free[rng.integers(len(free), size=(len(envs), a))]
        i, j = cells[..., 0] + 0.5, cells[..., 1] + 0.5
        positions[envs] = geom["res"] * np.stack([j, masks.shape[0] - i], -1)
    return core.Agents(
        angles=jnp.asarray(rng.uniform(-180, 180, (n, a)), jnp.float32),
        positions=jnp.asarray(positions, jnp.float32),
        velocity=jnp.asarray(rng.normal(size=(n, a, 2)), jnp.float32),
        angvelocity=jnp.asarray(rng.normal(size=(n, a)) * 90, jnp.float32),
    )


def _time(fn: Callable, args, repeats: int) -> tuple[float, float]:
    """(compile + first run seconds, median seconds of the later runs)."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return first, float(np.median(times))


def _render_scan(scenery, res: int, backend: str, steps: int):
    def run(agents):
        def step(carry, _):
            agents, acc = carry
            out = core.render(scenery, agents, res=res, backend=backend)
            # turn a little each step so every call differs; use an output so the call is kept
            agents = dataclasses.replace(agents, angles=agents.angles + 1.0)
            return (agents, acc + out.distances[:, 0, 0].mean() + out.screen[:, 0, 0, 0].mean()), None

        (_, acc), _ = jax.lax.scan(step, (agents, jnp.float32(0)), None, length=steps)
        return acc

    return jax.jit(run)


def _physics_scan(scenery, backend: str, steps: int):
    def run(agents):
        def step(agents, _):
            agents, progress = core.physics(scenery, agents, backend=backend)
            # keep them moving: restore a velocity where a collision zeroed it
            agents = dataclasses.replace(agents, velocity=jnp.where(progress[..., None] < 1, -1.0, agents.velocity))
            return agents, None

        agents, _ = jax.lax.scan(step, agents, None, length=steps)
        return agents.positions

    return jax.jit(run)


def kernels(
    n_envs: Sequence[int] = (1024, 8192),
    res: int = 256,
    n_agents: int = 1,
    backends: Sequence[str] = ("ffi", "reference"),
    geometry: str = "floorplans",
    steps: int = 20,
    repeats: int = 5,
    reference_max_envs: int = 8192,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Render and physics throughput for each backend and n_envs; returns a JSON-ready dict.

    frames_per_second counts agent-frames (n_envs * n_agents renders per step); agent_steps_per_second counts
    agent moves per second of physics.
    """
    geometries = _geometries(geometry, 64)
    results = []
    for n in n_envs:
        scenery = scene.scenery([geometries[i % len(geometries)] for i in range(n)], n_agents=n_agents)
        agents = _random_agents(scenery, geometries, seed=n)
        walls = float(np.diff(np.asarray(scenery.wall_offsets))[np.asarray(scenery.env_geometry)].mean())
        for backend in backends:
            if backend == "reference" and n > reference_max_envs:
                continue
            runs = {
                "render": _render_scan(scenery, res, backend, steps),
                "physics": _physics_scan(scenery, backend, steps),
            }
            for kernel, run in runs.items():
                first, seconds = _time(run, (agents,), repeats)
                per_step = seconds / steps
                row = dict(
                    kernel=kernel, backend=backend, n_envs=n, n_agents=n_agents, mean_walls=walls,
                    res=res if kernel == "render" else None, compile_seconds=first, seconds_per_step=per_step,
                )  # fmt: skip
                rate = n * n_agents / per_step
                row["frames_per_second" if kernel == "render" else "agent_steps_per_second"] = rate
                results.append(row)
                if progress:
                    ms = per_step * 1e3
                    progress(f"{kernel:8s} {backend:10s} n_envs={n:6d}  {rate / 1e6:9.2f} M/s  ({ms:.3f} ms/step)")
    return dict(
        benchmark="kernels",
        device=str(jax.devices()[0].device_kind),
        platform=jax.default_backend(),
        jax=jax.__version__,
        python=platform.python_version(),
        geometry=geometry,
        steps_per_run=steps,
        repeats=repeats,
        results=results,
    )


def envs(
    names: Sequence[str] = ("minimal", "explorer", "deathmatch", "waypoint"),
    n_envs: Sequence[int] = (1024, 8192),
    steps: int = 100,
    repeats: int = 3,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Env steps with random actions, `steps` per jitted scan; returns a JSON-ready dict.

    frames_per_second counts agent-frames: n_envs * n_agents per env step.
    """
    from jaxstep import envs as registry

    results = []
    for name in names:
        for n in n_envs:
            env = registry.make(name, n_envs=n)

            def run(key, env=env):
                state, _ = env.reset(key)

                def step(state, key):
                    state, ts = env.step(state, env.action_space.sample(key))
                    # use the observations, or XLA drops the render that makes them
                    return state, ts.reward.mean() + sum(x.mean() for x in jax.tree.leaves(ts.obs))

                return jax.lax.scan(step, state, jax.random.split(key, steps))[1]

            first, seconds = _time(jax.jit(run), (jax.random.PRNGKey(0),), repeats)
            rate = n * env.n_agents * steps / seconds
            results.append(dict(env=name, n_envs=n, n_agents=env.n_agents, steps=steps, compile_seconds=first,
                                seconds=seconds, frames_per_second=rate))  # fmt: skip
            if progress:
                progress(f"{name:10s} n_envs={n:6d}  {rate / 1e6:8.2f} M frames/s  (compile {first:.1f} s)")
    return dict(benchmark="envs", device=str(jax.devices()[0].device_kind), platform=jax.default_backend(),
                jax=jax.__version__, results=results)  # fmt: skip


def scaling(
    name: str = "explorer",
    envs_per_device: int = 8192,
    device_counts: Sequence[int] = (1, 2, 4),
    steps: int = 50,
    train_updates: int = 6,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Env frames/s and training agent-steps/s over 1, 2, 4... devices, with a fixed number of envs per device."""
    from jaxstep.agents.ppo import PPOConfig, make_sharded_train, make_train, steps_per_update
    from jaxstep.envs import make
    from jaxstep.sharding import ShardedEnv

    results = []
    for D in device_counts:
        devices = jax.devices()[:D]
        if len(devices) < D:
            continue
        env = ShardedEnv(lambda n: make(name, n_envs=n), envs_per_device * D, devices)
        state, _ = env.reset(jax.random.PRNGKey(0))
        first, seconds = _time(lambda s, env=env: env.random_rollout(s, steps), (state,), 2)
        fps = env.n_envs * env.n_agents * steps / seconds
        config = PPOConfig(env=name, n_envs=envs_per_device * D, total_steps=10**12)
        train = make_sharded_train(config, devices) if D > 1 else make_train(config)
        update = jax.jit(train.update)
        train_state = train.init(jax.random.PRNGKey(0))
        train_first, train_seconds = _time(lambda s, update=update: update(s)[0], (train_state,), train_updates)
        sps = steps_per_update(config, train.env) * D / train_seconds
        results.append(dict(devices=D, n_envs=envs_per_device * D, env_frames_per_second=fps,
                            train_agent_steps_per_second=sps, compile_seconds=first + train_first))  # fmt: skip
        if progress:
            progress(f"{D} devices: env {fps / 1e6:8.2f} M frames/s, training {sps / 1e6:6.3f} M agent-steps/s")
    base = results[0] if results else None
    for r in results:
        r["env_speedup"] = r["env_frames_per_second"] / base["env_frames_per_second"]
        r["train_speedup"] = r["train_agent_steps_per_second"] / base["train_agent_steps_per_second"]
    return dict(benchmark="scaling", env=name, device=str(jax.devices()[0].device_kind), jax=jax.__version__,
                results=results)  # fmt: skip


def write(result: dict, path: str | None) -> None:
    text = json.dumps(result, indent=2)
    if path:
        with open(path, "w") as f:
            f.write(text + "\n")
    else:
        sys.stdout.write(text + "\n")
