"""Benchmarks: kernel and env throughput on the present device, as JSON (and a plot of it).

Each measurement jits a `lax.scan` of `steps` kernel calls (so per-call dispatch is amortised, as in a real
rollout), compiles and runs it once, then times `repeats` runs and keeps the median. Device memory per env is
the compiled executable's arguments, outputs and temporaries (XLA's `memory_analysis`) over n_envs.

A size that runs out of device memory is recorded as `{"n_envs": N, "error": "out of memory"}` and ends its
series (an env, or a kernel and backend): no larger size of it is tried. `sweep_sizes` gives the sizes of an
n_envs sweep that goes until then.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from jaxstep import core, scene

if TYPE_CHECKING:  # for annotations only: the envs are imported where they are used
    from jaxstep.envs.base import Env


def _geometries(name: str, count: int) -> list[dict]:
    if name == "box":
        from jaxstep import toys

        return [toys.box()]
    from jaxstep import geometry

    if name == "mazes":  # many walls: 24 x 24 cells
        return geometry.mazes(count, seed=0, size=(24, 24))
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


OUT_OF_MEMORY = "out of memory"


def sweep_sizes(max_n_envs: int = 1 << 20, min_n_envs: int = 1024) -> list[int]:
    """n_envs for a sweep: min_n_envs, doubling while at most max_n_envs."""
    if min_n_envs < 1:
        raise ValueError(f"min_n_envs: expected a positive integer, got {min_n_envs}")
    sizes = []
    n = min_n_envs
    while n <= max_n_envs:
        sizes.append(n)
        n *= 2
    return sizes


def _out_of_memory(error: BaseException) -> bool:
    """Whether `error` is XLA failing to allocate device memory."""
    message = str(error)
    return "RESOURCE_EXHAUSTED" in message or "out of memory" in message.lower()


def _memory_bytes(compiled: jax.stages.Compiled) -> int | None:
    """Device bytes an executable's arguments, outputs and temporaries take (aliased outputs counted once), or
    None where the backend does not say. Constants the function closes over are not counted."""
    stats = compiled.memory_analysis()
    if stats is None:
        return None
    return (
        stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
        - stats.alias_size_in_bytes
    )  # fmt: skip


def _measure(fn: Callable, args: tuple, repeats: int) -> tuple[float, float, int | None]:
    """For a jitted fn: (seconds to compile and run once, median seconds of `repeats` later runs, device bytes
    from `_memory_bytes`)."""
    start = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_seconds = time.perf_counter() - start
    first, seconds = _time(compiled, args, repeats)
    return compile_seconds + first, seconds, _memory_bytes(compiled)


def _per_env(memory: int | None, n: int) -> float | None:
    """Bytes per env, or None where memory is unknown."""
    return None if memory is None else memory / n


def _memory_text(row: dict) -> str:
    """`, 12.3 KiB/env` for a progress line, or nothing where memory is unknown."""
    per_env = row.get("memory_bytes_per_env")
    return "" if per_env is None else f", {per_env / 1024:.1f} KiB/env"


def _render_scan(res: int, backend: str, steps: int):
    # scenery is an argument rather than a closed-over constant so that memory_analysis counts it
    def run(scenery, agents):
        def step(carry, _):
            agents, acc = carry
            out = core.render(scenery, agents, res=res, backend=backend)
            # turn a little each step so every call differs; use an output so the call is kept
            agents = dataclasses.replace(agents, angles=agents.angles + 1.0)
            return (agents, acc + out.distances[:, 0, 0].mean() + out.screen[:, 0, 0, 0].mean()), None

        (_, acc), _ = jax.lax.scan(step, (agents, jnp.float32(0)), None, length=steps)
        return acc

    return jax.jit(run)


def _observe_scan(res: int, subsample: int, backend: str, steps: int):
    def run(scenery, agents):
        def step(carry, _):
            agents, acc = carry
            obs = core.observe(scenery, agents, res=res, backend=backend, subsample=subsample)
            agents = dataclasses.replace(agents, angles=agents.angles + 1.0)
            used = obs.rgb[:, 0, 0, 0, 0].mean() + obs.depth[:, 0, 0, 0, 0].mean() + obs.locations[:, 0, 0].mean()
            return (agents, acc + used + obs.indices[:, 0, 0].mean()), None

        (_, acc), _ = jax.lax.scan(step, (agents, jnp.float32(0)), None, length=steps)
        return acc

    return jax.jit(run)


def _physics_scan(backend: str, steps: int):
    def run(scenery, agents):
        def step(agents, _):
            agents, progress = core.physics(scenery, agents, backend=backend)
            # keep them moving: restore a velocity where a collision zeroed it
            agents = dataclasses.replace(agents, velocity=jnp.where(progress[..., None] < 1, -1.0, agents.velocity))
            return agents, None

        agents, _ = jax.lax.scan(step, agents, None, length=steps)
        return agents.positions

    return jax.jit(run)


KERNELS = ("render", "observe", "physics")  # observe: render reduced to image columns in the same call


def _kernel_rows(
    n: int,
    series: Sequence[tuple[str, str]],
    geometries: Sequence[dict],
    res: int,
    n_agents: int,
    steps: int,
    repeats: int,
    subsample: int = 4,
) -> list[dict]:
    """One row per (kernel, backend) in `series` at n envs; an out-of-memory row where that one did not fit."""
    scenery = scene.scenery([geometries[i % len(geometries)] for i in range(n)], n_agents=n_agents)
    agents = _random_agents(scenery, geometries, seed=n)
    walls = float(np.diff(np.asarray(scenery.wall_offsets))[np.asarray(scenery.env_geometry)].mean())
    rows = []
    for kernel, backend in series:
        if kernel == "render":
            run = _render_scan(res, backend, steps)
        elif kernel == "observe":
            run = _observe_scan(res, subsample, backend, steps)
        else:
            run = _physics_scan(backend, steps)
        try:
            first, seconds, memory = _measure(run, (scenery, agents), repeats)
        except Exception as e:
            if not _out_of_memory(e):
                raise
            rows.append(dict(kernel=kernel, backend=backend, n_envs=n, error=OUT_OF_MEMORY))
            continue
        per_step = seconds / steps
        row = dict(
            kernel=kernel, backend=backend, n_envs=n, n_agents=n_agents, mean_walls=walls,
            res=None if kernel == "physics" else res, subsample=subsample if kernel == "observe" else None,
            compile_seconds=first, seconds_per_step=per_step, memory_bytes_per_env=_per_env(memory, n),
        )  # fmt: skip
        row["agent_steps_per_second" if kernel == "physics" else "frames_per_second"] = n * n_agents / per_step
        rows.append(row)
    return rows


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
    kernels: Sequence[str] = KERNELS,
    subsample: int = 4,
) -> dict:
    """Render, observe and physics throughput for each backend and n_envs; returns a JSON-ready dict.

    `kernels` picks among KERNELS; observe renders res rays per view and averages them into res // subsample
    image columns (every output made). Each result row has frames_per_second (render and observe: agent-frames,
    n_envs * n_agents views per step, per second) or agent_steps_per_second (physics: agent moves per second),
    seconds_per_step, compile_seconds (compiling plus the first run, seconds) and memory_bytes_per_env (device
    bytes, or None where the backend does not say). A (kernel, backend) that runs out of device memory gets an
    out-of-memory row and no larger sizes.
    """
    unknown = [k for k in kernels if k not in KERNELS]
    if unknown or not kernels:
        raise ValueError(f"kernels: expected some of {KERNELS}, got {list(kernels)}")
    if res % subsample:
        raise ValueError(f"subsample: must divide res ({res}), got {subsample}")
    geometries = _geometries(geometry, 64)
    results = []
    too_big: dict[tuple[str, str], float] = {}  # (kernel, backend): the smallest n_envs that did not fit
    for n in n_envs:
        series = [
            (kernel, backend) for backend in backends for kernel in kernels
            if not (backend == "reference" and n > reference_max_envs) and n < too_big.get((kernel, backend), math.inf)
        ]  # fmt: skip
        if not series:
            continue
        try:
            rows = _kernel_rows(n, series, geometries, res, n_agents, steps, repeats, subsample)
        except Exception as e:
            if not _out_of_memory(e):
                raise
            # the scenery or agents themselves did not fit
            rows = [dict(kernel=kernel, backend=backend, n_envs=n, error=OUT_OF_MEMORY) for kernel, backend in series]
        # the executables of this size are no use to the next, and hold device memory
        jax.clear_caches()
        for row in rows:
            kernel, backend = row["kernel"], row["backend"]
            if "error" in row:
                too_big[kernel, backend] = n
                line = "out of memory; no larger sizes"
            else:
                rate = row.get("frames_per_second", row.get("agent_steps_per_second"))
                line = f"{rate / 1e6:9.2f} M/s  ({row['seconds_per_step'] * 1e3:.3f} ms/step{_memory_text(row)})"
            if progress:
                progress(f"{kernel:8s} {backend:10s} n_envs={n:7d}  {line}")
        results.extend(rows)
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


def env_scan(name: str, n: int, steps: int) -> tuple[Env, Callable[[jax.Array], jax.Array]]:
    """(env, run): run(key) resets `name` with n envs and takes `steps` random-action steps in a scan, returning
    (steps,) float32 (each step's mean reward plus its observations' means, so that XLA keeps the render)."""
    from jaxstep import envs as registry

    env = registry.make(name, n_envs=n)

    def run(key):
        state, _ = env.reset(key)

        def step(state, key):
            state, ts = env.step(state, env.action_space.sample(key))
            # use the observations, or XLA drops the render that makes them
            return state, ts.reward.mean() + sum(x.mean() for x in jax.tree.leaves(ts.obs))

        return jax.lax.scan(step, state, jax.random.split(key, steps))[1]

    return env, run


def _env_row(name: str, n: int, steps: int, repeats: int) -> dict:
    env, run = env_scan(name, n, steps)
    first, seconds, memory = _measure(jax.jit(run), (jax.random.PRNGKey(0),), repeats)
    rate = n * env.n_agents * steps / seconds
    return dict(env=name, n_envs=n, n_agents=env.n_agents, steps=steps, compile_seconds=first, seconds=seconds,
                frames_per_second=rate, memory_bytes_per_env=_per_env(memory, n))  # fmt: skip


def envs(
    names: Sequence[str] = ("minimal", "explorer", "deathmatch", "waypoint"),
    n_envs: Sequence[int] = (1024, 8192),
    steps: int = 100,
    repeats: int = 3,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Env steps with random actions, `steps` per jitted scan (reset included); returns a JSON-ready dict.

    Each result row has frames_per_second (agent-frames: n_envs * n_agents per env step, per second), seconds (per
    scan), compile_seconds (compiling plus the first run, seconds) and memory_bytes_per_env (device bytes, or
    None where the backend does not say). An env that runs out of device memory gets an out-of-memory row and
    no larger sizes.
    """
    results = []
    for name in names:
        too_big = math.inf  # the smallest n_envs that did not fit
        for n in n_envs:
            if n >= too_big:
                continue
            try:
                row = _env_row(name, n, steps, repeats)
            except Exception as e:
                if not _out_of_memory(e):
                    raise
                row = dict(env=name, n_envs=n, error=OUT_OF_MEMORY)
                too_big = n
            jax.clear_caches()
            results.append(row)
            if progress:
                if "error" in row:
                    line = "out of memory; no larger sizes"
                else:
                    rate, first = row["frames_per_second"], row["compile_seconds"]
                    line = f"{rate / 1e6:8.2f} M frames/s  (compile {first:.1f} s{_memory_text(row)})"
                progress(f"{name:10s} n_envs={n:7d}  {line}")
    return dict(benchmark="envs", device=str(jax.devices()[0].device_kind), platform=jax.default_backend(),
                jax=jax.__version__, steps=steps, repeats=repeats, results=results)  # fmt: skip


def scaling(
    name: str = "explorer",
    envs_per_device: int = 8192,
    device_counts: Sequence[int] = (1, 2, 4),
    steps: int = 50,
    train_updates: int = 6,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Env frames/s and training agent-steps/s over 1, 2, 4... devices, with a fixed number of envs per device.

    train_updates: timed PPO updates per device count; 0 measures the envs alone.
    """
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
        sps, train_first = None, 0.0
        if train_updates:
            config = PPOConfig(env=name, n_envs=envs_per_device * D, total_steps=10**12)
            train = make_sharded_train(config, devices) if D > 1 else make_train(config)
            update = jax.jit(train.update)
            train_state = train.init(jax.random.PRNGKey(0))
            train_first, train_seconds = _time(lambda s, update=update: update(s)[0], (train_state,), train_updates)
            sps = steps_per_update(config, train.env) * D / train_seconds
        results.append(dict(devices=D, n_envs=envs_per_device * D, env_frames_per_second=fps,
                            train_agent_steps_per_second=sps, compile_seconds=first + train_first))  # fmt: skip
        if progress:
            training = f", training {sps / 1e6:6.3f} M agent-steps/s" if sps else ""
            progress(f"{D} devices: env {fps / 1e6:8.2f} M frames/s{training}")
    base = results[0] if results else None
    for r in results:
        r["env_speedup"] = r["env_frames_per_second"] / base["env_frames_per_second"]
        if train_updates:
            r["train_speedup"] = r["train_agent_steps_per_second"] / base["train_agent_steps_per_second"]
    return dict(benchmark="scaling", env=name, device=str(jax.devices()[0].device_kind), jax=jax.__version__,
                results=results)  # fmt: skip


def write(result: dict, path: str | None) -> None:
    """Writes `result` as indented JSON to path, or to stdout where path is None."""
    text = json.dumps(result, indent=2)
    if path:
        with open(path, "w") as f:
            f.write(text + "\n")
    else:
        sys.stdout.write(text + "\n")


def _size_label(n: int) -> str:
    if n % (1 << 20) == 0:
        return f"{n >> 20}M"
    if n % 1024 == 0:
        return f"{n >> 10}k"
    return str(n)


def plot(result: dict, path: str | os.PathLike) -> None:
    """Plots throughput against n_envs (log2 axis) for a `kernels` or `envs` result, one line per (kernel,
    backend) or env, titled with the device, and saves it to path (.png, .svg or .pdf). Throughput is
    agent-frames per second (render and envs) or agent-steps per second (physics)."""
    # no pyplot: its global state and display backends are no use for writing a file
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lines: dict[str, list[tuple[int, float]]] = {}
    too_big: dict[str, int] = {}
    for row in result["results"]:
        label = row["env"] if "env" in row else f"{row['kernel']} {row['backend']}"
        if "error" in row:
            too_big[label] = row["n_envs"]
        else:
            rate = row.get("frames_per_second", row.get("agent_steps_per_second"))
            lines.setdefault(label, []).append((row["n_envs"], rate))
    fig = Figure(figsize=(8, 5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for label, points in lines.items():
        n, rate = zip(*sorted(points), strict=True)
        if label in too_big:
            label += f" (out of memory at {_size_label(too_big[label])})"
        ax.plot(n, rate, marker="o", label=label)
    sizes = sorted({n for points in lines.values() for n, _ in points})
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(sizes, [_size_label(n) for n in sizes])
    ax.set_xticks([], minor=True)
    ax.set_xlabel("n_envs")
    physics = result["benchmark"] == "kernels"
    ax.set_ylabel("agent-frames/s (render), agent-steps/s (physics)" if physics else "agent-frames/s")
    ax.set_title(f"jaxstep {result['benchmark']} on {result['device']}")
    ax.grid(True, which="both", alpha=0.3)
    if lines:
        ax.legend()
    fig.savefig(path, dpi=120, bbox_inches="tight")
