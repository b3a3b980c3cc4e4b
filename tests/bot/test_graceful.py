"""SIGTERM ends the bot and the worker even when their work swallows a cancel (as redis-py can)."""

from __future__ import annotations

import asyncio
import os
import signal

from bot.graceful import until_terminated


async def test_sigterm_stops_work_that_swallows_the_first_cancel() -> None:
    cancels: list[str] = []

    async def work() -> str:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancels.append("swallowed")  # as redis-py does when a cancel lands mid-connect
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancels.append("ended")
            raise
        return "ran to the end"

    asyncio.get_running_loop().call_later(0.1, os.kill, os.getpid(), signal.SIGTERM)
    runner = asyncio.create_task(until_terminated(work()))
    finished, _ = await asyncio.wait({runner}, timeout=5)
    if not finished:
        runner.cancel()
    assert finished, "the process would go on running after SIGTERM"
    assert runner.result() is None
    assert cancels == ["swallowed", "ended"]


async def test_work_that_ends_on_its_own_returns_its_result() -> None:
    async def work() -> str:
        await asyncio.sleep(0)
        return "done"

    assert await until_terminated(work()) == "done"
