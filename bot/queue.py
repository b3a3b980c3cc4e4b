"""The bot's side of the job queue: submit runs, tell their place in line, cancel them, and receive
outcomes (a job on the bot's own queue) and progress (pub/sub) from the workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Protocol

from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.worker import Retry, Worker, func
from pydantic import ValidationError

from pipeline import jobs

log = logging.getLogger("facechain.queue")

OutcomeHandler = Callable[[jobs.TrainOutcome | jobs.GenerateOutcome], Awaitable[None]]
ProgressHandler = Callable[[jobs.Progress], Awaitable[None]]

#: How long a cancel flag stays in Redis (a worker that picks the job up later still sees it).
CANCEL_TTL = timedelta(days=2)


class JobQueue(Protocol):
    """What the conversation service needs from the queue (a small recording class in flow tests)."""

    async def submit(self, request: jobs.TrainRequest | jobs.GenerateRequest, attempt: int) -> int | None:
        """Enqueue a run; return its 0-based place in line (None if unknown)."""
        ...

    async def position(self, kind: str, run_id: str, attempt: int) -> int | None:
        """Place in line of a queued run, or None once a worker took it (or it is gone)."""
        ...

    async def cancel(self, kind: str, run_id: str, attempt: int) -> bool:
        """Stop a run. True: it was still queued and is now removed; False: a worker was told to stop."""
        ...


def queue_for(kind: str) -> tuple[str, str]:
    """(queue name, job name) of a run kind."""
    if kind == "train":
        return jobs.TRAIN_QUEUE, jobs.TRAIN_JOB
    if kind == "generate":
        return jobs.GENERATE_QUEUE, jobs.GENERATE_JOB
    raise ValueError(f"unknown run kind {kind!r}")


async def create_redis(url: str) -> ArqRedis:
    """An arq pool speaking the contract's JSON serialization."""
    return await create_pool(
        RedisSettings.from_dsn(url), job_serializer=jobs.serialize, job_deserializer=jobs.deserialize
    )


class ArqJobQueue:
    """:class:`JobQueue` on arq/Redis."""

    def __init__(self, redis: ArqRedis) -> None:
        self._redis = redis

    async def submit(self, request: jobs.TrainRequest | jobs.GenerateRequest, attempt: int) -> int | None:
        queue, job = queue_for(request.kind)
        job_id = jobs.arq_job_id(request.run_id, attempt)
        enqueued = await self._redis.enqueue_job(
            job, request.model_dump(mode="json"), _job_id=job_id, _queue_name=queue
        )
        if enqueued is None:
            log.info("job %s was already queued", job_id)
        return await self.position(request.kind, request.run_id, attempt)

    async def position(self, kind: str, run_id: str, attempt: int) -> int | None:
        queue, _ = queue_for(kind)
        rank = await self._redis.zrank(queue, jobs.arq_job_id(run_id, attempt))
        return None if rank is None else int(rank)

    async def cancel(self, kind: str, run_id: str, attempt: int) -> bool:
        queue, _ = queue_for(kind)
        # The flag first: a worker that takes the job between the two calls still sees it.
        await self._redis.set(jobs.cancel_key(run_id), b"1", ex=CANCEL_TTL)
        removed = await self._redis.zrem(queue, jobs.arq_job_id(run_id, attempt))
        return bool(removed)


async def _deliver_outcome(ctx: dict[str, Any], payload: Any) -> str:
    """arq job on the bot's queue: hand a worker's outcome to the service."""
    try:
        outcome = jobs.parse_outcome(payload)
    except ValidationError as exc:
        log.warning("dropped a malformed outcome: %s", str(exc)[:300])
        return "malformed"
    handler: OutcomeHandler = ctx["on_outcome"]
    try:
        await handler(outcome)
    except Exception as exc:
        # The result is recorded but the user has not seen it (the platform was down, say):
        # arq runs the job again later, and the service sends it then.
        tries = int(ctx.get("job_try", 1))
        log.warning("delivering run %s failed (try %d): %s", outcome.run_id, tries, exc)
        raise Retry(defer=min(5 * tries, 60)) from exc
    return "ok"


def build_outcome_worker(redis_url: str, on_outcome: OutcomeHandler, *, burst: bool = False) -> Worker:
    """An arq worker, run inside the bot process, that consumes outcomes from the bot's queue.

    Outcomes are durable jobs: a bot that was down when a portrait finished delivers it on restart.
    Delivery may run twice (arq runs jobs at least once); the service ignores a run already finished.
    """
    return Worker(
        functions=[func(_deliver_outcome, name=jobs.DELIVER_JOB, max_tries=8)],
        queue_name=jobs.BOT_QUEUE,
        redis_settings=RedisSettings.from_dsn(redis_url),
        burst=burst,
        max_jobs=20,
        job_timeout=120,
        keep_result=600,
        handle_signals=False,
        ctx={"on_outcome": on_outcome},
        job_serializer=jobs.serialize,
        job_deserializer=jobs.deserialize,
        poll_delay=0.2,
    )


async def listen_progress(redis: ArqRedis, on_progress: ProgressHandler) -> None:
    """Forward progress notes until cancelled. Lossy: notes published while the bot is down are gone."""
    pubsub = redis.pubsub()
    await pubsub.subscribe(jobs.PROGRESS_CHANNEL)
    try:
        async for message in pubsub.listen():
            if message.get("type") != "message":
                continue
            try:
                note = jobs.Progress.model_validate_json(message["data"])
            except ValidationError:
                log.debug("ignored a malformed progress note")
                continue
            try:
                await on_progress(note)
            except Exception:
                log.exception("progress handler failed for run %s", note.run_id)
    finally:
        with contextlib.suppress(Exception):
            await pubsub.unsubscribe(jobs.PROGRESS_CHANNEL)
            await pubsub.aclose()  # type: ignore[no-untyped-call]


async def run_outcome_worker(worker: Worker) -> None:
    """Run the outcome worker until cancelled, closing its connections after."""
    try:
        await worker.async_run()
    except asyncio.CancelledError:
        raise
    finally:
        await worker.close()
