"""What Redis keeps about a run is found by its id as a whole token, and nothing of another run goes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from bot.run_keys import KEPT_CANCEL_TTL_S, delete_run_keys
from pipeline import jobs

GONE = "t20261204aaaa0001"
#: Starts with GONE's id: a prefix match would take its keys too.
LONGER = "t20261204aaaa00012"
OTHER = "g20261204bbbb0002"


def keys_of(run_id: str) -> set[str]:
    return {
        jobs.cancel_key(run_id),
        f"arq:job:{jobs.arq_job_id(run_id, 1)}",
        f"arq:retry:{jobs.arq_job_id(run_id, 1)}",
        f"arq:result:{jobs.arq_job_id(run_id, 2)}",
        f"arq:result:deliver.{run_id}",
        jobs.heartbeat_key(run_id),
        # Left by the supervisor when it restarted a lost attempt; lives 10 min on its own.
        jobs.superseded_key(jobs.arq_job_id(run_id, 1)),
    }


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, decode_responses=True)
    for run_id in (GONE, LONGER, OTHER):
        for key in keys_of(run_id):
            await client.set(key, "x")
        await client.zadd(jobs.TRAIN_QUEUE, {jobs.arq_job_id(run_id, 1): 1})
        await client.zadd(jobs.BOT_QUEUE, {f"deliver.{run_id}": 1})
    await client.set("facechain:health:train", "j_complete=3")
    try:
        yield client
    finally:
        await client.aclose()


async def remaining(redis: Redis) -> set[str]:
    return {key async for key in redis.scan_iter()}


async def test_every_key_and_queue_entry_of_the_run_goes_and_only_those(redis: Redis) -> None:
    deleted = await delete_run_keys(redis, [GONE])

    assert deleted == len(keys_of(GONE)) + 2
    assert await remaining(redis) == keys_of(LONGER) | keys_of(OTHER) | {
        jobs.TRAIN_QUEUE,
        jobs.BOT_QUEUE,
        "facechain:health:train",
    }
    assert set(await redis.zrange(jobs.TRAIN_QUEUE, 0, -1)) == {f"{LONGER}.1", f"{OTHER}.1"}
    assert set(await redis.zrange(jobs.BOT_QUEUE, 0, -1)) == {f"deliver.{LONGER}", f"deliver.{OTHER}"}


async def test_a_running_job_keeps_its_cancel_flag_until_its_outcome_arrived(redis: Redis) -> None:
    await redis.set(f"arq:in-progress:{jobs.arq_job_id(GONE, 1)}", "1")
    await redis.expire(jobs.cancel_key(GONE), 3600)

    await delete_run_keys(redis, [GONE, OTHER])

    left = await remaining(redis)
    assert jobs.cancel_key(GONE) in left, "the worker still polls it to stop"
    # ...but a dead worker never consumes it: it goes within a minute, not the usual hour.
    assert 0 < await redis.ttl(jobs.cancel_key(GONE)) <= KEPT_CANCEL_TTL_S
    assert not (keys_of(GONE) - {jobs.cancel_key(GONE)}) & left
    assert not keys_of(OTHER) & left

    await delete_run_keys(redis, [GONE], ended=True)
    assert not keys_of(GONE) & await remaining(redis)


async def test_a_cancel_leaves_no_flag_for_a_waiting_job_and_a_short_lived_one_for_a_held_job(redis_url: str) -> None:
    """A waiting job's flag has nobody to tell; a worker that took the job id just before the cancel
    deleted the job's data finds the job gone and never reads the flag, so it lives a minute, not an hour."""
    from bot.queue import ArqJobQueue, create_redis

    arq = await create_redis(redis_url)
    try:
        queue = ArqJobQueue(arq)
        waiting, held = "t20261205cccc0003", "t20261205dddd0004"
        for run_id in (waiting, held):
            await arq.zadd(jobs.TRAIN_QUEUE, {jobs.arq_job_id(run_id, 1): 1})
            await arq.set(f"arq:job:{jobs.arq_job_id(run_id, 1)}", b"payload")
        await arq.set(f"arq:in-progress:{jobs.arq_job_id(held, 1)}", b"1")

        assert await queue.cancel("train", waiting, 1) is True, "taken out before any worker had it"
        assert not await arq.exists(jobs.cancel_key(waiting))
        assert await queue.cancel("train", held, 1) is False
        assert 0 < await arq.ttl(jobs.cancel_key(held)) <= KEPT_CANCEL_TTL_S
    finally:
        await arq.aclose()
