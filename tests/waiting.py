"""Waiting in tests: poll a condition until it holds, and fail with what was awaited when it never does."""

from __future__ import annotations

import asyncio
import time
from typing import Any


async def eventually(predicate: Any, within: float, what: str = "", *, every: float = 0.05) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy, and return that; fail the
    test after ``within`` s, naming ``what`` (or the predicate) it waited for."""
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what or predicate}")
        await asyncio.sleep(every)
