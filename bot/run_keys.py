"""Finding and deleting what Redis keeps about runs, for ``/forget``.

A run leaves keys whose names carry its id: the cancel flag (``facechain:cancel:{run_id}``), arq's
job, retry, in-progress and result keys of each attempt (``arq:*:{run_id}.{attempt}``) and of its
outcome delivery (``arq:*:deliver.{run_id}``), and its job id in a queue (a sorted set). Rather than
rebuilding each name, one SCAN over the keyspace finds every key whose name holds a run id as a
whole token, so keys added later with the run id in their name are found too.

The heartbeat (``facechain:heartbeat:{run_id}``) and the "superseded" flags of a run's attempts
(``facechain:superseded:{run_id}.{attempt}``) are found the same way.

A run a worker is still executing (its arq in-progress key exists) keeps its cancel flag: the worker
polls it to stop. Its remaining keys are deleted when its outcome reaches the bot (``ended=True``).
The kept flag's lifetime is cut to :data:`KEPT_CANCEL_TTL_S`: a live worker sees it within a second,
and a dead one never will, so it must not wait out its usual hour.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable

from redis.asyncio import Redis

from pipeline import jobs

#: arq's key prefix of a job being executed (arq.constants.in_progress_key_prefix).
IN_PROGRESS_PREFIX = "arq:in-progress:"
#: Sorted sets whose members are job ids: the queues and arq's abort set.
JOB_SETS = (jobs.TRAIN_QUEUE, jobs.GENERATE_QUEUE, jobs.BOT_QUEUE, "arq:abort")
#: Seconds a forgotten run's cancel flag is kept for the worker still executing it (it polls twice a second).
KEPT_CANCEL_TTL_S = 60
_SCAN_BATCH = 1000
#: Run ids are ``[A-Za-z0-9][A-Za-z0-9_-]*``: anything else separates tokens in a key or job id.
_SEPARATOR = re.compile(r"[^A-Za-z0-9_-]+")


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _mentions(name: str, run_ids: Collection[str]) -> str | None:
    """The run id ``name`` holds as a token, if any."""
    for token in _SEPARATOR.split(name):
        if token in run_ids:
            return token
    return None


async def delete_run_keys(redis: Redis, run_ids: Iterable[str], *, ended: bool = False) -> int:
    """Delete every key and queue entry that names one of ``run_ids``; returns how many went.

    Unless the runs ``ended`` (their outcome arrived), the cancel flag of one still executing stays.
    """
    wanted = frozenset(run_ids)
    if not wanted:
        return 0
    found: list[str] = []
    running: set[str] = set()
    async for raw in redis.scan_iter(count=_SCAN_BATCH):
        name = _text(raw)
        run_id = _mentions(name, wanted)
        if run_id is None:
            continue
        found.append(name)
        if name.startswith(IN_PROGRESS_PREFIX) and not ended:
            running.add(run_id)
    keep = {jobs.cancel_key(run_id) for run_id in running}
    doomed = [name for name in found if name not in keep]
    deleted = int(await redis.delete(*doomed)) if doomed else 0
    for name in keep:
        await redis.expire(name, KEPT_CANCEL_TTL_S)
    for job_set in JOB_SETS:
        members = [_text(m) async for m, _ in redis.zscan_iter(job_set, count=_SCAN_BATCH)]
        stale = [m for m in members if _mentions(m, wanted) is not None]
        if stale:
            deleted += int(await redis.zrem(job_set, *stale))
    return deleted
