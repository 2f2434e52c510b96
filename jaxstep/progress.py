"""A small progress bar for long loops, written to stderr (no dependency)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], total: int | None = None, desc: str = "", stream=None) -> Iterator[T]:
    """Yields `items`, redrawing `desc [#####.....] k/total  elapsed` on one line at most 10 times a second."""
    stream = sys.stderr if stream is None else stream
    total = len(items) if total is None and hasattr(items, "__len__") else total
    start = last = time.perf_counter()

    def draw(k: int) -> None:
        elapsed = time.perf_counter() - start
        if total:
            filled = int(30 * k / total)
            bar = f"[{'#' * filled}{'.' * (30 - filled)}] {k}/{total}"
        else:
            bar = f"{k}"
        stream.write(f"\r{desc} {bar}  {elapsed:.1f}s")
        stream.flush()

    k = 0
    draw(0)
    for k, item in enumerate(items, 1):
        yield item
        now = time.perf_counter()
        if now - last > 0.1 or k == total:
            draw(k)
            last = now
    draw(k)
    stream.write("\n")
