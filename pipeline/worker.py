"""The GPU worker: arq workers for the train and generate queues, models loaded once.

Job functions are thin: validate the payload, skip work a previous attempt already finished (the
done marker in the blob store), run the blocking stage in a thread while the event loop stays free
for progress, cancel and timeout, then send the outcome to the bot's queue as a job.

A stage runner (see :class:`StageRunner`) does the GPU work; ``on_startup`` builds the real one
(:mod:`pipeline.runner`) unless the caller put one in ``ctx`` already (tests about the queue do).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from dataclasses import replace
from enum import Enum
from typing import Any, Protocol

from arq.connections import ArqRedis, RedisSettings
from arq.worker import Worker, func
from pydantic import ValidationError

from pipeline import jobs, worker_metrics
from pipeline.aio import cancel_all
from pipeline.arq_redis import REDIS_DOWN, Backoff, enqueue_outcome, redis_client, serve_through_outages
from pipeline.background import STOP_WAIT_S
from pipeline.config import WorkerSettings
from pipeline.control import StageCancelled, StageControl
from pipeline.runlog import run_context
from storage.blob_config import open_blob_store
from storage.blobs import BlobStore

__all__ = ["StageCancelled", "StageControl", "StageRunner", "WorkerWedged", "run_worker"]

log = logging.getLogger("facechain.worker")

#: Seconds between two cancel-flag polls while a stage runs.
CANCEL_POLL_S = 0.5
#: Seconds between two published progress notes of one run (the last one of a stage always goes).
PROGRESS_INTERVAL_S = 1.0
#: Seconds a stage has to return once told to stop (timeout, cancel). One that does not is stuck in a
#: call that never checks (a hung GPU, a read without a timeout): its run fails, and the worker exits
#: to be restarted, since the thread holding the GPU can't be killed.
STAGE_STOP_GRACE_S = 60.0


class WorkerWedged(Exception):
    """A stage did not stop when told to: the worker process must exit to be restarted."""


class _Wedge:
    """Shared by a worker's queues: which stage is stuck, and the moment to stop serving."""

    def __init__(self) -> None:
        self.stage: str | None = None
        self.now = asyncio.Event()


class StageRunner(Protocol):
    """The GPU stages, blocking; called from a worker thread, one job at a time per queue."""

    def train(self, request: jobs.TrainRequest, control: StageControl) -> jobs.TrainOutcome: ...

    def generate(self, request: jobs.GenerateRequest, control: StageControl) -> jobs.GenerateOutcome: ...

    def close(self, wait_s: float) -> list[str]:
        """Stop the work it does beside the jobs, waiting up to ``wait_s``: the names of what still runs."""
        ...


# ------------------------------------------------------------------------------------------ jobs
async def train_face_model(ctx: dict[str, Any], payload: Any) -> str:
    """arq job: train a face LoRA. Returns the outcome's error code or "ok" (for arq's result log)."""
    with run_context(jobs.salvage_run_id(payload)):
        return await _run_job(ctx, payload, "train")


async def generate_portraits(ctx: dict[str, Any], payload: Any) -> str:
    """arq job: generate portraits. Returns the outcome's error code or "ok"."""
    with run_context(jobs.salvage_run_id(payload)):
        return await _run_job(ctx, payload, "generate")


async def _run_job(ctx: dict[str, Any], payload: Any, kind: str) -> str:
    settings: WorkerSettings = ctx["settings"]
    try:
        request = jobs.parse_request(payload)
        if request.kind != kind:
            raise ValueError(f"a {request.kind} payload arrived on the {kind} job")
    except (ValidationError, ValueError) as exc:
        run_id = jobs.salvage_run_id(payload)
        log.warning("refused a malformed %s job (run %s): %s", kind, run_id, str(exc)[:300])
        worker_metrics.JOB_FAILURES.labels(kind, jobs.ErrorCode.BAD_PAYLOAD.value).inc()
        if run_id is None:
            return jobs.ErrorCode.BAD_PAYLOAD.value
        bad = jobs.failed_outcome(kind, run_id, jobs.ErrorCode.BAD_PAYLOAD, "The job was malformed.")
        await _send_outcome(ctx, bad)
        return bad.error.value if bad.error else "ok"

    job_id = str(ctx.get("job_id") or jobs.arq_job_id(request.run_id, 1))
    # The heartbeat tells the bot's run supervisor that this attempt is in good hands, until its
    # outcome is on the bot's queue (sending it waits out a Redis outage, still heartbeating).
    async with _Heartbeat(ctx["redis"], request.run_id, job_id, settings.heartbeat_ttl_s):
        outcome = await _attempt(ctx, request, job_id)
        if outcome is None:
            log.info("run %s: attempt %s was superseded by a newer one; it reports nothing", request.run_id, job_id)
            return "superseded"
        await _send_outcome(ctx, outcome)
    wedge: _Wedge | None = ctx.get("wedge")
    if wedge is not None and wedge.stage is not None:
        wedge.now.set()  # its outcome is out: the worker may stop now
    return outcome.error.value if outcome.error else "ok"


async def _attempt(
    ctx: dict[str, Any], request: jobs.TrainRequest | jobs.GenerateRequest, job_id: str
) -> jobs.TrainOutcome | jobs.GenerateOutcome | None:
    """One attempt of a run: its outcome, or None when the bot gave this attempt up for a newer one."""
    settings: WorkerSettings = ctx["settings"]
    blobs: BlobStore = ctx["blobs"]
    redis: ArqRedis = ctx["redis"]
    kind = request.kind

    # A finished earlier attempt left its outcome behind: deliver that instead of working again.
    done_key = jobs.outcome_key(request.run_id)
    if await asyncio.to_thread(blobs.exists, done_key):
        previous = jobs.parse_outcome_json(await asyncio.to_thread(blobs.get_bytes, done_key))
        log.info("run %s already finished; re-sending its outcome", request.run_id)
        worker_metrics.JOBS_RESENT.labels(kind).inc()
        return previous

    if await _flag_set(redis, jobs.cancel_key(request.run_id)):
        await _clear_flag(redis, jobs.cancel_key(request.run_id))
        worker_metrics.JOB_FAILURES.labels(kind, jobs.ErrorCode.CANCELLED.value).inc()
        return jobs.failed_outcome(kind, request.run_id, jobs.ErrorCode.CANCELLED, "Cancelled before it started.")

    log.info("%s job started (attempt %s)", kind, job_id)
    started = time.monotonic()
    # No done marker: an earlier attempt (killed mid-stage) may have left partial outputs and temp
    # files under the run's key. Start from an empty folder so nothing of it can be picked up.
    stale = await asyncio.to_thread(blobs.delete_prefix, jobs.run_prefix(request.run_id))
    if stale:
        log.info("run %s: removed %d file(s) an interrupted attempt left", request.run_id, stale)
    timeout = settings.train_timeout_s if kind == "train" else settings.generate_timeout_s
    with worker_metrics.JOBS_RUNNING.labels(kind).track_inprogress():
        outcome = await _run_stage(ctx, request, job_id, timeout)
    if outcome is None:
        return None
    seconds = time.monotonic() - started
    worker_metrics.job_finished(kind, outcome.error, seconds)
    log.info("%s job ended: %s in %.1f s", kind, outcome.error.value if outcome.error else "ok", seconds)
    if outcome.error is not jobs.ErrorCode.CANCELLED:
        # The done marker is written after every output, so its presence means "all there".
        await asyncio.to_thread(blobs.put_bytes, done_key, outcome.model_dump_json().encode())
    return outcome


class _Stop(Enum):
    """Why the event loop told a running stage to stop."""

    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    SUPERSEDED = "superseded"


async def _run_stage(
    ctx: dict[str, Any], request: jobs.TrainRequest | jobs.GenerateRequest, job_id: str, timeout_s: float
) -> jobs.TrainOutcome | jobs.GenerateOutcome | None:
    """Run the blocking stage in a thread; poll cancel; enforce the timeout by stopping the stage.

    None: the bot superseded this attempt (it lost track of it and started another one).
    """
    runner: StageRunner = ctx["runner"]
    redis: ArqRedis = ctx["redis"]
    loop = asyncio.get_running_loop()
    stop = threading.Event()
    reporter = _ProgressReporter(redis, request.run_id, loop)
    control = StageControl(report=reporter.report, stop_event=stop)
    reporter.report(jobs.Stage.PREPARING, 0.0, "")

    def work() -> jobs.TrainOutcome | jobs.GenerateOutcome:
        if isinstance(request, jobs.TrainRequest):
            return runner.train(request, control)
        return runner.generate(request, control)

    started = time.monotonic()
    task = asyncio.ensure_future(asyncio.to_thread(work))
    reason: _Stop | None = None
    flags = _StopFlags(redis, request.run_id, job_id)
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=CANCEL_POLL_S)
            if task.done():
                break
            if time.monotonic() - started > timeout_s:
                reason = _Stop.TIMEOUT
            else:
                reason = await flags.poll()
            if reason is not None:
                stop.set()
                # Wait for the stage to notice, so the GPU is free before the next job starts.
                await asyncio.wait({task}, timeout=STAGE_STOP_GRACE_S)
                break
    except asyncio.CancelledError:
        # arq's own job timeout or a worker shutdown: stop the thread too, then let arq see it.
        stop.set()
        with contextlib.suppress(BaseException):
            await asyncio.wait({task}, timeout=STAGE_STOP_GRACE_S)
        if not task.done():
            _wedged(ctx, request, now=True)
        await reporter.close(0)
        raise
    await reporter.close(PROGRESS_INTERVAL_S)

    kind = request.kind
    if reason is _Stop.CANCELLED:
        await _clear_flag(redis, jobs.cancel_key(request.run_id))
    if not task.done():
        _wedged(ctx, request, now=False)
        if reason is _Stop.SUPERSEDED:
            return None
        code = jobs.ErrorCode.TIMEOUT if reason is _Stop.TIMEOUT else jobs.ErrorCode.CANCELLED
        return jobs.failed_outcome(kind, request.run_id, code, _STOP_MESSAGES[code])
    try:
        outcome = task.result()
    except StageCancelled:
        if reason is _Stop.SUPERSEDED:
            return None
        code = jobs.ErrorCode.TIMEOUT if reason is _Stop.TIMEOUT else jobs.ErrorCode.CANCELLED
        return jobs.failed_outcome(kind, request.run_id, code, _STOP_MESSAGES[code])
    except Exception:
        log.exception("run %s failed", request.run_id)
        return jobs.failed_outcome(kind, request.run_id, jobs.ErrorCode.INTERNAL, "Something went wrong.")
    if reason is not None and outcome.error is None:
        # The stage finished in the same instant it was told to stop: honour the result.
        log.info("run %s finished while being stopped (%s); keeping its result", request.run_id, reason.value)
    elif reason is _Stop.SUPERSEDED:
        return None
    return outcome


def _wedged(ctx: dict[str, Any], request: jobs.TrainRequest | jobs.GenerateRequest, *, now: bool) -> None:
    """Note a stage that did not stop within STAGE_STOP_GRACE_S; ``now``: stop serving at once (else
    once the run's outcome is sent)."""
    stage = f"the {request.kind} stage of run {request.run_id}"
    log.error("%s did not stop within %.0f s of being told to; this worker exits to be restarted", stage,
              STAGE_STOP_GRACE_S)  # fmt: skip
    wedge: _Wedge | None = ctx.get("wedge")
    if wedge is None:
        return
    wedge.stage = stage
    if now:
        wedge.now.set()


_STOP_MESSAGES = {
    jobs.ErrorCode.CANCELLED: "Cancelled.",
    jobs.ErrorCode.TIMEOUT: "It took too long and was stopped.",
}


class _StopFlags:
    """Reads the two flags that stop a running attempt: the run's cancel flag and this attempt's
    superseded flag. A Redis that is down or restarting stops nothing: the stage runs on."""

    def __init__(self, redis: ArqRedis, run_id: str, job_id: str) -> None:
        self._redis = redis
        self._keys = (jobs.cancel_key(run_id), jobs.superseded_key(job_id))
        self._run_id = run_id
        self._unreachable = False

    async def poll(self) -> _Stop | None:
        try:
            cancelled, superseded = await self._redis.mget(self._keys)
        except REDIS_DOWN as exc:
            if not self._unreachable:
                log.warning("run %s: Redis unreachable (%s); the stage runs on", self._run_id, exc)
            self._unreachable = True
            return None
        if self._unreachable:
            log.info("run %s: Redis reachable again", self._run_id)
            self._unreachable = False
        if superseded:
            return _Stop.SUPERSEDED
        return _Stop.CANCELLED if cancelled else None


async def _flag_set(redis: ArqRedis, key: str) -> bool:
    """Whether a flag key is set; False when Redis cannot say (the run goes ahead)."""
    try:
        return bool(await redis.exists(key))
    except REDIS_DOWN as exc:
        log.warning("could not read %s (%s); going ahead", key, exc)
        return False


async def _clear_flag(redis: ArqRedis, key: str) -> None:
    """A flag the worker acted on is removed (it names a run: it should not outlive its use)."""
    try:
        await redis.delete(key)
    except REDIS_DOWN:
        log.debug("could not delete %s; it expires by itself", key)


class _Heartbeat:
    """Keeps ``heartbeat_key(run_id)`` alive while a job holds the run: set at once, then refreshed from
    the event loop three times per lifetime. A Redis error skips a beat, never the job."""

    def __init__(self, redis: ArqRedis, run_id: str, job_id: str, ttl_s: float) -> None:
        self._redis = redis
        self._key = jobs.heartbeat_key(run_id)
        self._job_id = job_id
        self._ttl_ms = max(int(ttl_s * 1000), 100)
        self._interval_s = ttl_s / 3
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    async def __aenter__(self) -> _Heartbeat:
        await self._beat()
        self._task = asyncio.create_task(self._beat_forever(), name=f"heartbeat {self._job_id}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Not a single cancel(): redis-py can swallow one that lands while a beat is being sent to a hung
        # Redis, and a heartbeat that beats on keeps its job from ending. The flag ends it in any case.
        self._stopped = True
        if self._task is not None:
            await cancel_all([self._task])
        with contextlib.suppress(*REDIS_DOWN):
            # Only this attempt's own beat: a newer attempt elsewhere keeps its heartbeat.
            if await self._redis.get(self._key) == self._job_id.encode():
                await self._redis.delete(self._key)

    async def _beat(self) -> bool:
        try:
            await self._redis.set(self._key, self._job_id, px=self._ttl_ms)
        except REDIS_DOWN:
            return False
        return True

    async def _beat_forever(self) -> None:
        beating = True
        while not self._stopped:
            await asyncio.sleep(self._interval_s)
            ok = await self._beat()
            if ok != beating:
                log.info("heartbeat of %s %s", self._job_id, "resumed" if ok else "paused: Redis unreachable")
            beating = ok


async def _send_outcome(ctx: dict[str, Any], outcome: jobs.TrainOutcome | jobs.GenerateOutcome) -> None:
    """Enqueue the outcome on the bot's queue, waiting out a Redis outage (arq's job timeout bounds it).

    Its job id follows the arq job that produced it, so a re-execution of the same job sends it once,
    while a different job naming the same run (a retry, or a malformed one) cannot block it.
    """
    redis: ArqRedis = ctx["redis"]
    source = str(ctx.get("job_id") or outcome.run_id)
    backoff = Backoff()
    while True:
        try:
            await enqueue_outcome(redis, outcome, source)
            return
        except REDIS_DOWN as exc:
            log.warning("run %s: outcome not sent yet, Redis unreachable (%s); retrying", outcome.run_id, exc)
        await asyncio.sleep(backoff.pause())


class _ProgressReporter:
    """Publishes progress from the stage's thread, at most once a second per run (lossy by design)."""

    def __init__(self, redis: ArqRedis, run_id: str, loop: asyncio.AbstractEventLoop) -> None:
        self._redis = redis
        self._run_id = run_id
        self._loop = loop
        self._last_sent = 0.0
        self._last_stage: jobs.Stage | None = None
        #: Notes being published (from the stage's thread), so the job can wait for them or drop them.
        self._pending: set[concurrent.futures.Future[None]] = set()

    def report(self, stage: jobs.Stage, fraction: float, message: str) -> None:
        now = time.monotonic()
        if stage == self._last_stage and now - self._last_sent < PROGRESS_INTERVAL_S and fraction < 1.0:
            return
        self._last_sent, self._last_stage = now, stage
        note = jobs.Progress(
            run_id=self._run_id, stage=stage, fraction=min(max(fraction, 0.0), 1.0), message=message[:500]
        )
        if threading.current_thread() is threading.main_thread():
            self._loop.create_task(self._publish(note))
        else:
            sending = asyncio.run_coroutine_threadsafe(self._publish(note), self._loop)
            self._pending.add(sending)
            sending.add_done_callback(self._pending.discard)

    async def close(self, wait_s: float) -> None:
        """Give the notes still being published ``wait_s`` seconds, then drop them (lossy by design)."""
        pending = [asyncio.wrap_future(f) for f in list(self._pending)]
        if pending:
            _, late = await asyncio.wait(pending, timeout=wait_s)
            for future in late:
                future.cancel()

    async def _publish(self, note: jobs.Progress) -> None:
        try:
            await self._redis.publish(jobs.PROGRESS_CHANNEL, note.model_dump_json())
        except REDIS_DOWN:
            log.debug("progress of run %s not published: Redis unreachable", self._run_id)


# --------------------------------------------------------------------------------------- startup
def build_runner(settings: WorkerSettings, blobs: BlobStore) -> StageRunner:
    """The real GPU stages (imported lazily: torch loads only in a worker that runs them)."""
    from pipeline.runner import PipelineRunner

    runner: StageRunner = PipelineRunner(settings, blobs)
    return runner


async def on_startup(ctx: dict[str, Any]) -> None:
    settings: WorkerSettings = ctx["settings"]
    if "blobs" not in ctx:
        ctx["blobs"] = open_blob_store(settings, settings.data_dir)
    log.info("blob store: %s", ctx["blobs"].location)
    if "runner" not in ctx:
        from pipeline.stages import StagesUnavailable, check_stages

        started = time.monotonic()
        try:
            # Before anything heavy loads: a stage that must run and cannot stops the worker here.
            check_stages(settings)
            ctx["runner"] = await asyncio.to_thread(build_runner, settings, ctx["blobs"])
            worker_metrics.STARTUP_SECONDS.set(time.monotonic() - started)
        except StagesUnavailable as exc:
            for line in exc.problems:
                log.error("worker not started: %s", line)
            raise SystemExit(2) from None
        log.info("models loaded in %.1f s", time.monotonic() - started)


def redis_settings(url: str) -> RedisSettings:
    # No connection retries inside arq: ``_serve_queue`` reconnects, for as long as it takes.
    return replace(RedisSettings.from_dsn(url), conn_retries=0)


def build_worker(settings: WorkerSettings, ctx: dict[str, Any], queue_name: str, *, burst: bool = False) -> Worker:
    """The arq Worker of one queue (max_jobs=1), sharing the resident models of ``ctx``.

    Each worker gets its own Redis pool and a copy of ``ctx`` (arq writes its pool into ctx and
    closes the pool on close, so sharing either would let one worker break the other).

    A job is tried once by arq (``max_tries=1``): the bot's run supervisor owns retries, as new
    attempts with their own job ids, so a job whose worker was killed is never run again under its
    old id once arq's in-progress key expires. No result is kept: the outcome travels as a job on the
    bot's queue, and a kept result would hold the run's ids in Redis for nothing.
    """
    if queue_name == "train":
        function = func(train_face_model, name=jobs.TRAIN_JOB, max_tries=1)
        queue, timeout = jobs.TRAIN_QUEUE, settings.train_timeout_s
    elif queue_name == "generate":
        function = func(generate_portraits, name=jobs.GENERATE_JOB, max_tries=1)
        queue, timeout = jobs.GENERATE_QUEUE, settings.generate_timeout_s
    else:
        raise ValueError(f"unknown queue {queue_name!r}: expected train or generate")
    return Worker(
        functions=[function],
        queue_name=queue,
        # Its own pool, which gives up on a command that hangs: the worker stops polling as when Redis
        # is down, and ``_serve_queue`` reconnects.
        redis_pool=redis_client(str(settings.redis_url), queue),
        burst=burst,
        max_jobs=1,
        # A backstop above the stage's own timeout, which reports TIMEOUT to the user.
        job_timeout=timeout + 60,
        keep_result=0,
        handle_signals=False,
        ctx=dict(ctx),
        job_serializer=jobs.serialize,
        job_deserializer=jobs.deserialize,
        health_check_interval=30,
        health_check_key=jobs.worker_health_key(queue_name),
        poll_delay=0.2,
    )


async def _serve_queue(settings: WorkerSettings, ctx: dict[str, Any], queue_name: str, *, burst: bool) -> None:
    """Serve one queue until cancelled (or, in burst mode, until it is empty), through Redis outages.

    The job in hand rides an outage out by itself (the stage runs on; its outcome is sent once Redis
    is back): it is awaited before a new arq worker connects.
    """
    await serve_through_outages(
        lambda: build_worker(settings, ctx, queue_name, burst=burst), log, f"queue {queue_name}"
    )


async def run_worker(settings: WorkerSettings, *, burst: bool = False, ctx: dict[str, Any] | None = None) -> None:
    """Run the worker until cancelled (or, in burst mode, until its queues are empty).

    Models load once (``on_startup``) before any queue is read; each queue's arq worker then opens its
    own Redis pool (speaking the contract's JSON) and puts it in its copy of ``ctx`` as ``redis``. A
    Redis that is down at start or goes away later is waited for, never a reason to exit.
    ``/metrics`` is served throughout when FACECHAIN_WORKER_METRICS_PORT is set. On the way out, the
    stages it loaded stop their background work (``StageRunner.close``); a runner in ``ctx`` is left open.
    """
    async with worker_metrics.worker_metrics(settings.worker_metrics_port, settings.queues, str(settings.redis_url)):
        await _run_workers(settings, burst=burst, ctx=ctx)


async def _run_workers(settings: WorkerSettings, *, burst: bool, ctx: dict[str, Any] | None) -> None:
    context: dict[str, Any] = dict(ctx or {})
    context["settings"] = settings
    # A runner handed in is its owner's to close (tests share one between workers); one built here is ours.
    owns_runner = "runner" not in context
    await on_startup(context)
    worker_metrics.WORKER_READY.set(1)
    served = list(settings.queues)
    for name in served:
        if name not in ("train", "generate"):
            raise ValueError(f"unknown queue {name!r}: expected train or generate")
    wedge = context["wedge"] = _Wedge()
    tasks = [asyncio.create_task(_serve_queue(settings, context, name, burst=burst)) for name in served]
    stuck = asyncio.create_task(wedge.now.wait())
    waiting: set[asyncio.Task[Any]] = {*tasks, stuck}
    try:
        while not stuck.done() and not all(task.done() for task in tasks):
            done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            for task in done - {stuck}:
                task.result()  # a queue's failure is the worker's
    finally:
        await cancel_all([*tasks, stuck])
        if owns_runner:
            await _stop_background(context)
    if wedge.stage is not None:
        raise WorkerWedged(f"{wedge.stage} did not stop within {STAGE_STOP_GRACE_S:.0f} s of being told to")


async def _stop_background(ctx: dict[str, Any]) -> None:
    """After the last job: the runner's warm-up and compiles end, or are named as left running."""
    runner: StageRunner | None = ctx.get("runner")
    if runner is None:
        return
    closing = asyncio.ensure_future(asyncio.to_thread(runner.close, STOP_WAIT_S))
    while not closing.done():
        # A SIGTERM cancels again and again (bot.graceful); the wait is bounded by STOP_WAIT_S anyway.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(closing)
    left = closing.result()
    if left:
        log.info("still running after %.0f s: %s (the process leaves without it)", STOP_WAIT_S, ", ".join(left))
