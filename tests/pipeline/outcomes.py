"""The outcomes a worker sent to the bot's queue, read as the bot's outcome worker reads them."""

from __future__ import annotations

import asyncio

from bot.queue import build_outcome_worker
from pipeline import jobs


async def received_outcomes(redis_url: str, within: float = 30) -> list[jobs.TrainOutcome | jobs.GenerateOutcome]:
    """Every outcome waiting on the bot's queue, in order: the bot's outcome worker run in burst mode."""
    received: list[jobs.TrainOutcome | jobs.GenerateOutcome] = []

    async def collect(outcome: jobs.TrainOutcome | jobs.GenerateOutcome) -> None:
        received.append(outcome)

    worker = build_outcome_worker(redis_url, collect, burst=True)
    try:
        await asyncio.wait_for(worker.async_run(), within)
    finally:
        await worker.close()
    return received
