"""The whole bot (``run_bot`` against the fake Bot API) with GPU workers in processes of their own, for
fault tests: workers are killed with SIGKILL, Redis is stopped and started, the bot is restarted."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bot.app import run_bot
from bot.config import BotSettings
from pipeline import jobs
from tests.processes import WorkerProcess
from tests.telegram.fake_bot_api import FakeBotApi
from tests.waiting import eventually

#: Short supervisor intervals for tests (production: 15 s checks, 30 s grace, 30 s heartbeat TTL).
FAST_SUPERVISOR: dict[str, Any] = {"run_check_interval_s": 0.5, "run_lost_after_s": 1.0, "run_max_attempts": 3}
FAST_HEARTBEAT = {"FACECHAIN_HEARTBEAT_TTL_S": "1"}


@dataclass
class Faults:
    api: FakeBotApi
    settings: BotSettings
    workers: WorkerProcess
    bot_task: asyncio.Task[None] | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def database(self) -> Path:
        return self.settings.database_path

    async def start_bot(self) -> None:
        polls = len(self.api.calls_of("getUpdates"))
        self.bot_task = asyncio.create_task(run_bot(self.settings), name="bot")
        await self.api.wait_for(
            lambda: len(self.api.calls_of("getUpdates")) > polls or self.bot_task is None or self.bot_task.done(),
            20,
            "the bot to poll for updates",
        )
        assert self.bot_task is not None
        if self.bot_task.done():
            self.bot_task.result()

    async def stop_bot(self) -> None:
        if self.bot_task is None:
            return
        self.bot_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.bot_task
        self.bot_task = None

    def run_row(self, run_id: str) -> sqlite3.Row:
        with contextlib.closing(sqlite3.connect(self.database)) as db:
            db.row_factory = sqlite3.Row
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        assert row is not None, run_id
        return row

    def generations_charged(self) -> int:
        with contextlib.closing(sqlite3.connect(self.database)) as db:
            return int(db.execute("SELECT coalesce(sum(n), 0) FROM usage_counters").fetchone()[0])


async def running_attempt(redis_url: str, within: float = 30.0) -> str:
    """The arq job id (``{run}.{attempt}``) a worker heartbeats right now."""
    client = Redis.from_url(redis_url)
    try:

        async def beating() -> str | None:
            async for key in client.scan_iter(match=jobs.heartbeat_key("*")):
                value = await client.get(key)
                if value:
                    return str(value.decode())
            return None

        found: str = await eventually(beating, within, "a worker's heartbeat")
        return found
    finally:
        await client.aclose()


async def heartbeat_of(redis_url: str, job_id: str, within: float = 30.0) -> float:
    """Wait until a worker heartbeats ``job_id``; the monotonic time it was seen."""
    run_id = job_id.rsplit(".", 1)[0]
    client = Redis.from_url(redis_url)
    try:

        async def beating() -> bool:
            return await client.get(jobs.heartbeat_key(run_id)) == job_id.encode()

        await eventually(beating, within, f"a heartbeat of {job_id}")
        return time.monotonic()
    finally:
        await client.aclose()
