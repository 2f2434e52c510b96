"""jaxstep's envs and `make(name, n_envs, **config)`."""

from __future__ import annotations

from jaxstep.envs.base import Env, TimeStep
from jaxstep.envs.deathmatch import Deathmatch
from jaxstep.envs.explorer import Explorer
from jaxstep.envs.minimal import Minimal
from jaxstep.envs.waypoint import Waypoint

REGISTRY: dict[str, type[Env]] = {
    "minimal": Minimal,
    "explorer": Explorer,
    "deathmatch": Deathmatch,
    "waypoint": Waypoint,
}


def make(name: str, n_envs: int = 1, **config) -> Env:
    """The registered env `name` with n_envs envs; `config` goes to its constructor (res, fov, geometries, ...)."""
    if name not in REGISTRY:
        raise ValueError(f"name: unknown env {name!r}; registered envs are {sorted(REGISTRY)}")
    cls = REGISTRY[name]
    try:
        return cls(n_envs=n_envs, **config)
    except TypeError as e:
        raise TypeError(f"{name}: {e} (see help(jaxstep.envs.{cls.__name__}))") from None


__all__ = ["REGISTRY", "Env", "TimeStep", "make", "Minimal", "Explorer", "Deathmatch", "Waypoint"]
