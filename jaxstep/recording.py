"""Videos of rollouts: mp4 (through imageio-ffmpeg, whose wheel carries ffmpeg) and GIF.

Frames are matplotlib figures of one env's state, drawn in a pool of worker processes because plotting is
far slower than stepping. A `Video` shows itself inline in a notebook.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import multiprocessing
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxstep.progress import progress

FORMATS = (".mp4", ".gif")


def _plotter(spec: str):
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def draw(state: dict[str, Any], plotter: str = "jaxstep.plotting:plot_env", dpi: int = 80) -> np.ndarray:
    """One frame: the figure `plotter(state)` as an (H, W, 3) uint8 image. `plotter` is "module:function"."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = _plotter(plotter)(state)
    fig.set_dpi(dpi)
    fig.canvas.draw()
    frame = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return frame


def _draw_one(args: tuple[dict[str, Any], str, int]) -> np.ndarray:
    return draw(*args)


def draw_frames(states: Sequence[dict[str, Any]], plotter: str = "jaxstep.plotting:plot_env", dpi: int = 80,
                processes: int | None = None) -> list[np.ndarray]:  # fmt: skip
    """Frames of many states, drawn by `processes` workers (default: one per core, at most 8)."""
    processes = processes or min(8, os.cpu_count() or 1)
    jobs = [(s, plotter, dpi) for s in states]
    if processes == 1 or len(jobs) < 4:
        return [_draw_one(j) for j in progress(jobs, desc="drawing")]
    # spawn: forking a process that has started JAX's threads is unsafe
    with _main_script_hidden(), multiprocessing.get_context("spawn").Pool(processes) as pool:
        return list(progress(pool.imap(_draw_one, jobs, chunksize=2), total=len(jobs), desc="drawing"))


@contextlib.contextmanager
def _main_script_hidden():
    """Keeps spawned workers from re-running the user's script (they need only jaxstep's own functions), so
    a script calling `record` at top level, with no `if __name__ == "__main__":` guard, works."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or path is None or getattr(main, "__spec__", None) is not None:
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


def _even(frame: np.ndarray) -> np.ndarray:
    """Crops to even height and width, which H.264 needs."""
    return frame[: frame.shape[0] // 2 * 2, : frame.shape[1] // 2 * 2]


def write(frames: Sequence[np.ndarray], path: str | os.PathLike, fps: float = 10.0) -> Path:
    """Writes (H, W, 3) uint8 frames to an .mp4 or .gif file; returns its path."""
    path = Path(path)
    if path.suffix not in FORMATS:
        raise ValueError(f"path: expected a file ending in one of {FORMATS}, got {str(path)!r}")
    if not len(frames):
        raise ValueError("frames: expected at least one frame")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gif":
        from PIL import Image

        images = [Image.fromarray(f) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
        return path
    import imageio_ffmpeg

    first = _even(frames[0])
    with warnings.catch_warnings():
        # ffmpeg is started with fork+exec, which is safe even though JAX has threads running
        warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
        writer = imageio_ffmpeg.write_frames(str(path), (first.shape[1], first.shape[0]), fps=fps, macro_block_size=1)
        writer.send(None)
        for f in frames:
            writer.send(np.ascontiguousarray(_even(f)))
        writer.close()
    return path


class Video:
    """A written video file that displays itself inline in Jupyter."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def _repr_html_(self) -> str:
        data = base64.b64encode(self.path.read_bytes()).decode()
        if self.path.suffix == ".gif":
            return f'<img src="data:image/gif;base64,{data}"/>'
        return f'<video controls loop autoplay muted src="data:video/mp4;base64,{data}"></video>'

    def __repr__(self) -> str:
        return f"Video({str(self.path)!r})"


def record(env, snapshots: dict[str, Any], path: str | os.PathLike, e: int = 0, fps: float | None = None,
           processes: int | None = None) -> Video:  # fmt: skip
    """Draws and writes a video of env e from stacked snapshots (each leaf (T, ...), from `env.snapshot` in a scan)."""
    steps = len(np.asarray(snapshots["time"]))
    states = [env.describe(_index(snapshots, t), e) for t in range(steps)]
    frames = draw_frames(states, env.plotter, processes=processes)
    return Video(write(frames, path, fps or env.fps))


def _index(tree: dict[str, Any], t: int) -> dict[str, Any]:
    import jax

    return jax.tree.map(lambda x: np.asarray(x)[t], tree)
