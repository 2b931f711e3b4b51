"""Pausing Python's cyclic garbage collector around bulk reads of state.

Merging or restoring a large state allocates hundreds of thousands of objects that all
live on (the view's records, parsed values, compiled rules). Every few hundred
allocations the collector runs, and as the young objects age it traverses them again and
again, finding nothing to free: with the collector on, a full-state merge of 20,000
entities took 1.7x as long as with it paused (``benchmarks/bench_core.py``, ingest rows
with the collector on). So bulk reads run with it paused; it runs again as soon as they
end, and a collector already turned off by the application stays off.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["paused"]


@contextmanager
def paused() -> Iterator[None]:
    """Pause the cyclic collector for the ``with`` block, if it is on."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
