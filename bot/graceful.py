"""SIGTERM as a clean stop: ``docker stop``, systemd and ``facechain-bot up`` end the bot and the worker
with it, and each should leave as after a Ctrl-C (jobs stopped at a step, connections closed)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

from pipeline.aio import cancel_all as cancel_all  # re-exported for the bot's composition root

T = TypeVar("T")


async def until_terminated(work: Coroutine[Any, Any, T]) -> T | None:
    """Run ``work``; a SIGTERM cancels it (its ``finally`` blocks run) and returns None.

    Where signal handlers cannot be set (not the main thread, Windows), ``work`` just runs.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    #: The task cancelling ``work`` after a SIGTERM (kept here so that it is not garbage-collected).
    stopping: list[asyncio.Task[None]] = []

    def terminate() -> None:
        # Cancelled until it ends, not once: redis-py can swallow a cancel, and the process would not stop.
        stopping.append(loop.create_task(cancel_all([task])))

    handled = False
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGTERM, terminate)
        handled = True
    try:
        return await task
    except asyncio.CancelledError:
        if stopping:
            return None
        raise
    finally:
        if handled:
            loop.remove_signal_handler(signal.SIGTERM)
