"""The real worker end to end: real Redis, arq in burst mode, the real stages on a tiny SD model and
real photos. A train job then a generate job, and their outcomes arrive on the bot's queue."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from safetensors.torch import load_file

from bot.queue import ArqJobQueue, create_redis
from pipeline import jobs
from pipeline.config import WorkerSettings
from pipeline.runner import PipelineRunner
from pipeline.worker import run_worker
from storage.blobs import LocalBlobStore
from tests.pipeline import photos
from tests.pipeline.outcomes import received_outcomes
from tests.pipeline.tiny import tiny_settings

pytestmark = pytest.mark.slow


async def test_train_then_generate_on_the_real_stages(tiny_model_dir: Path, tmp_path: Path, redis_url: str) -> None:
    settings: WorkerSettings = tiny_settings(
        tiny_model_dir, tmp_path, redis_url=redis_url, rank_faces=False, nsfw_check=True, candidates=3
    )
    blobs = LocalBlobStore(settings.blob_dir)
    keys = photos.store_same_person(blobs)
    keys.append("users/1/photos/1/coffee.png")
    blobs.put_bytes(keys[-1], photos.encode(photos.coffee()))

    redis = await create_redis(redis_url)
    queue = ArqJobQueue(redis)
    runner = await asyncio.to_thread(PipelineRunner, settings, blobs)
    try:
        train = jobs.TrainRequest(
            run_id="t-e2e-0001", user_id=1, model_id=1, photo_keys=keys, subject=jobs.Subject.MAN, min_photos=3
        )
        await queue.submit(train, attempt=1)
        await asyncio.wait_for(run_worker(settings, burst=True, ctx={"runner": runner, "blobs": blobs}), 300)
        [trained] = await received_outcomes(redis_url)
        assert isinstance(trained, jobs.TrainOutcome)
        assert trained.ok, trained
        assert trained.trigger == "<fcsks>, a handsome man"
        assert len(trained.used_photos) == 5
        assert [(r.photo_key, r.reason) for r in trained.rejections] == [
            ("users/1/photos/1/coffee.png", jobs.RejectReason.NO_FACE)
        ]
        assert trained.lora_key is not None and trained.template_key is not None
        lora = load_file(str(blobs.path(trained.lora_key)))
        assert lora and all("lora" in name for name in lora)
        assert blobs.exists(jobs.outcome_key(train.run_id)), "the done marker is written"

        generate = jobs.GenerateRequest(
            run_id="g-e2e-0001", user_id=1, model_id=1, lora_key=trained.lora_key,
            template_key=trained.template_key, trigger=trained.trigger or "",
            style=jobs.StyleSpec(name="watercolor", prompt="(watercolor:1.3) painting"), count=2, candidates=3, seed=7,
        )  # fmt: skip
        await queue.submit(generate, attempt=1)
        await asyncio.wait_for(run_worker(settings, burst=True, ctx={"runner": runner, "blobs": blobs}), 300)
        [made] = await received_outcomes(redis_url)
        assert isinstance(made, jobs.GenerateOutcome)
        assert made.ok, made
        assert [p.seed for p in made.portraits] == [7, 8], "the first candidates, seeds recorded"
        assert made.blocked == 0
        for portrait in made.portraits:
            assert blobs.get_bytes(portrait.key)[:3] == b"\xff\xd8\xff", "portraits are JPEG files"
        assert runner.generator is not None
        assert not runner.generator.pipe.get_list_adapters(), "the resident pipeline is left clean"
    finally:
        await redis.aclose()
