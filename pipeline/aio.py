"""Event-loop helpers both processes use (standard library only)."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_all(tasks: list[asyncio.Task[Any]], *, deadline_s: float = 10.0) -> None:
    """Cancel ``tasks`` and wait for them, cancelling again those still running every half second.

    redis-py can swallow a cancellation that lands while a connection is being made (its timeout
    wrapper takes it for its own): a single cancel() would then leave the task, and the process,
    running forever. After ``deadline_s`` the rest are left to the event loop's own shutdown.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    pending = {task for task in tasks if not task.done()}
    while pending and loop.time() < end:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: a task that ended with an error is not reported twice at exit
