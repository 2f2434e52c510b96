"""jaxstep: thousands of 2D flatland RL environments stepping in parallel, as JAX FFI kernels.

Submodules load on first use: `jaxstep.geometry`, `jaxstep.toys`, `jaxstep.scene`, `jaxstep.core`, `jaxstep.ffi`.
"""

import importlib

__version__ = "0.1.0"
_SUBMODULES = ("bench", "cli", "core", "envs", "ffi", "geometry", "modules", "plotting", "scene", "spaces", "toys")


def make(name: str, n_envs: int = 1, **config):
    """The registered env `name` (minimal, explorer, deathmatch, waypoint) with n_envs envs; see `jaxstep.envs`."""
    from jaxstep.envs import make as _make

    return _make(name, n_envs, **config)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"jaxstep.{name}")
    raise AttributeError(f"module 'jaxstep' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_SUBMODULES])
