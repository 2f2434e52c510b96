"""Pictures of one env's state: a plan view (walls in their lit colours, lights, agents and their fields of
view) beside each agent's observation strips."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.patches import Circle, Wedge

from jaxstep.ffi.types import AGENT_RADIUS
from jaxstep.scene import gamma_encode, texel_segments


def plot_walls(ax, lines: dict[str, np.ndarray]) -> None:
    """Every wall texel as a short segment in its lit colour, and the lights as stars."""
    segments, colours = texel_segments(lines)
    ax.add_collection(LineCollection(segments, colors=colours, linewidths=3))
    lights = lines["lights"]
    if len(lights):
        ax.scatter(lights[:, 0], lights[:, 1], marker="*", s=80 * lights[:, 2], c="gold", zorder=3)


def plot_agents(ax, positions: np.ndarray, angles: np.ndarray, fov: float, view: float = 1.5) -> None:
    """Agents (A, 2) facing angles (A,) degrees as discs with a wedge `view` metres long showing the field of view."""
    for a, ((x, y), angle) in enumerate(zip(positions, angles, strict=True)):
        colour = f"C{a}"
        ax.add_patch(Wedge((x, y), view, angle - fov / 2, angle + fov / 2, color=colour, alpha=0.15, zorder=2))
        ax.add_patch(Circle((x, y), AGENT_RADIUS, color=colour, zorder=4))
        heading = np.deg2rad(angle)
        ax.plot([x, x + 2 * AGENT_RADIUS * np.cos(heading)], [y, y + 2 * AGENT_RADIUS * np.sin(heading)], "k-", lw=1)


def plot_images(axes, images: dict[str, np.ndarray]) -> None:
    """For each agent, its image observations (each (1, W, C)) stacked as rows of one picture."""
    for a, ax in enumerate(axes):
        rows = []
        for image in images.values():
            strip = image[a]
            strip = gamma_encode(np.clip(strip, 0, 1)) if strip.shape[-1] == 3 else np.repeat(strip, 3, -1)
            rows.append(np.repeat(strip, max(1, strip.shape[1] // 16), axis=0))
        ax.imshow(np.concatenate(rows), aspect="auto", interpolation="nearest")
        ax.set(xticks=[], yticks=[], ylabel=f"agent {a}")
        if a == 0:
            ax.set_title(" / ".join(images), fontsize=9)


def plot_env(state: dict[str, Any], title: str | None = None):
    """A figure of one env's state, as given by `env.state(state, e)`."""
    agents, obs = state["agents"], state.get("obs", {})
    images = {k: v for k, v in obs.items() if np.ndim(v) == 4}
    n_rows = max(1, len(next(iter(images.values()))) if images else 1)
    fig = plt.figure(figsize=(11, 5.5))
    grid = fig.add_gridspec(n_rows, 2, width_ratios=[1, 1.2])
    plan = fig.add_subplot(grid[:, 0])
    plot_walls(plan, state["scenery"])
    plot_agents(plan, agents.positions, agents.angles, state["fov"])
    plan.set_aspect("equal")
    plan.autoscale()
    plan.set_facecolor("0.95")
    plan.set_title(title or f"env {state['e']}, step {int(np.max(state['time']))}")
    if images:
        plot_images([fig.add_subplot(grid[i, 1]) for i in range(n_rows)], images)
    fig.tight_layout()
    return fig
