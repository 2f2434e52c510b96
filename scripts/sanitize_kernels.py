"""Runs each CUDA kernel once on small inputs, for compute-sanitizer.

It sets XLA_PYTHON_CLIENT_PREALLOCATE=false and XLA_PYTHON_CLIENT_ALLOCATOR=platform unless they are set: each
buffer is then its own allocation, which the sanitizer can follow (and initcheck need not track a preallocated
pool). Exits non-zero
unless it ran on a GPU, so a sanitizer run that fell back to the CPU cannot pass.
"""

import dataclasses
import os
import sys

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # before jax starts its GPU client
os.environ.setdefault("XLA_PYTHON_CLIENT_ALLOCATOR", "platform")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxstep import core, geometry, scene, toys  # noqa: E402

geometries = [toys.box(), toys.column(), *geometry.floorplans(2)]
s = scene.scenery([geometries[i % 4] for i in range(37)], n_agents=3)
rng = np.random.default_rng(0)
agents = dataclasses.replace(
    core.agents(37, 3, positions=jnp.asarray(rng.uniform(1, 6, (37, 3, 2)), jnp.float32)),
    velocity=jnp.asarray(rng.normal(size=(37, 3, 2)) * 5, jnp.float32),
)
moved, progress = core.physics(s, agents)
view = core.render(s, moved, res=33)
# the masked path, and fewer viewers than agents
masked = core.render(s, moved, res=33, n_viewers=2, mask=jnp.asarray(rng.uniform(size=(37, 2)) < 0.5))
# image columns: a whole warp of columns, columns leaving lanes idle (3 rays: 30 a warp), some outputs only
mask = jnp.asarray(rng.uniform(size=(37, 3)) < 0.5)
columns = [
    core.observe(s, moved, res=64, subsample=4, mask=mask),
    core.observe(s, moved, res=33, subsample=3, n_viewers=2, outputs=("rgb", "indices")),
    # views of 16 warps, which blocks of 8 search together; the last warp of each view partial
    core.render(s, moved, res=500, mask=mask),
    core.observe(s, moved, res=474, subsample=3, n_viewers=2),
    # views of more than a block's 256 lines (40 agents' model lines), listed 256 at a time
    core.observe(
        scene.scenery([toys.box()] * 3, n_agents=40),
        core.agents(3, 40, positions=jnp.asarray(rng.uniform(1.2, 5.8, (3, 40, 2)), jnp.float32)),
        res=500,
        subsample=1,
    ),
]
# geometries of many walls, whose physics reads the grid's lists
mazes = geometry.mazes(2, size=(24, 24))
maze_scenery = scene.scenery([mazes[i % 2] for i in range(5)], n_agents=3)
maze_agents = core.agents(5, 3, positions=jnp.asarray(rng.uniform(0.5, 37, (5, 3, 2)), jnp.float32))
maze_agents = dataclasses.replace(maze_agents, velocity=jnp.asarray(rng.normal(size=(5, 3, 2)) * 5, jnp.float32))
in_mazes = [core.physics(maze_scenery, maze_agents), core.observe(maze_scenery, maze_agents, res=64, subsample=4)]
jax.block_until_ready((moved, progress, view, masked, columns, in_mazes))
platform = view.screen.devices().pop().platform
print("ok", platform, float(progress.mean()), float(view.screen.mean()))
sys.exit(0 if platform == "gpu" else f"ran on {platform}, not on a GPU")
