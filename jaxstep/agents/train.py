"""The training loop around the compiled updates: chunks of updates, a progress bar, metrics.csv, checkpoints.

LOGDIR holds `config.json`, `metrics.csv` (one row per update) and `checkpoints/` (orbax, one per chunk). A run
resumed from its latest checkpoint continues exactly as if it had not stopped.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from pathlib import Path

import jax
import numpy as np

from jaxstep.agents.ppo import PPOConfig, Train, TrainState, make_sharded_train, make_train, steps_per_update
from jaxstep.progress import progress

COLUMNS = ("update", "step", "episode_return", "episode_length", "episodes", "reward", "loss", "policy_loss",
           "value_loss", "entropy", "approx_kl", "steps_per_second")  # fmt: skip


def save_config(config: PPOConfig, logdir: Path) -> None:
    (logdir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")


def load_config(logdir: str | Path) -> PPOConfig:
    raw = json.loads((Path(logdir) / "config.json").read_text())
    for field in ("env_config", "env_params"):
        raw[field] = tuple(tuple(pair) for pair in raw.get(field, ()))
    return PPOConfig(**raw)


def _checkpointer():
    import orbax.checkpoint as ocp

    return ocp.StandardCheckpointer()


def latest_checkpoint(logdir: str | Path) -> Path | None:
    folder = Path(logdir).absolute() / "checkpoints"
    if not folder.exists():
        return None
    done = sorted((p for p in folder.glob("*") if p.name.isdigit()), key=lambda p: int(p.name))
    return done[-1] if done else None


def save(state: TrainState, logdir: Path) -> Path:
    path = logdir.absolute() / "checkpoints" / str(updates_done(state))
    checkpointer = _checkpointer()
    checkpointer.save(path, state, force=True)
    checkpointer.wait_until_finished()
    return path


def restore(path: Path, like: TrainState) -> TrainState:
    """The TrainState saved at `path`, with the structure (and devices) of `like`."""
    return _checkpointer().restore(path, like)


def updates_done(state: TrainState) -> int:
    return int(np.asarray(state.update).reshape(-1)[0])


def run(config: PPOConfig, logdir: str | Path, resume: bool = False, updates_per_chunk: int = 10,
        max_updates: int | None = None, show_progress: bool = True,
        devices=None) -> tuple[TrainState, Train]:  # fmt: skip
    """Trains for config.total_steps (or stops after `max_updates` updates in all); returns the final state.

    devices: train data-parallel over these (see `make_sharded_train`); default one device.
    """
    logdir = Path(logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    train = make_sharded_train(config, devices) if devices is not None and len(devices) > 1 else make_train(config)
    state = train.init(jax.random.PRNGKey(config.seed))
    metrics_path = logdir / "metrics.csv"
    checkpoint = latest_checkpoint(logdir) if resume else None
    if checkpoint is not None:
        if load_config(logdir) != config:
            raise ValueError(f"resume: {logdir}/config.json differs from this run's config")
        state = restore(checkpoint, state)
        _truncate_metrics(metrics_path, updates_done(state))
    else:
        save_config(config, logdir)
        with metrics_path.open("w", newline="") as f:
            csv.writer(f).writerow(COLUMNS)

    end = train.n_updates if max_updates is None else min(train.n_updates, max_updates)
    chunk = jax.jit(lambda s: jax.lax.scan(lambda s, _: train.update(s), s, None, length=updates_per_chunk))
    single = jax.jit(train.update)
    per_update = steps_per_update(config, train.env) * train.n_devices
    start = updates_done(state)
    n_chunks = math.ceil((end - start) / updates_per_chunk) if end > start else 0
    bar = progress(range(n_chunks), desc=f"train {config.env}") if show_progress else range(n_chunks)
    for _ in bar:
        tic = time.perf_counter()
        if end - updates_done(state) >= updates_per_chunk:
            state, metrics = chunk(state)
        else:  # the last few updates, one at a time
            rows = []
            while updates_done(state) < end:
                state, m = single(state)
                rows.append(m)
            metrics = jax.tree.map(lambda *xs: np.stack(xs), *rows)
        metrics = jax.device_get(metrics)
        seconds = time.perf_counter() - tic
        _append_metrics(metrics_path, metrics, updates_done(state), per_update, seconds)
        save(state, logdir)
    return state, train


def _append_metrics(path: Path, metrics: dict, last_update: int, per_update: int, seconds: float) -> None:
    n = len(metrics["loss"])
    with path.open("a", newline="") as f:
        writer = csv.writer(f)
        for i in range(n):
            update = last_update - n + i + 1
            row = dict(update=update, step=update * per_update, steps_per_second=n * per_update / seconds)
            row.update({k: float(metrics[k][i]) for k in COLUMNS if k in metrics})
            writer.writerow(["" if isinstance(row[k], float) and math.isnan(row[k]) else row[k] for k in COLUMNS])


def _truncate_metrics(path: Path, updates: int) -> None:
    """Drops rows past the checkpoint being resumed from."""
    if not path.exists():
        return
    with path.open() as f:
        rows = list(csv.reader(f))
    keep = [rows[0]] + [r for r in rows[1:] if int(r[0]) <= updates]
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(keep)


def read_metrics(logdir: str | Path) -> dict[str, np.ndarray]:
    """metrics.csv as columns of floats (NaN where empty)."""
    with (Path(logdir) / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) if r[k] else np.nan for r in rows]) for k in COLUMNS}


def load_policy(logdir: str | Path, n_envs: int | None = None):
    """(env, agent, params) of the latest checkpoint in `logdir`, for acting (optionally with another n_envs)."""
    config = load_config(logdir)
    checkpoint = latest_checkpoint(logdir)
    if checkpoint is None:
        raise ValueError(f"agent: no checkpoint in {logdir}/checkpoints")
    train = make_train(config)
    state = restore(checkpoint, train.init(jax.random.PRNGKey(config.seed)))
    env = train.env if n_envs in (None, config.n_envs) else dataclasses.replace(config, n_envs=n_envs).make_env()
    return env, train.agent, state.params
