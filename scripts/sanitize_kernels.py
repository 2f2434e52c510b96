"""Runs each CUDA kernel once on small inputs, for compute-sanitizer."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxstep import core, geometry, scene, toys

geometries = [toys.box(), toys.column(), *geometry.floorplans(2)]
s = scene.scenery([geometries[i % 4] for i in range(37)], n_agents=3)
rng = np.random.default_rng(0)
agents = dataclasses.replace(
    core.agents(37, 3, positions=jnp.asarray(rng.uniform(1, 6, (37, 3, 2)), jnp.float32)),
    velocity=jnp.asarray(rng.normal(size=(37, 3, 2)) * 5, jnp.float32),
)
moved, progress = core.physics(s, agents)
view = core.render(s, moved, res=33)
jax.block_until_ready((moved, progress, view))
print("ok", float(progress.mean()), float(view.screen.mean()))
