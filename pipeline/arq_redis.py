"""arq on Redis as both processes use it: a client speaking the job contract, what an outage raises, the
pause before reconnecting, and an arq worker served through outages.

Torch-free (arq, redis and the job contract only): the bot imports it for its outcome worker, the GPU
worker for its queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from arq.connections import ArqRedis
from arq.worker import Worker
from redis.exceptions import RedisError

from pipeline import jobs

#: Pause before reconnecting to a Redis that went away, doubling up to the maximum.
RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 5.0
#: What a Redis that is down, restarting or unreachable raises (redis-py's errors, socket errors).
REDIS_DOWN: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)


def redis_client(url: str, queue: str) -> ArqRedis:
    """An arq client speaking the contract's JSON, enqueuing on ``queue`` by default.

    It connects on first use (so it can be made while Redis is down) and gives up on a command after
    :data:`pipeline.jobs.REDIS_COMMAND_TIMEOUT_S` (arq's settings have no such timeout): a Redis that
    hangs fails like a Redis that is down, and whoever waits on it reconnects.
    """
    redis: ArqRedis = ArqRedis.from_url(
        url, socket_connect_timeout=jobs.REDIS_CONNECT_TIMEOUT_S, socket_timeout=jobs.REDIS_COMMAND_TIMEOUT_S
    )
    redis.job_serializer = jobs.serialize
    redis.job_deserializer = jobs.deserialize
    redis.default_queue_name = queue
    return redis


async def enqueue_outcome(
    redis: ArqRedis, outcome: jobs.TrainOutcome | jobs.GenerateOutcome, source_job_id: str
) -> None:
    """Put ``outcome`` on the bot's queue as the one delivery of the arq job ``source_job_id``: whoever
    sends it (its worker, or the bot's run supervisor for a lost one) and however often, the bot gets
    one delivery job per attempt."""
    await redis.enqueue_job(
        jobs.DELIVER_JOB,
        outcome.model_dump(mode="json"),
        _job_id=jobs.deliver_job_id(source_job_id),
        _queue_name=jobs.BOT_QUEUE,
    )


class Backoff:
    """The pauses between attempts to reach Redis: from :data:`RECONNECT_MIN_S`, doubling up to
    :data:`RECONNECT_MAX_S`. After a connection that lasted longer than the longest pause (a new
    outage, not the same one going on) the pauses start short again."""

    def __init__(self) -> None:
        self._delay = RECONNECT_MIN_S
        self._connected_at: float | None = None

    def connecting(self) -> None:
        """A connection is being made now."""
        self._connected_at = time.monotonic()

    def pause(self) -> float:
        """Seconds to wait before the next attempt, the last one having failed."""
        if self._connected_at is not None and time.monotonic() - self._connected_at > RECONNECT_MAX_S:
            self._delay = RECONNECT_MIN_S
        delay = self._delay
        self._delay = min(delay * 2, RECONNECT_MAX_S)
        return delay


async def serve_through_outages(build: Callable[[], Worker], log: logging.Logger, name: str) -> None:
    """Run arq workers made by ``build`` until cancelled (or, in burst mode, until the queue is empty),
    through Redis outages.

    arq's worker stops at the first Redis error. The jobs in hand ride the outage out by themselves,
    so they are awaited, then a new worker connects: retried with a growing pause until Redis answers.
    ``name`` says which queue on the log line of each outage.
    """
    backoff = Backoff()
    while True:
        worker = build()
        backoff.connecting()
        try:
            await worker.async_run()
        except REDIS_DOWN as exc:
            pause = backoff.pause()
            log.warning("%s: Redis unreachable (%s); reconnecting in %.1f s", name, exc, pause)
            try:
                # arq's close() cancels the jobs it holds: let the jobs in hand finish first.
                await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
            finally:
                await close_quietly(worker)
            await asyncio.sleep(pause)
            continue
        except BaseException:
            await close_quietly(worker)
            raise
        await worker.close()
        return


async def close_quietly(worker: Worker) -> None:
    """Close ``worker``'s connections; a Redis that is down has nothing left to close."""
    with contextlib.suppress(*REDIS_DOWN):
        await worker.close()
