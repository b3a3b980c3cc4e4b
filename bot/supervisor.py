"""The run supervisor: no run outlives its worker, so no user stays locked out.

Every few seconds (``FACECHAIN_RUN_CHECK_INTERVAL_S``) the bot compares the active runs in SQLite
with what Redis knows of each one's current attempt (:class:`bot.queue.JobState`): waiting in line,
held by a worker that heartbeats it, or with its outcome on the way are all fine. A run whose job is
gone (out of tries, expired, lost with Redis's data, never enqueued) or whose worker went silent (a
kill -9, a crash, a machine gone) is a suspect; one still suspect ``FACECHAIN_RUN_LOST_AFTER_S``
later is acted on (:func:`judge`):

- its done marker is in the blob store (it finished, the outcome got lost): that outcome is delivered;
- attempts are left (``FACECHAIN_RUN_MAX_ATTEMPTS``): the same request goes back in the queue as the
  next attempt, under a fresh arq job id, and the user's progress message says so;
- otherwise it fails with ``worker_lost``: the user is told, nothing is charged.

Outcomes the supervisor speaks for go through the bot's own queue like a worker's, so they are
delivered (and retried) the same way. While Redis is unreachable nothing is judged: what was seen
before the outage is forgotten, and watching starts afresh when Redis is back.

A worker's heartbeat lapses ``FACECHAIN_HEARTBEAT_TTL_S`` after it died, so a lost run is acted on
within heartbeat TTL + lost-after + one check interval (30 + 30 + 15 s by default).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from bot.queue import ArqJobQueue, JobState, QueueUnreachable
from bot.service import ConversationService
from pipeline import jobs
from storage.models import Run

log = logging.getLogger("facechain.supervisor")


# ------------------------------------------------------------------------------ the pure decision
class Health(StrEnum):
    """How a run's current attempt looks from Redis."""

    WAITING = "waiting"
    #: Waiting in line, but no worker serves its queue (none started, all stopped).
    UNSERVED = "unserved"
    RUNNING = "running"
    DELIVERING = "delivering"
    #: A worker took it but no longer heartbeats it (killed, crashed, cut off from Redis).
    SILENT = "silent"
    #: No job, no worker, no outcome on the way.
    GONE = "gone"


#: Healthy runs need nothing; the others are suspects.
HEALTHY = frozenset({Health.WAITING, Health.RUNNING, Health.DELIVERING})


class Action(StrEnum):
    KEEP = "keep"
    DELIVER_STORED = "deliver_stored"
    RESTART = "restart"
    FAIL = "fail"
    #: Waited too long with no worker serving its queue: it fails, saying so.
    FAIL_NO_WORKER = "fail_no_worker"


def health(state: JobState, served: bool = True) -> Health:
    """Classify what Redis says about one attempt; ``served``: a worker serves its queue."""
    if state.outcome_pending:
        return Health.DELIVERING
    if state.heartbeat:
        return Health.RUNNING
    if state.in_progress:
        return Health.SILENT
    if state.stored:
        return Health.WAITING if served else Health.UNSERVED
    return Health.GONE


def judge(
    seen: Health,
    *,
    suspect_for_s: float,
    lost_after_s: float,
    attempt: int,
    max_attempts: int,
    has_stored_outcome: bool,
    restartable: bool,
    no_worker_after_s: float = float("inf"),
) -> Action:
    """What to do with an active run, given how its attempt looks and for how long it has looked so.

    ``suspect_for_s``: how long, without a break and with Redis reachable, the attempt has not been
    healthy. ``restartable``: the run's request is stored, so it can be submitted again. A run waiting
    where no worker serves its queue is given ``no_worker_after_s`` (a worker may be starting).
    """
    if seen is Health.UNSERVED:
        return Action.FAIL_NO_WORKER if suspect_for_s >= no_worker_after_s else Action.KEEP
    if seen in HEALTHY or suspect_for_s < lost_after_s:
        return Action.KEEP
    if has_stored_outcome:
        return Action.DELIVER_STORED
    if restartable and attempt < max_attempts:
        return Action.RESTART
    return Action.FAIL


# ------------------------------------------------------------------------------------- the loop
@dataclass(frozen=True, slots=True)
class SupervisorSettings:
    interval_s: float = 15.0
    lost_after_s: float = 30.0
    max_attempts: int = 3
    no_worker_after_s: float = 900.0


class RunSupervisor:
    """Runs :meth:`check` periodically; the composition root (``bot.app``) starts it."""

    def __init__(
        self,
        service: ConversationService,
        queue: ArqJobQueue,
        settings: SupervisorSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._service = service
        self._queue = queue
        self._settings = settings
        self._clock = clock
        #: (run id, attempt) → when it was first seen unhealthy (this supervisor's clock).
        self._suspects: dict[tuple[str, int], float] = {}
        self._redis_down = False
        #: Cancelled runs' jobs were looked for since this supervisor started (and since the last outage).
        self._swept = False

    async def run_forever(self) -> None:
        """Check every ``interval_s`` until cancelled. A failed check is logged, never fatal."""
        while True:
            try:
                await self.check()
            except Exception:
                log.exception("run check failed")
            await asyncio.sleep(self._settings.interval_s)

    async def check(self) -> dict[str, Action]:
        """Look at every active run once; return what was done to each run acted on."""
        try:
            await self._queue.flush()
            runs = await self._service.active_runs()
            states = await self._queue.observe([(run.id, run.attempt) for run in runs])
            served = await self._queue.served_queues()
        except QueueUnreachable as exc:
            self._outage(exc)
            return {}
        if self._redis_down:
            log.info("Redis reachable again: watching %d active run(s) afresh", len(runs))
            self._redis_down = False
        if not self._swept:
            try:
                await self._cancel_left_behind()
            except QueueUnreachable as exc:
                self._outage(exc)
                return {}
        now = self._clock()
        suspects: dict[tuple[str, int], float] = {}
        acted: dict[str, Action] = {}
        for run in runs:
            seen = health(states[run.id], served=run.kind.value in served)
            if seen in HEALTHY:
                continue
            key = (run.id, run.attempt)
            since = suspects[key] = self._suspects.get(key, now)
            lost = now - since >= self._settings.lost_after_s
            stored = await self._service.stored_outcome(run) if lost else None
            action = judge(
                seen,
                suspect_for_s=now - since,
                lost_after_s=self._settings.lost_after_s,
                attempt=run.attempt,
                max_attempts=self._settings.max_attempts,
                has_stored_outcome=stored is not None,
                restartable=run.request is not None,
                no_worker_after_s=self._settings.no_worker_after_s,
            )
            if action is Action.KEEP:
                continue
            log.warning("run %s attempt %d is %s: %s", run.id, run.attempt, seen.value, action.value)
            try:
                await self._act(run, seen, action, stored)
            except QueueUnreachable as exc:
                self._outage(exc)
                return acted
            del suspects[key]
            acted[run.id] = action
        self._suspects = suspects
        return acted

    async def _cancel_left_behind(self) -> None:
        """A cancel that met Redis down waits in memory: a bot restarted before Redis came back lost it.
        After a start and after each outage, every run cancelled lately whose job Redis still holds is
        cancelled again, so no worker spends its time on work nobody wants."""
        runs = await self._service.recently_cancelled()
        states = await self._queue.observe([(run.id, run.attempt) for run in runs])
        for run in runs:
            if states[run.id].stored or states[run.id].in_progress:
                log.info("run %s was cancelled but its job is still in Redis: cancelling it there", run.id)
                await self._queue.cancel(run.kind.value, run.id, run.attempt)
        self._swept = True

    def _outage(self, exc: QueueUnreachable) -> None:
        # Nothing seen across an outage is evidence against a run: its worker could not beat either.
        self._swept = False
        self._suspects.clear()
        if not self._redis_down:
            log.warning("run check skipped: Redis unreachable (%s)", exc)
        self._redis_down = True

    async def _act(
        self, run: Run, seen: Health, action: Action, stored: jobs.TrainOutcome | jobs.GenerateOutcome | None
    ) -> None:
        kind = run.kind.value
        if action is Action.DELIVER_STORED:
            assert stored is not None
            await self._queue.report(stored, run.attempt)
            return
        # A silent worker may only be cut off from Redis: it is told to drop this attempt if it comes back.
        await self._queue.abandon(kind, run.id, run.attempt, superseded=seen is Health.SILENT)
        if action is Action.RESTART:
            await self._service.restart_run(run, self._settings.max_attempts)
            return
        if action is Action.FAIL_NO_WORKER:
            waited = f"No worker served the {kind} queue for {self._settings.no_worker_after_s:.0f} s."
            await self._queue.report(jobs.failed_outcome(kind, run.id, jobs.ErrorCode.NO_WORKER, waited), run.attempt)
            return
        lost = f"The worker was lost on attempt {run.attempt}."
        await self._queue.report(jobs.failed_outcome(kind, run.id, jobs.ErrorCode.WORKER_LOST, lost), run.attempt)
