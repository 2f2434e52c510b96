"""`pytree_dataclass`: frozen dataclasses registered as JAX pytrees, with static (hashable) fields."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import jax

T = TypeVar("T")


def static(default: Any = dataclasses.MISSING) -> Any:
    """A field that is part of the pytree's structure (static under jit), not a leaf."""
    return dataclasses.field(default=default, metadata=dict(static=True))


def pytree_dataclass(cls: type[T]) -> type[T]:
    """Makes `cls` a frozen dataclass whose fields are pytree leaves, except those declared with `static()`."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    fields = dataclasses.fields(cls)
    jax.tree_util.register_dataclass(
        cls,
        data_fields=[f.name for f in fields if not f.metadata.get("static")],
        meta_fields=[f.name for f in fields if f.metadata.get("static")],
    )
    return cls


def replace(obj: T, **changes: Any) -> T:
    """A copy of the dataclass `obj` with some fields changed."""
    return dataclasses.replace(obj, **changes)
