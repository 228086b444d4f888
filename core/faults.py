"""Named points where a test may inject a fault (an interruption, a full disk, a crash), instead
of patching the module that happens to import a function today: the points are part of the code,
so a refactor that moves an import cannot silently disarm a test.

    with faults.injected("search.student", lambda folder: ...):   # in a test
    faults.reach("search.student", folder=folder)                 # in the code, where it can fail

Nothing is registered outside tests; reaching a point costs one dictionary lookup.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_armed: dict[str, Callable[..., Any]] = {}


def reach(point: str, **context: Any) -> None:
    """Call the fault injected at `point`, if any, with what the code knows there."""
    fault = _armed.get(point)
    if fault is not None:
        fault(**context)


@contextmanager
def injected(point: str, fault: Callable[..., Any]) -> Iterator[None]:
    _armed[point] = fault
    try:
        yield
    finally:
        _armed.pop(point, None)
