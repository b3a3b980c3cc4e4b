"""A chat journey across two real processes, as on two machines: ``facechain-bot bot`` (Telegram, against
the fake Bot API) and ``facechain-bot worker`` (the real stages on the tiny model), sharing only a Redis
and an S3 bucket (moto in server mode). Both /metrics endpoints are scraped over HTTP as it goes, and
every log line of a job carries its run id."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from bot.up import free_port
from tests.pipeline.tiny import tiny_model_dir
from tests.s3_server import SECRET_KEY, S3Bucket, s3_bucket, s3_endpoint
from tests.scale.procs import TINY_WORKER_ENV, Process, job_lines, run_ids, start
from tests.telegram.conftest import TOKEN
from tests.telegram.fake_bot_api import FakeBotApi
from tests.telegram.users import TgUser

pytestmark = pytest.mark.slow
__all__ = ["s3_bucket", "s3_endpoint", "tiny_model_dir"]


@pytest.fixture
async def api() -> AsyncIterator[FakeBotApi]:
    async with FakeBotApi(TOKEN) as server:
        yield server


async def test_a_journey_moves_both_processes_metrics(
    api: FakeBotApi, redis_url: str, s3_bucket: S3Bucket, tiny_model_dir: Path, tmp_path: Path
) -> None:
    shared = {"FACECHAIN_REDIS_URL": redis_url, "FACECHAIN_CANDIDATES": "2", **s3_bucket.env()}
    bot = start(
        "bot", ["bot"], {
            **shared, "FACECHAIN_DATA_DIR": str(tmp_path / "bot-machine" / "data"),
            "FACECHAIN_TELEGRAM_TOKEN": TOKEN, "FACECHAIN_TELEGRAM_API_URL": api.root,
            "FACECHAIN_BOT_METRICS_PORT": str(free_port()),
        },
        tmp_path / "bot-machine",
    )  # fmt: skip
    worker_env = {
        **shared, **TINY_WORKER_ENV, "FACECHAIN_BASE_MODEL": str(tiny_model_dir),
        "FACECHAIN_DATA_DIR": str(tmp_path / "gpu-machine" / "data"),
        "FACECHAIN_MODELS_DIR": str(tmp_path / "gpu-machine" / "models"),
        "FACECHAIN_WORKER_METRICS_PORT": str(free_port()),
    }  # fmt: skip
    worker: Process | None = None
    alice = TgUser(api, 1001, "Alice")
    try:
        before = await bot.wait_metrics()
        assert before[("facechain_queue_depth", (("queue", "train"),))] == 0
        assert before[("facechain_runs_active", (("kind", "train"), ("status", "queued")))] == 0
        await api.wait_for(lambda: api.calls_of("getUpdates"), 30, "the bot to poll")

        # A training is asked for while no worker runs: it waits in the queue, and the bot shows it.
        await alice.ask_to_train(got="Got 3 photos")
        progress = await alice.expect("Training queued")
        await bot.wait_value("facechain_queue_depth", 1, queue="train")
        await bot.wait_value("facechain_runs_active", 1, kind="train", status="queued")
        assert bot.value("facechain_runs_submitted_total", kind="train") == 1

        # The GPU machine comes up: its endpoint answers while the models load, before any job.
        worker = start("worker", ["worker"], worker_env, tmp_path / "gpu-machine")
        loading = await worker.wait_metrics()
        assert loading[("facechain_worker_ready", ())] == 0
        assert loading[("facechain_job_duration_seconds_count", (("kind", "train"), ("outcome", "ok")))] == 0
        assert loading[("facechain_gpu_devices", ())] == 0, "a CPU-only worker says it sees no GPU"

        await alice.expect_edit(progress, "Training done.", within=240)
        await alice.expect("Your face model is ready!", within=30)
        await worker.wait_value("facechain_job_duration_seconds_count", 1, kind="train", outcome="ok")
        after = worker.scrape()
        assert after[("facechain_worker_ready", ())] == 1
        assert after[("facechain_job_duration_seconds_sum", (("kind", "train"), ("outcome", "ok")))] > 0
        assert after[("facechain_jobs_running", (("kind", "train"),))] == 0
        assert after[("facechain_queue_depth", (("queue", "train"),))] == 0
        assert not [key for key in after if key[0] == "facechain_job_failures_total"], "no job failed"
        assert not [key for key in after if key[0] == "facechain_gpu_memory_bytes"], "no GPU memory on a CPU"
        await bot.wait_value("facechain_outcomes_delivered_total", 1, kind="train", result="ok")
        await bot.wait_value("facechain_runs_active", 0, kind="train", status="queued")
        assert bot.value("facechain_queue_depth", queue="train") == 0

        alice.say("/generate watercolor 1")
        making = await alice.expect("Making 1 portrait in watercolor")
        await alice.expect_edit(making, "Done.", within=240)
        portrait = await api.wait_for(lambda: [m for m in alice.replies if m.photo], 30, "the portrait")
        assert portrait[0].photo is not None
        with Image.open(io.BytesIO(portrait[0].photo)) as image:
            assert image.format == "JPEG" and image.size[0] >= 64
        await worker.wait_value("facechain_job_duration_seconds_count", 1, kind="generate", outcome="ok")
        await bot.wait_value("facechain_outcomes_delivered_total", 1, kind="generate", result="ok")

        # Photos, the LoRA and the portrait crossed between the machines in the bucket only.
        [train_run] = run_ids(worker.log(), "train")
        [generate_run] = run_ids(worker.log(), "generate")
        names = s3_bucket.object_names()
        assert sum("/photos/" in name for name in names) == 3, names
        assert f"facechain/runs/{train_run}/face_lora.safetensors" in names
        assert f"facechain/runs/{generate_run}/portrait_0.jpg" in names
        for machine in ("bot-machine", "gpu-machine"):
            assert not (tmp_path / machine / "data" / "blobs").exists(), f"{machine} kept no local blob folder"

        # Every log line of a job carries its run id, the stage thread's included.
        for kind, run_id in (("train", train_run), ("generate", generate_run)):
            lines = job_lines(worker.log(), kind, run_id)
            assert len(lines) >= 2 and all(f" run={run_id}: " in line for line in lines), "\n".join(lines)
        assert any("facechain.preprocess run=" in line for line in job_lines(worker.log(), "train", train_run))
        assert f"facechain.queue run={train_run}: train outcome handled: ok" in bot.log()
        for process in (bot, worker):
            assert SECRET_KEY not in process.log() and TOKEN not in process.log()
    finally:
        for process in (bot, worker):
            if process is not None:
                process.stop()
