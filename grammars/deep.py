"""Run a recursive compiler stage on a thread with a deep stack (schemas and grammars nested past
Python's default recursion limit)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TypeVar

__all__ = ["run_deep"]

T = TypeVar("T")


def run_deep(fn: Callable[[], T], *, recursion_limit: int = 200_000,
             stack_bytes: int = 512 * 1024 * 1024) -> T:
    """``fn()`` on a new thread with ``stack_bytes`` of stack and ``recursion_limit``; its result,
    or its exception re-raised here (a ``RecursionError`` still means: too deep even so)."""
    out: list[object] = []

    def target() -> None:
        old = sys.getrecursionlimit()
        sys.setrecursionlimit(recursion_limit)
        try:
            out.append(fn())
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            out.append(e)
        finally:
            sys.setrecursionlimit(old)

    size = threading.stack_size(stack_bytes)
    try:
        t = threading.Thread(target=target)
        t.start()
    finally:
        threading.stack_size(size)
    t.join()
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]  # type: ignore[return-value]
