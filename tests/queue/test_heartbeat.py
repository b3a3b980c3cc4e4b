"""A job's heartbeat ends with the job, even when the Redis client swallows the cancel that stops it.

Found with a hung Redis (SIGSTOP) in tests/telegram/test_outages.py: redis-py 5.3 can absorb a
cancellation that lands while it sends a command to a server that does not answer (the command then
completes as if nothing happened). A heartbeat stopped by one cancel() kept beating, its job never
ended, and the worker never took the next user's job.
"""

from __future__ import annotations

import asyncio
from typing import Any

from arq.connections import ArqRedis

from pipeline import jobs
from pipeline.aio import cancel_all
from pipeline.worker import _Heartbeat

RUN = "t20261205cccc0001"
JOB = jobs.arq_job_id(RUN, 1)


class SwallowsOneCancel(ArqRedis):
    """A real Redis client whose heartbeat write, once, swallows the cancellation that lands while it
    waits and completes the write, as redis-py does when the cancel races a send to a hung server."""

    swallowed = 0
    sets_started: asyncio.Event

    async def set(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self.sets_started.set()
        if self.swallowed == 0:
            try:
                await asyncio.sleep(3600)  # the hung server
            except asyncio.CancelledError:
                self.swallowed += 1
        return await super().set(*args, **kwargs)


async def test_a_swallowed_cancel_does_not_keep_a_finished_job_beating(redis_url: str) -> None:
    job = asyncio.create_task(_a_job_ends_while_its_beat_swallows_the_cancel(redis_url))
    done, _ = await asyncio.wait({job}, timeout=20)
    if not done:  # with the bug, leaving the heartbeat's block waits forever
        await cancel_all([job])
        raise AssertionError("the job never ended: its heartbeat kept beating")
    job.result()


async def _a_job_ends_while_its_beat_swallows_the_cancel(redis_url: str) -> None:
    redis = SwallowsOneCancel.from_url(redis_url)
    redis.swallowed = -1  # the first beat, on entering, goes through
    redis.sets_started = asyncio.Event()
    try:
        async with _Heartbeat(redis, RUN, JOB, ttl_s=0.3):
            assert await redis.get(jobs.heartbeat_key(RUN)) == JOB.encode(), "the job beats while it runs"
            redis.swallowed = 0
            redis.sets_started.clear()
            await asyncio.wait_for(redis.sets_started.wait(), 5)  # a beat is in flight: it will swallow

        # Without a second cancel the heartbeat task loops on, and this block is never reached.
        assert redis.swallowed == 1, "the client did swallow the job's cancel"
        await asyncio.sleep(0.5)
        assert await redis.get(jobs.heartbeat_key(RUN)) is None, "the run supervisor sees the job gone"
    finally:
        await redis.aclose()
