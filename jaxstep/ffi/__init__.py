"""The bake, physics and render kernels: XLA FFI custom calls on CPU and CUDA, and a pure-JAX reference.

`calls` wraps the compiled handlers (`jaxstep.ffi._cpu`, and `jaxstep.ffi._cuda` where it was built);
`reference` computes the same functions in plain JAX, for tests and for devices with no handler.
"""

from jaxstep.ffi.types import AGENT_RADIUS, AGENT_WIDTH, MODEL_LINES, Agents, Render, Scenery

__all__ = ["AGENT_RADIUS", "AGENT_WIDTH", "MODEL_LINES", "Agents", "Render", "Scenery"]
