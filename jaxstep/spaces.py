"""Observation and action spaces for batched multi-agent environments, in pure JAX.

Every space describes ONE env step's array for ALL envs and agents, so its leading dims are ``(n_envs, n_agents)``:

- ``MultiImage(n_envs, n_agents, height, width, channels, low=0., high=1.)``: float32,
  ``(n_envs, n_agents, height, width, channels)``, channels-last as Flax convolutions expect.
- ``MultiVector(n_envs, n_agents, dim, low=-inf, high=inf)``: float32, ``(n_envs, n_agents, dim)``.
- ``MultiDiscrete(n_envs, n_agents, n_actions)``: int32, ``(n_envs, n_agents)``, values in ``[0, n_actions)``.
- ``MultiConstant(n_envs, n_agents, value=0.)``: float32, ``(n_envs, n_agents)``, every element ``value``.
- ``Dict({name: space, ...})`` or ``Dict(name=space, ...)``: a dict of its members' arrays; ``shape`` and
  ``dtype`` are dicts of theirs.

Each space has ``shape``, ``dtype`` (a numpy dtype), ``n_envs``, ``n_agents``, ``agent_shape`` (``shape[2:]``, one
agent's part), and:

- ``sample(key)``: a random member, deterministic per key and usable inside ``jax.jit``. Bounded float spaces sample
  uniformly; an unbounded ``MultiVector`` samples a standard normal (a half-bounded one, the bound plus or minus an
  exponential); ``MultiDiscrete`` samples uniform ints.
- ``contains(x)``: whether ``x`` is a member: the right shape, a dtype of the right kind (any float for float spaces,
  any integer for ``MultiDiscrete``), and every value finite and in bounds. It never raises: anything else is
  ``False``. On concrete arrays it returns a Python bool; on traced ones (inside ``jit``) a boolean 0-d jax array
  (shape and dtype are still checked statically).
- ``zeros()``: a valid member full of zeros (for a float space whose bounds exclude 0, the bound nearest 0; for
  ``MultiConstant``, its value).

Spaces are immutable and compare and hash by value, so they can be static config (``jax.jit(static_argnums=...)``).
Constructors raise ``ValueError`` naming the bad argument and what was expected.

Float bounds and constants are compared against float32 arrays with the float32 rounding of the bound allowed, so
``MultiVector(..., high=0.1).contains(jnp.full(shape, 0.1))`` holds though ``float32(0.1) > 0.1``.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import math
import numbers
import operator
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Space", "MultiImage", "MultiVector", "MultiDiscrete", "MultiConstant", "Dict"]

_F32_MAX = float(np.finfo(np.float32).max)
_I32_MAX = int(np.iinfo(np.int32).max)

Bool = bool | jax.Array
"""What ``contains`` returns: a Python bool on concrete input, a boolean 0-d jax array on traced input."""


# ---------------------------------------------------------------------------------------------------------------------
# argument checks and helpers


def check_int(name: str, value: Any, minimum: int = 1, maximum: int | None = None) -> int:
    """`value` as an int in [minimum, maximum], or a ValueError naming `name`. Bools and floats are refused."""
    kind = {1: "a positive int", 0: "a non-negative int"}.get(minimum, f"an int of at least {minimum}")
    if isinstance(value, bool | np.bool_):
        raise ValueError(f"{name}: expected {kind}, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name}: expected {kind}, got {value!r}") from None
    if value < minimum:
        raise ValueError(f"{name}: expected {kind}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name}: expected at most {maximum}, got {value}")
    return value


def _real(name: str, value: Any, *, allow_inf: bool) -> float:
    """`value` as a float that float32 can hold (or ±inf if `allow_inf`), or a ValueError naming `name`."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN")
    if math.isinf(value):
        if not allow_inf:
            raise ValueError(f"{name} must be finite, got {value}")
    elif abs(value) > _F32_MAX:
        raise ValueError(f"{name} must be within float32 range (|{name}| <= {_F32_MAX:g}), got {value!r}")
    return value


def _bounds(low: Any, high: Any, *, allow_inf: bool) -> tuple[float, float]:
    low = _real("low", low, allow_inf=allow_inf)
    high = _real("high", high, allow_inf=allow_inf)
    if not low < high:
        raise ValueError(f"low must be less than high, got low={low!r}, high={high!r}")
    if not np.float32(low) < np.float32(high):
        raise ValueError(f"low and high must differ in float32, got low={low!r}, high={high!r}")
    return low, high


def _as_array(x: Any) -> np.ndarray | jax.Array | None:
    """`x` as a numpy or jax array, or None if it cannot be one (ragged lists, objects, ...)."""
    if isinstance(x, jax.Array | np.ndarray):
        return x
    try:
        x = np.asarray(x)
    except Exception:
        return None
    return None if x.dtype == object else x


def _is_traced(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


def _fits(x: Any, shape: tuple[int, ...], kind: type) -> np.ndarray | jax.Array | None:
    """`x` as an array if it has `shape` and a dtype of `kind` (jnp.floating or jnp.integer), else None."""
    x = _as_array(x)
    if x is None or tuple(x.shape) != shape:
        return None
    try:
        if not jnp.issubdtype(x.dtype, kind):
            return None
    except TypeError:
        return None
    return x


def _float_in(x: np.ndarray | jax.Array, low: float, high: float) -> Bool:
    """Whether every value of float array `x` is finite and in [low, high], widened to their float32 roundings."""
    lo = min(low, float(np.float32(low)))
    hi = max(high, float(np.float32(high)))
    if _is_traced(x):
        return jnp.all(jnp.isfinite(x) & (x >= lo) & (x <= hi))
    x = np.asarray(x).astype(np.float64)
    return bool(np.all(np.isfinite(x) & (x >= lo) & (x <= hi)))


# The samplers draw a flat vector and reshape it: XLA's CPU compile time of jax.random's generators grows fast with
# the rank of the shape asked for (seconds for rank 5), not with its size. They are jitted, with bounds traced, so
# that eager calls compile once per shape rather than once per primitive per call.


@functools.partial(jax.jit, static_argnums=1)
def _uniform(key: jax.Array, shape: tuple[int, ...], low: jax.Array, high: jax.Array) -> jax.Array:
    """Uniform float32 in [low, high]; written as a convex combination so that huge ranges cannot overflow."""
    u = jax.random.uniform(key, (math.prod(shape),), jnp.float32).reshape(shape)
    return jnp.clip(low * (1 - u) + high * u, low, high)


@functools.partial(jax.jit, static_argnums=1)
def _exponential(key: jax.Array, shape: tuple[int, ...], bound: jax.Array, sign: jax.Array) -> jax.Array:
    """`bound` plus `sign` times a standard exponential, float32, clipped to stay finite."""
    x = bound + sign * jax.random.exponential(key, (math.prod(shape),), jnp.float32).reshape(shape)
    return jnp.clip(x, -_F32_MAX, _F32_MAX)


@functools.partial(jax.jit, static_argnums=1)
def _normal(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Standard normal float32."""
    return jax.random.normal(key, (math.prod(shape),), jnp.float32).reshape(shape)


@functools.partial(jax.jit, static_argnums=1)
def _randint(key: jax.Array, shape: tuple[int, ...], n: jax.Array) -> jax.Array:
    """Uniform int32 in [0, n)."""
    return jax.random.randint(key, (math.prod(shape),), 0, n, jnp.int32).reshape(shape)


def _nearest_zero(low: float, high: float) -> float:
    return min(max(0.0, low), high)


def _all(flags: list[Bool]) -> Bool:
    """The conjunction of `flags`: a Python bool if they all are, else a boolean 0-d jax array."""
    if all(isinstance(f, bool) for f in flags):
        return all(flags)
    out = jnp.asarray(True)
    for f in flags:
        out = out & f
    return out


# ---------------------------------------------------------------------------------------------------------------------
# spaces


class Space(abc.ABC):
    """A set of arrays for one step of every env and agent; its leading dims are ``(n_envs, n_agents)``."""

    @property
    @abc.abstractmethod
    def shape(self) -> Any:
        """The array's shape (a dict of them for `Dict`)."""

    @property
    @abc.abstractmethod
    def dtype(self) -> Any:
        """The array's numpy dtype (a dict of them for `Dict`)."""

    # every space also has `n_envs: int` and `n_agents: int` (dataclass fields or properties)

    @abc.abstractmethod
    def sample(self, key: jax.Array) -> Any:
        """A random member, deterministic per key; jit-able."""

    @abc.abstractmethod
    def contains(self, x: Any) -> Bool:
        """Whether `x` is a member; never raises."""

    @abc.abstractmethod
    def zeros(self) -> Any:
        """A valid member full of zeros (or the nearest valid value)."""


@dataclasses.dataclass(frozen=True)
class _Batched(Space):
    """Fields and checks shared by the array spaces."""

    n_envs: int
    n_agents: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "n_envs", check_int("n_envs", self.n_envs))
        object.__setattr__(self, "n_agents", check_int("n_agents", self.n_agents))

    @property
    def agent_shape(self) -> tuple[int, ...]:
        """One agent's part of the shape: ``shape[2:]``."""
        return self.shape[2:]


class _BoundedFloats:
    """float32 members, every value finite and in [self.low, self.high]."""

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    def contains(self, x: Any) -> Bool:
        x = _fits(x, self.shape, jnp.floating)
        return False if x is None else _float_in(x, self.low, self.high)

    def zeros(self) -> jax.Array:
        return jnp.full(self.shape, _nearest_zero(self.low, self.high), jnp.float32)


@dataclasses.dataclass(frozen=True)
class MultiImage(_BoundedFloats, _Batched):
    """Images: float32 arrays of shape ``(n_envs, n_agents, height, width, channels)`` (channels-last), every value
    in ``[low, high]``, both finite. Samples are uniform in the bounds."""

    height: int
    width: int
    channels: int
    low: float = 0.0
    high: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("height", "width", "channels"):
            object.__setattr__(self, name, check_int(name, getattr(self, name)))
        low, high = _bounds(self.low, self.high, allow_inf=False)
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        return (self.n_envs, self.n_agents, self.height, self.width, self.channels)

    def sample(self, key: jax.Array) -> jax.Array:
        return _uniform(key, self.shape, np.float32(self.low), np.float32(self.high))



@dataclasses.dataclass(frozen=True)
class MultiVector(_BoundedFloats, _Batched):
    """Vectors: float32 arrays of shape ``(n_envs, n_agents, dim)``, every value finite and in ``[low, high]``.

    The bounds may be infinite. Samples are uniform when both bounds are finite, a standard normal when neither is,
    and the finite bound plus (or minus) a standard exponential when only one is."""

    dim: int
    low: float = -math.inf
    high: float = math.inf

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "dim", check_int("dim", self.dim))
        low, high = _bounds(self.low, self.high, allow_inf=True)
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.n_envs, self.n_agents, self.dim)

    def sample(self, key: jax.Array) -> jax.Array:
        lo_inf, hi_inf = math.isinf(self.low), math.isinf(self.high)
        if lo_inf and hi_inf:
            return _normal(key, self.shape)
        if hi_inf:
            return _exponential(key, self.shape, np.float32(self.low), np.float32(1))
        if lo_inf:
            return _exponential(key, self.shape, np.float32(self.high), np.float32(-1))
        return _uniform(key, self.shape, np.float32(self.low), np.float32(self.high))



@dataclasses.dataclass(frozen=True)
class MultiDiscrete(_Batched):
    """One discrete action per agent: int32 arrays of shape ``(n_envs, n_agents)``, values in ``[0, n_actions)``.
    Samples are uniform ints."""

    n_actions: int

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "n_actions", check_int("n_actions", self.n_actions, maximum=_I32_MAX))

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_envs, self.n_agents)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.int32)

    def sample(self, key: jax.Array) -> jax.Array:
        return _randint(key, self.shape, np.int32(self.n_actions))

    def contains(self, x: Any) -> Bool:
        x = _fits(x, self.shape, jnp.integer)
        if x is None:
            return False
        if _is_traced(x):
            return jnp.all((x >= 0) & (x < self.n_actions))
        x = np.asarray(x)
        return bool(np.all((x >= 0) & (x < self.n_actions)))

    def zeros(self) -> jax.Array:
        return jnp.zeros(self.shape, jnp.int32)


@dataclasses.dataclass(frozen=True)
class MultiConstant(_Batched):
    """A fixed value per agent (an id, a flag): float32 arrays of shape ``(n_envs, n_agents)``, every element equal
    to ``value`` (or its float32 rounding). Samples are that constant, whatever the key."""

    value: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        value = self.value
        if isinstance(value, bool | np.bool_):
            value = float(value)
        object.__setattr__(self, "value", _real("value", value, allow_inf=False))

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_envs, self.n_agents)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    def sample(self, key: jax.Array) -> jax.Array:
        del key
        return self.zeros()

    def contains(self, x: Any) -> Bool:
        x = _fits(x, self.shape, jnp.floating)
        return False if x is None else _float_in(x, self.value, self.value)

    def zeros(self) -> jax.Array:
        return jnp.full(self.shape, self.value, jnp.float32)


class Dict(Space, Mapping[str, Space]):
    """Named spaces sharing ``n_envs`` and ``n_agents``; its members are dicts of their members' arrays.

    ``Dict({"rgb": MultiImage(...), "pos": MultiVector(...)})`` or ``Dict(rgb=..., pos=...)``; members may be Dicts.
    A read-only mapping from names to spaces. ``shape`` and ``dtype`` are dicts of the members' shapes and dtypes.
    ``sample(key)`` gives each member its own key, split in sorted-name order, so it does not depend on insertion
    order; equality and hashing do not either. ``contains(x)`` needs a mapping with exactly the same keys."""

    __slots__ = ("_spaces",)
    _spaces: Mapping[str, Space]

    def __init__(self, spaces: Mapping[str, Space] | None = None, /, **kwargs: Space) -> None:
        if spaces is None:
            spaces = {}
        if not isinstance(spaces, Mapping):
            raise ValueError(f"spaces must be a mapping from str to Space, got {type(spaces).__name__}")
        both = set(spaces) & set(kwargs)
        if both:
            raise ValueError(f"spaces and keyword arguments both name {sorted(both)}")
        merged = {**spaces, **kwargs}
        if not merged:
            raise ValueError("spaces must name at least one space")
        for name, space in merged.items():
            if not isinstance(name, str):
                raise ValueError(f"spaces keys must be str, got {name!r}")
            if not isinstance(space, Space):
                raise ValueError(f"spaces[{name!r}] must be a Space, got {type(space).__name__}")
        for attr in ("n_envs", "n_agents"):
            values = {name: getattr(space, attr) for name, space in merged.items()}
            if len(set(values.values())) > 1:
                raise ValueError(f"spaces must share {attr}, got {values}")
        object.__setattr__(self, "_spaces", MappingProxyType(merged))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Dict is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Dict is immutable; cannot delete {name!r}")

    def __reduce__(self) -> tuple[type, tuple[dict[str, Space]]]:
        return (Dict, (dict(self._spaces),))

    # mapping
    def __getitem__(self, name: str) -> Space:
        return self._spaces[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._spaces)

    def __len__(self) -> int:
        return len(self._spaces)

    @property
    def spaces(self) -> Mapping[str, Space]:
        """The members, read-only."""
        return self._spaces

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Dict):
            return NotImplemented
        return dict(self._spaces) == dict(other._spaces)

    def __hash__(self) -> int:
        return hash((Dict, frozenset(self._spaces.items())))

    def __repr__(self) -> str:
        members = ", ".join(f"{name!r}: {space!r}" for name, space in self._spaces.items())
        return f"Dict({{{members}}})"

    # space
    @property
    def shape(self) -> dict[str, Any]:
        return {name: space.shape for name, space in self._spaces.items()}

    @property
    def dtype(self) -> dict[str, Any]:
        return {name: space.dtype for name, space in self._spaces.items()}

    @property
    def n_envs(self) -> int:
        return next(iter(self._spaces.values())).n_envs

    @property
    def n_agents(self) -> int:
        return next(iter(self._spaces.values())).n_agents

    @property
    def agent_shape(self) -> dict[str, Any]:
        return {name: space.agent_shape for name, space in self._spaces.items()}

    def sample(self, key: jax.Array) -> dict[str, Any]:
        names = sorted(self._spaces)
        keys = jax.random.split(key, len(names))
        samples = {name: self._spaces[name].sample(k) for name, k in zip(names, keys, strict=True)}
        return {name: samples[name] for name in self._spaces}

    def contains(self, x: Any) -> Bool:
        if not isinstance(x, Mapping) or set(x.keys()) != set(self._spaces):
            return False
        return _all([space.contains(x[name]) for name, space in self._spaces.items()])

    def zeros(self) -> dict[str, Any]:
        return {name: space.zeros() for name, space in self._spaces.items()}
