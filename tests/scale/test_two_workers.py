"""Two GPU machines, one queue: two real ``facechain-bot worker`` processes (tiny model), each with its
own data directory, take /generate jobs from the one generate queue in Redis and keep their outputs in
one S3 bucket (moto in server mode), where the bot side reads them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.config import BotSettings
from bot.queue import ArqJobQueue, build_outcome_worker, create_redis
from bot.up import free_port
from pipeline import jobs
from storage.blob_config import open_blob_store
from tests.pipeline.tiny import random_lora_file, tiny_model_dir, tiny_pipe
from tests.s3_server import S3Bucket, s3_bucket, s3_endpoint
from tests.scale.procs import TINY_WORKER_ENV, Process, job_lines, run_ids, start

pytestmark = pytest.mark.slow
__all__ = ["s3_bucket", "s3_endpoint", "tiny_model_dir", "tiny_pipe"]

JOBS = 6
LORA_KEY = "users/1/models/1/face_lora.safetensors"


async def test_two_workers_share_one_queue_and_one_bucket(
    redis_url: str, s3_bucket: S3Bucket, tiny_model_dir: Path, tiny_pipe: object, tmp_path: Path
) -> None:
    # The bot machine: its own data directory, the bucket for blobs.
    bot_settings = BotSettings(
        _env_file=None, data_dir=tmp_path / "bot-machine", redis_url=redis_url, **s3_bucket.settings()
    )  # type: ignore[call-arg]
    bot_blobs = open_blob_store(bot_settings, bot_settings.data_dir)
    lora = random_lora_file(tiny_pipe, tmp_path / "face.safetensors", seed=5)
    bot_blobs.put_file(LORA_KEY, lora)

    workers: list[Process] = []
    for name in ("gpu-a", "gpu-b"):
        env = {
            "FACECHAIN_REDIS_URL": redis_url, **s3_bucket.env(), **TINY_WORKER_ENV,
            "FACECHAIN_BASE_MODEL": str(tiny_model_dir), "FACECHAIN_DATA_DIR": str(tmp_path / name / "data"),
            "FACECHAIN_MODELS_DIR": str(tmp_path / name / "models"), "FACECHAIN_WORKER_METRICS_PORT": str(free_port()),
        }  # fmt: skip
        workers.append(start(name, ["worker", "--queues", "generate"], env, tmp_path / name))
    redis = await create_redis(redis_url)
    try:
        for worker in workers:
            await worker.wait_value("facechain_worker_ready", 1, within=240)

        queue = ArqJobQueue(redis)
        style = jobs.StyleSpec(name="watercolor", prompt="(watercolor:1.3) painting")
        requests = [
            jobs.GenerateRequest(
                run_id=f"g-two-{n:04d}",
                user_id=1,
                model_id=1,
                lora_key=LORA_KEY,
                trigger="a woman",
                style=style,
                count=1,
                candidates=2,
                seed=n,
            )
            for n in range(JOBS)
        ]
        for request in requests:
            await queue.submit(request, attempt=1)

        # The bot's side: outcomes arrive on its queue; it reads the portraits from the bucket.
        outcomes: dict[str, jobs.TrainOutcome | jobs.GenerateOutcome] = {}

        async def collect(outcome: jobs.TrainOutcome | jobs.GenerateOutcome) -> None:
            outcomes[outcome.run_id] = outcome

        deadline = asyncio.get_running_loop().time() + 300
        while len(outcomes) < JOBS and asyncio.get_running_loop().time() < deadline:
            assert all(w.popen.poll() is None for w in workers), [w.log()[-2000:] for w in workers]
            consumer = build_outcome_worker(redis_url, collect, burst=True)
            try:
                await consumer.async_run()
            finally:
                await consumer.close()
            await asyncio.sleep(0.5)
        assert sorted(outcomes) == [r.run_id for r in requests], "every job ran and reported"
        for outcome in outcomes.values():
            assert isinstance(outcome, jobs.GenerateOutcome) and outcome.ok, outcome
            [portrait] = outcome.portraits
            assert bot_blobs.get_bytes(portrait.key)[:3] == b"\xff\xd8\xff", "the bot reads a JPEG from the bucket"
            assert f"facechain/{portrait.key}" in s3_bucket.object_names()

        # Each machine took jobs, and none ran twice.
        taken = {w.name: run_ids(w.log(), "generate") for w in workers}
        assert all(taken.values()), f"both workers took at least one job: {taken}"
        assert sorted(taken["gpu-a"] + taken["gpu-b"]) == sorted(outcomes)
        for worker in workers:
            count = worker.value("facechain_job_duration_seconds_count", kind="generate", outcome="ok")
            assert count == len(taken[worker.name]), (worker.name, count)
            assert worker.value("facechain_queue_depth", queue="generate") == 0
            for run_id in taken[worker.name]:
                lines = job_lines(worker.log(), "generate", run_id)
                assert all(f" run={run_id}: " in line for line in lines), "\n".join(lines)
            assert not (tmp_path / worker.name / "data" / "blobs").exists(), "no local blob folder on a GPU machine"
            assert (tmp_path / worker.name / "data" / "blob-cache").is_dir(), "the LoRA was read from a local copy"
    finally:
        await redis.aclose()
        for worker in workers:
            worker.stop()
