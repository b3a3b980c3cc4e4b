"""The bot's side of the job queue: submit runs, tell their place in line, cancel them, report what
Redis knows of a run's job (for the run supervisor), and receive outcomes (a job on the bot's own
queue) and progress (pub/sub) from the workers.

Redis may be down at start or go away at any time: nothing here waits for it. The client connects
on first use; a call that needs Redis raises :class:`QueueUnreachable` (the conversation says "busy,
try again shortly"); reading a place in line says "unknown"; a cancel is remembered and sent when
Redis is back; the outcome consumer and the progress listener reconnect by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn, Protocol

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix
from arq.worker import Retry, Worker, func
from pydantic import ValidationError
from redis.exceptions import TimeoutError as RedisTimeout

from bot import metrics
from bot.run_keys import KEPT_CANCEL_TTL_S, delete_run_keys
from pipeline import jobs
from pipeline.arq_redis import REDIS_DOWN, Backoff, enqueue_outcome, redis_client, serve_through_outages
from pipeline.runlog import run_context

log = logging.getLogger("facechain.queue")

OutcomeHandler = Callable[[jobs.TrainOutcome | jobs.GenerateOutcome], Awaitable[None]]
#: Called with a run id once its outcome could not be shown after every try.
GivenUpHandler = Callable[[str], Awaitable[None]]
ProgressHandler = Callable[[jobs.Progress], Awaitable[None]]

#: How long a cancel flag waits in Redis for the worker holding the run (which deletes it on sight).
CANCEL_TTL = timedelta(hours=1)
#: How long a "superseded" flag waits for a worker that was cut off from Redis to come back (only to
#: save it GPU time: an outcome it sends later is still accepted while the run is active).
SUPERSEDED_TTL = timedelta(minutes=10)
#: A quiet progress subscription is pinged after this many seconds; no answer within the command
#: timeout means Redis hangs, and the listener subscribes again as after an outage.
PROGRESS_PING_S = 5.0


class QueueUnreachable(Exception):
    """Redis cannot be reached right now: nothing was enqueued or changed."""


@dataclass(frozen=True, slots=True)
class JobState:
    """What Redis says about the current attempt of one run (see :func:`bot.supervisor.judge`)."""

    #: The attempt's arq job is stored (``arq:job:{id}``): it waits in line or runs.
    stored: bool
    #: A worker took it (arq's in-progress key), whether or not that worker is still alive.
    in_progress: bool
    #: A worker heartbeats this very attempt (:func:`pipeline.jobs.heartbeat_key`).
    heartbeat: bool
    #: Its outcome waits on the bot's queue (or is being delivered right now).
    outcome_pending: bool


class JobQueue(Protocol):
    """What the conversation service needs from the queue (a small recording class in flow tests)."""

    async def available(self) -> bool:
        """Whether the queue can take a run right now (Redis answers)."""
        ...

    async def submit(self, request: jobs.TrainRequest | jobs.GenerateRequest, attempt: int) -> int | None:
        """Enqueue a run; return its 0-based place in line (None if unknown). Raises :class:`QueueUnreachable`."""
        ...

    async def position(self, kind: str, run_id: str, attempt: int) -> int | None:
        """Place in line of a queued run, or None once a worker took it (or it is gone, or Redis is down)."""
        ...

    async def cancel(self, kind: str, run_id: str, attempt: int) -> bool:
        """Stop a run's job wherever it is. True: it was taken out of the queue before any worker had it.

        Never fails for Redis being down: the cancel is then sent when Redis is back.
        """
        ...

    async def forget(self, run_ids: Sequence[str], *, ended: bool = False) -> int:
        """Delete what the queue keeps about these runs (``/forget``); returns how many keys went.

        A run a worker still executes keeps its cancel flag unless it ``ended`` (its outcome arrived).
        """
        ...


def queue_for(kind: str) -> tuple[str, str]:
    """(queue name, job name) of a run kind."""
    if kind == "train":
        return jobs.TRAIN_QUEUE, jobs.TRAIN_JOB
    if kind == "generate":
        return jobs.GENERATE_QUEUE, jobs.GENERATE_JOB
    raise ValueError(f"unknown run kind {kind!r}")


async def create_redis(url: str) -> ArqRedis:
    """An arq client speaking the contract's JSON serialization. It connects on first use, so it is
    created even while Redis is down; each command afterwards reconnects if the connection broke."""
    return redis_client(url, jobs.BOT_QUEUE)


class ArqJobQueue:
    """:class:`JobQueue` on arq/Redis."""

    def __init__(self, redis: ArqRedis) -> None:
        self._redis = redis
        #: Cancels that could not reach Redis: (kind, run id, attempt), sent by :meth:`flush`.
        self._pending_cancels: set[tuple[str, str, int]] = set()

    async def available(self) -> bool:
        try:
            await self._redis.ping()
        except REDIS_DOWN:
            return False
        return True

    async def submit(self, request: jobs.TrainRequest | jobs.GenerateRequest, attempt: int) -> int | None:
        queue, job = queue_for(request.kind)
        job_id = jobs.arq_job_id(request.run_id, attempt)
        try:
            enqueued = await self._redis.enqueue_job(
                job, request.model_dump(mode="json"), _job_id=job_id, _queue_name=queue
            )
        except REDIS_DOWN as exc:
            raise QueueUnreachable(str(exc)) from exc
        if enqueued is None:
            log.info("job %s was already queued", job_id)
        else:
            metrics.RUNS_SUBMITTED.labels(request.kind).inc()
        return await self.position(request.kind, request.run_id, attempt)

    async def position(self, kind: str, run_id: str, attempt: int) -> int | None:
        queue, _ = queue_for(kind)
        try:
            rank = await self._redis.zrank(queue, jobs.arq_job_id(run_id, attempt))
        except REDIS_DOWN:
            return None
        return None if rank is None else int(rank)

    async def cancel(self, kind: str, run_id: str, attempt: int) -> bool:
        try:
            return await self._cancel(kind, run_id, attempt)
        except REDIS_DOWN as exc:
            log.warning("cancel of run %s not sent yet (Redis unreachable: %s); sent when it is back", run_id, exc)
            self._pending_cancels.add((kind, run_id, attempt))
            return False

    async def _cancel(self, kind: str, run_id: str, attempt: int) -> bool:
        queue, _ = queue_for(kind)
        job_id = jobs.arq_job_id(run_id, attempt)
        # The flag first: a worker that takes the job between these calls still sees it.
        await self._redis.set(jobs.cancel_key(run_id), b"1", ex=CANCEL_TTL)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.exists(in_progress_key_prefix + job_id)
            pipe.zrem(queue, job_id)
            pipe.delete(job_key_prefix + job_id)
            in_progress, removed, _ = await pipe.execute()
        if not in_progress:
            # No worker holds it and none ever will (the job is gone): the flag has nobody to tell.
            await self._redis.delete(jobs.cancel_key(run_id))
        else:
            # A live worker sees it within a second; one that took the job id but not yet its data
            # (deleted above) finds the job gone and never reads the flag: it must not outlive that.
            await self._redis.expire(jobs.cancel_key(run_id), KEPT_CANCEL_TTL_S)
        return bool(removed) and not in_progress

    async def abandon(self, kind: str, run_id: str, attempt: int, *, superseded: bool) -> None:
        """Take an attempt's job out of the queue for good (its run restarts or fails). ``superseded``: a
        worker may still hold it, cut off from Redis; tell it to stop quietly. Raises :class:`QueueUnreachable`."""
        queue, _ = queue_for(kind)
        job_id = jobs.arq_job_id(run_id, attempt)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                if superseded:
                    pipe.set(jobs.superseded_key(job_id), b"1", ex=SUPERSEDED_TTL)
                pipe.zrem(queue, job_id)
                # Without its job, arq never runs this id again, even once its in-progress key expires.
                pipe.delete(job_key_prefix + job_id)
                await pipe.execute()
        except REDIS_DOWN as exc:
            raise QueueUnreachable(str(exc)) from exc

    async def report(self, outcome: jobs.TrainOutcome | jobs.GenerateOutcome, attempt: int) -> None:
        """Put an outcome on the bot's queue as the attempt's worker would have (the run supervisor
        speaks for a lost worker): delivered, with retries, like any other. Raises :class:`QueueUnreachable`."""
        try:
            await enqueue_outcome(self._redis, outcome, jobs.arq_job_id(outcome.run_id, attempt))
        except REDIS_DOWN as exc:
            raise QueueUnreachable(str(exc)) from exc

    async def observe(self, runs: Sequence[tuple[str, int]]) -> dict[str, JobState]:
        """What Redis knows of each (run id, attempt): one round trip. Raises :class:`QueueUnreachable`."""
        if not runs:
            return {}
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for run_id, attempt in runs:
                    job_id = jobs.arq_job_id(run_id, attempt)
                    deliver_id = jobs.deliver_job_id(job_id)
                    pipe.exists(job_key_prefix + job_id)
                    pipe.exists(in_progress_key_prefix + job_id)
                    pipe.get(jobs.heartbeat_key(run_id))
                    pipe.exists(job_key_prefix + deliver_id, in_progress_key_prefix + deliver_id)
                replies = await pipe.execute()
        except REDIS_DOWN as exc:
            raise QueueUnreachable(str(exc)) from exc
        states: dict[str, JobState] = {}
        for index, (run_id, attempt) in enumerate(runs):
            stored, in_progress, beat, delivering = replies[4 * index : 4 * index + 4]
            states[run_id] = JobState(
                stored=bool(stored),
                in_progress=bool(in_progress),
                heartbeat=beat is not None and beat.decode() == jobs.arq_job_id(run_id, attempt),
                outcome_pending=bool(delivering),
            )
        return states

    async def served_queues(self) -> set[str]:
        """The kinds (``train``, ``generate``) some worker serves now: its health key is fresh (a worker
        refreshes it every 30 s while its event loop runs). Raises :class:`QueueUnreachable`."""
        kinds = ("train", "generate")
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for kind in kinds:
                    pipe.exists(jobs.worker_health_key(kind))
                found = await pipe.execute()
        except REDIS_DOWN as exc:
            raise QueueUnreachable(str(exc)) from exc
        return {kind for kind, exists in zip(kinds, found, strict=True) if exists}

    async def flush(self) -> None:
        """Send the cancels that found Redis down. Raises :class:`QueueUnreachable` while it still is."""
        for kind, run_id, attempt in sorted(self._pending_cancels):
            try:
                await self._cancel(kind, run_id, attempt)
            except REDIS_DOWN as exc:
                raise QueueUnreachable(str(exc)) from exc
            self._pending_cancels.discard((kind, run_id, attempt))
            log.info("cancel of run %s sent", run_id)

    async def forget(self, run_ids: Sequence[str], *, ended: bool = False) -> int:
        return await delete_run_keys(self._redis, run_ids, ended=ended)


# ------------------------------------------------------------------------------------ outcomes
#: Tries to show one outcome before giving up: with :func:`delivery_retry_delay`, about half an hour
#: of a chat platform being unreachable (or erring) is ridden out.
DELIVERY_TRIES = 36
#: Seconds one try may take: a send that waits out Telegram's flood control (up to 120 s a wait) fits;
#: a try that takes longer is cut and tried again later, like any failed one (arq's own job timeout,
#: a little longer, would end the job for good).
DELIVERY_TRY_S = 300.0


def delivery_retry_delay(tries: int) -> int:
    """Seconds before the next try to show an outcome, after ``tries`` failed ones (5, 10, ... then 60)."""
    return min(5 * tries, 60)


async def _deliver_outcome(ctx: dict[str, Any], payload: Any) -> str:
    """arq job on the bot's queue: hand a worker's outcome to the service."""
    try:
        outcome = jobs.parse_outcome(payload)
    except ValidationError as exc:
        log.warning("dropped a malformed outcome: %s", str(exc)[:300])
        return "malformed"
    handler: OutcomeHandler = ctx["on_outcome"]
    with run_context(outcome.run_id):
        try:
            async with asyncio.timeout(DELIVERY_TRY_S):
                await handler(outcome)
        except Exception as exc:
            # The result is recorded but the user has not seen it (the platform was down, say):
            # arq runs the job again later, and the service sends it then.
            tries = int(ctx.get("job_try", 1))
            why = str(exc) or type(exc).__name__
            if tries >= DELIVERY_TRIES:
                log.error("delivering run %s failed %d times; giving up: %s", outcome.run_id, tries, why)
                given_up: GivenUpHandler | None = ctx.get("on_given_up")
                if given_up is not None:
                    await given_up(outcome.run_id)
                return "undelivered"
            log.warning("delivering run %s failed (try %d of %d): %s", outcome.run_id, tries, DELIVERY_TRIES, why)
            metrics.DELIVERY_RETRIES.labels(outcome.kind).inc()
            raise Retry(defer=delivery_retry_delay(tries)) from exc
        log.info("%s outcome handled: %s", outcome.kind, outcome.error.value if outcome.error else "ok")
    metrics.outcome_delivered(outcome)
    return "ok"


def build_outcome_worker(
    redis_url: str, on_outcome: OutcomeHandler, *, on_given_up: GivenUpHandler | None = None, burst: bool = False
) -> Worker:
    """An arq worker, run inside the bot process, that consumes outcomes from the bot's queue.

    Outcomes are durable jobs: a bot that was down when a portrait finished delivers it on restart.
    Delivery may run twice (arq runs jobs at least once); the service ignores a run already finished.
    No result is kept once delivered: it would hold the run's ids and keys in Redis for nothing.
    """
    return Worker(
        functions=[func(_deliver_outcome, name=jobs.DELIVER_JOB, max_tries=DELIVERY_TRIES)],
        queue_name=jobs.BOT_QUEUE,
        # A pool of our own (arq's settings have no command timeout); no connection retries inside
        # arq: serve_outcomes reconnects, for as long as it takes.
        redis_pool=redis_client(redis_url, jobs.BOT_QUEUE),
        burst=burst,
        max_jobs=20,
        job_timeout=DELIVERY_TRY_S + 30,
        keep_result=0,
        handle_signals=False,
        ctx={"on_outcome": on_outcome, "on_given_up": on_given_up},
        job_serializer=jobs.serialize,
        job_deserializer=jobs.deserialize,
        poll_delay=0.2,
    )


async def serve_outcomes(redis_url: str, on_outcome: OutcomeHandler, on_given_up: GivenUpHandler) -> None:
    """Consume outcomes until cancelled, through Redis outages: arq's worker stops at the first Redis
    error, so the deliveries in hand are finished, then a new worker connects once Redis answers."""
    build = functools.partial(build_outcome_worker, redis_url, on_outcome, on_given_up=on_given_up)
    await serve_through_outages(build, log, "outcomes")


# ------------------------------------------------------------------------------------ progress
async def listen_progress(redis: ArqRedis, on_progress: ProgressHandler) -> None:
    """Forward progress notes until cancelled, resubscribing when Redis comes back after an outage.

    Lossy: notes published while the bot is down or cut off from Redis are gone.
    """
    backoff = Backoff()
    while True:
        backoff.connecting()
        try:
            await _forward_progress(redis, on_progress)
        except REDIS_DOWN as exc:
            pause = backoff.pause()
            log.warning("progress: Redis unreachable (%s); resubscribing in %.1f s", exc, pause)
            await asyncio.sleep(pause)


async def _forward_progress(redis: ArqRedis, on_progress: ProgressHandler) -> NoReturn:
    pubsub = redis.pubsub()
    loop = asyncio.get_running_loop()
    try:
        await pubsub.subscribe(jobs.PROGRESS_CHANNEL)
        # Waiting for a note is no command: it is read in short slices (a longer read would trip the
        # client's command timeout), and a quiet subscription is pinged to tell a hung Redis from a
        # quiet one.
        heard, pinged = loop.time(), False
        while True:
            message = await pubsub.get_message(timeout=1.0)
            now = loop.time()
            if message is None:
                if now - heard > PROGRESS_PING_S + jobs.REDIS_COMMAND_TIMEOUT_S:
                    raise RedisTimeout("no answer to a ping on the progress subscription")
                if now - heard > PROGRESS_PING_S and not pinged:
                    await pubsub.ping()
                    pinged = True
                continue
            heard, pinged = now, False
            if message.get("type") != "message":
                continue
            try:
                note = jobs.Progress.model_validate_json(message["data"])
            except ValidationError:
                log.debug("ignored a malformed progress note")
                continue
            try:
                with run_context(note.run_id):
                    await on_progress(note)
            except Exception:
                log.exception("progress handler failed for run %s", note.run_id)
    finally:
        with contextlib.suppress(Exception):
            await pubsub.aclose()  # type: ignore[no-untyped-call]
