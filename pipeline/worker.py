"""The GPU worker: arq workers for the train and generate queues, models loaded once.

Job functions are thin: validate the payload, skip work a previous attempt already finished (the
done marker in the blob store), run the blocking stage in a thread while the event loop stays free
for progress, cancel and timeout, then send the outcome to the bot's queue as a job.

A stage runner (see :class:`StageRunner`) does the GPU work; ``on_startup`` builds the real one
(:mod:`pipeline.runner`) unless the caller put one in ``ctx`` already (tests about the queue do).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import Any, Protocol

from arq.connections import ArqRedis, RedisSettings
from arq.worker import Worker, func
from pydantic import ValidationError

from pipeline import jobs
from pipeline.config import WorkerSettings
from pipeline.control import StageCancelled, StageControl
from storage.blobs import BlobStore

__all__ = ["StageCancelled", "StageControl", "StageRunner", "run_worker"]

log = logging.getLogger("facechain.worker")

#: Seconds between two cancel-flag polls while a stage runs.
CANCEL_POLL_S = 0.5
#: Seconds between two published progress notes of one run (the last one of a stage always goes).
PROGRESS_INTERVAL_S = 1.0


class StageRunner(Protocol):
    """The GPU stages, blocking; called from a worker thread, one job at a time per queue."""

    def train(self, request: jobs.TrainRequest, control: StageControl) -> jobs.TrainOutcome: ...

    def generate(self, request: jobs.GenerateRequest, control: StageControl) -> jobs.GenerateOutcome: ...


# ------------------------------------------------------------------------------------------ jobs
async def train_face_model(ctx: dict[str, Any], payload: Any) -> str:
    """arq job: train a face LoRA. Returns the outcome's error code or "ok" (for arq's result log)."""
    return await _run_job(ctx, payload, "train")


async def generate_portraits(ctx: dict[str, Any], payload: Any) -> str:
    """arq job: generate portraits. Returns the outcome's error code or "ok"."""
    return await _run_job(ctx, payload, "generate")


async def _run_job(ctx: dict[str, Any], payload: Any, kind: str) -> str:
    settings: WorkerSettings = ctx["settings"]
    blobs: BlobStore = ctx["blobs"]
    try:
        request = jobs.parse_request(payload)
        if request.kind != kind:
            raise ValueError(f"a {request.kind} payload arrived on the {kind} job")
    except (ValidationError, ValueError) as exc:
        run_id = jobs.salvage_run_id(payload)
        log.warning("refused a malformed %s job (run %s): %s", kind, run_id, str(exc)[:300])
        if run_id is None:
            return jobs.ErrorCode.BAD_PAYLOAD.value
        bad = _failed_outcome(kind, run_id, jobs.ErrorCode.BAD_PAYLOAD, "The job was malformed.")
        await _send_outcome(ctx, bad)
        return bad.error.value if bad.error else "ok"

    # A finished earlier attempt left its outcome behind: deliver that instead of working again.
    done_key = jobs.outcome_key(request.run_id)
    if await asyncio.to_thread(blobs.exists, done_key):
        previous = jobs.parse_outcome_json(await asyncio.to_thread(blobs.get_bytes, done_key))
        log.info("run %s already finished; re-sending its outcome", request.run_id)
        await _send_outcome(ctx, previous)
        return previous.error.value if previous.error else "ok"

    redis: ArqRedis = ctx["redis"]
    if await redis.exists(jobs.cancel_key(request.run_id)):
        outcome = _failed_outcome(kind, request.run_id, jobs.ErrorCode.CANCELLED, "Cancelled before it started.")
    else:
        timeout = settings.train_timeout_s if kind == "train" else settings.generate_timeout_s
        outcome = await _run_stage(ctx, request, timeout)

    if outcome.error is not jobs.ErrorCode.CANCELLED:
        # The done marker is written after every output, so its presence means "all there".
        await asyncio.to_thread(blobs.put_bytes, done_key, outcome.model_dump_json().encode())
    await _send_outcome(ctx, outcome)
    return outcome.error.value if outcome.error else "ok"


async def _run_stage(
    ctx: dict[str, Any], request: jobs.TrainRequest | jobs.GenerateRequest, timeout_s: float
) -> jobs.TrainOutcome | jobs.GenerateOutcome:
    """Run the blocking stage in a thread; poll cancel; enforce the timeout by stopping the stage."""
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
    reason: jobs.ErrorCode | None = None
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=CANCEL_POLL_S)
            if task.done():
                break
            if time.monotonic() - started > timeout_s:
                reason = jobs.ErrorCode.TIMEOUT
            elif await redis.exists(jobs.cancel_key(request.run_id)):
                reason = jobs.ErrorCode.CANCELLED
            if reason is not None:
                stop.set()
                # Wait for the stage to notice, so the GPU is free before the next job starts.
                await asyncio.wait({task})
                break
    except asyncio.CancelledError:
        # arq's own job timeout or a worker shutdown: stop the thread too, then let arq see it.
        stop.set()
        with contextlib.suppress(BaseException):
            await asyncio.shield(task)
        raise

    kind = request.kind
    try:
        outcome = task.result()
    except StageCancelled:
        code = reason or jobs.ErrorCode.CANCELLED
        return _failed_outcome(kind, request.run_id, code, _STOP_MESSAGES[code])
    except Exception:
        log.exception("run %s failed", request.run_id)
        return _failed_outcome(kind, request.run_id, jobs.ErrorCode.INTERNAL, "Something went wrong.")
    if reason is not None and outcome.error is None:
        # The stage finished in the same instant it was told to stop: honour the result.
        log.info("run %s finished while being stopped (%s); keeping its result", request.run_id, reason)
    return outcome


_STOP_MESSAGES = {
    jobs.ErrorCode.CANCELLED: "Cancelled.",
    jobs.ErrorCode.TIMEOUT: "It took too long and was stopped.",
}


def _failed_outcome(
    kind: str, run_id: str, code: jobs.ErrorCode, message: str
) -> jobs.TrainOutcome | jobs.GenerateOutcome:
    if kind == "train":
        return jobs.TrainOutcome(run_id=run_id, error=code, message=message)
    return jobs.GenerateOutcome(run_id=run_id, error=code, message=message)


async def _send_outcome(ctx: dict[str, Any], outcome: jobs.TrainOutcome | jobs.GenerateOutcome) -> None:
    """Enqueue the outcome on the bot's queue.

    Its job id follows the arq job that produced it, so a re-execution of the same job sends it once,
    while a different job naming the same run (a retry, or a malformed one) cannot block it.
    """
    redis: ArqRedis = ctx["redis"]
    source = ctx.get("job_id") or outcome.run_id
    await redis.enqueue_job(
        jobs.DELIVER_JOB,
        outcome.model_dump(mode="json"),
        _job_id=f"deliver.{source}",
        _queue_name=jobs.BOT_QUEUE,
    )


class _ProgressReporter:
    """Publishes progress from the stage's thread, at most once a second per run (lossy by design)."""

    def __init__(self, redis: ArqRedis, run_id: str, loop: asyncio.AbstractEventLoop) -> None:
        self._redis = redis
        self._run_id = run_id
        self._loop = loop
        self._last_sent = 0.0
        self._last_stage: jobs.Stage | None = None

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
            asyncio.run_coroutine_threadsafe(self._publish(note), self._loop)

    async def _publish(self, note: jobs.Progress) -> None:
        await self._redis.publish(jobs.PROGRESS_CHANNEL, note.model_dump_json())


# --------------------------------------------------------------------------------------- startup
def build_runner(settings: WorkerSettings, blobs: BlobStore) -> StageRunner:
    """The real GPU stages (imported lazily: torch loads only in a worker that runs them)."""
    from pipeline.runner import PipelineRunner

    runner: StageRunner = PipelineRunner(settings, blobs)
    return runner


async def on_startup(ctx: dict[str, Any]) -> None:
    settings: WorkerSettings = ctx["settings"]
    ctx.setdefault("blobs", BlobStore(settings.blob_dir))
    if "runner" not in ctx:
        started = time.monotonic()
        ctx["runner"] = await asyncio.to_thread(build_runner, settings, ctx["blobs"])
        log.info("models loaded in %.1f s", time.monotonic() - started)


def redis_settings(url: str) -> RedisSettings:
    return RedisSettings.from_dsn(url)


def build_workers(
    settings: WorkerSettings,
    ctx: dict[str, Any],
    *,
    burst: bool = False,
    queues: list[str] | None = None,
) -> list[Worker]:
    """One arq Worker per queue served (max_jobs=1 each), sharing the resident models of ``ctx``.

    Each worker gets its own Redis pool and a copy of ``ctx`` (arq writes its pool into ctx and
    closes the pool on close, so sharing either would let one worker break the other).
    """
    served = queues or list(settings.queues)
    workers = []
    for name in served:
        if name == "train":
            function = func(train_face_model, name=jobs.TRAIN_JOB, max_tries=3)
            queue, timeout = jobs.TRAIN_QUEUE, settings.train_timeout_s
        elif name == "generate":
            function = func(generate_portraits, name=jobs.GENERATE_JOB, max_tries=3)
            queue, timeout = jobs.GENERATE_QUEUE, settings.generate_timeout_s
        else:
            raise ValueError(f"unknown queue {name!r}: expected train or generate")
        workers.append(
            Worker(
                functions=[function],
                queue_name=queue,
                redis_settings=redis_settings(str(settings.redis_url)),
                burst=burst,
                max_jobs=1,
                # A backstop above the stage's own timeout, which reports TIMEOUT to the user.
                job_timeout=timeout + 60,
                keep_result=3600,
                handle_signals=False,
                ctx=dict(ctx),
                job_serializer=jobs.serialize,
                job_deserializer=jobs.deserialize,
                health_check_interval=30,
                health_check_key=f"facechain:health:{name}",
                poll_delay=0.2,
            )
        )
    return workers


async def run_worker(settings: WorkerSettings, *, burst: bool = False, ctx: dict[str, Any] | None = None) -> None:
    """Run the worker until cancelled (or, in burst mode, until its queues are empty).

    Models load once (``on_startup``) before any queue is read; each arq worker then opens its own
    Redis pool (speaking the contract's JSON) and puts it in its copy of ``ctx`` as ``redis``.
    """
    context: dict[str, Any] = dict(ctx or {})
    context["settings"] = settings
    await on_startup(context)
    workers = build_workers(settings, context, burst=burst)
    try:
        await asyncio.gather(*(w.async_run() for w in workers))
    finally:
        for w in workers:
            await w.close()
