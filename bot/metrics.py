"""The bot's Prometheus metrics: runs in flight, runs submitted, outcomes delivered, delivery retries,
and the depth of every queue. Served when FACECHAIN_BOT_METRICS_PORT is set; the names are listed in
docs/scaling.md."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from prometheus_client import Counter

from pipeline import jobs
from pipeline.metrics import QUEUES, Labels, LoopGauge, MetricsServer, Registered, queue_depth_gauge

if TYPE_CHECKING:
    from storage.repositories import Repositories

RUNS_SUBMITTED = Counter(
    "facechain_runs_submitted", "Runs put on a worker queue, by kind (retries included).", ["kind"]
)
OUTCOMES_DELIVERED = Counter(
    "facechain_outcomes_delivered",
    "Outcomes from the workers the bot has handled (sent to the user, or recorded for a run nobody waits "
    "for any more), by kind and result (ok, or the error code).",
    ["kind", "result"],
)
DELIVERY_RETRIES = Counter(
    "facechain_outcome_delivery_retries",
    "Outcome deliveries that failed and will be tried again (the chat platform unreachable, say).",
    ["kind"],
)


def outcome_delivered(outcome: jobs.TrainOutcome | jobs.GenerateOutcome) -> None:
    OUTCOMES_DELIVERED.labels(outcome.kind, outcome.error.value if outcome.error else "ok").inc()


def runs_active_gauge(repos: Repositories, loop: asyncio.AbstractEventLoop) -> LoopGauge:
    """``facechain_runs_active{kind,status}``: queued and running runs, from the database at scrape time."""

    async def read() -> dict[Labels, float]:
        counts: dict[Labels, float] = {(k, s): 0.0 for k in ("train", "generate") for s in ("queued", "running")}
        for (kind, status), n in (await repos.runs.count_active()).items():
            counts[(kind.value, status.value)] = float(n)
        return counts

    return LoopGauge(
        "facechain_runs_active", "Runs queued or running, by kind and status (from the database).",
        ["kind", "status"], read, loop,
    )  # fmt: skip


@contextlib.asynccontextmanager
async def bot_metrics(port: int | None, repos: Repositories, redis: object) -> AsyncIterator[int | None]:
    """Serve ``/metrics`` on ``port`` while the block runs (nothing when None); yields the port served."""
    if port is None:
        yield None
        return
    loop = asyncio.get_running_loop()
    server = MetricsServer(port, "FACECHAIN_BOT_METRICS_PORT")
    try:
        with Registered(runs_active_gauge(repos, loop), queue_depth_gauge(redis, QUEUES, loop)):
            yield server.port
    finally:
        server.close()
