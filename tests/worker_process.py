"""A GPU worker process for fault tests (see tests/processes.py): the real ``run_worker`` reading
its settings from FACECHAIN_* like ``facechain-bot worker``, on the scripted stages of
tests/telegram/gpu.py. FACECHAIN_TEST_STEP_S sets the seconds per scripted training step,
FACECHAIN_TEST_GENERATE_S how long a scripted generation takes. With FACECHAIN_TEST_TINY_MODEL, the
real stages run instead, on that tiny model."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass

from pipeline import jobs
from pipeline.config import WorkerSettings
from pipeline.control import StageControl
from pipeline.worker import StageRunner, run_worker
from storage.blobs import LocalBlobStore
from tests.telegram.gpu import ScriptedGpu


@dataclass
class SlowGpu(ScriptedGpu):
    generate_s: float = 0.0

    def generate(self, request: jobs.GenerateRequest, control: StageControl) -> jobs.GenerateOutcome:
        control.report(jobs.Stage.GENERATING, 0.1, "")
        deadline = time.monotonic() + self.generate_s
        while time.monotonic() < deadline:
            control.check()
            time.sleep(0.05)
        return super().generate(request, control)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = WorkerSettings(_env_file=None)
    tiny_model = os.environ.get("FACECHAIN_TEST_TINY_MODEL")
    if tiny_model:
        asyncio.run(run_worker(settings, ctx={"runner": _real_stages(tiny_model, settings)}))
        return
    runner = SlowGpu(
        LocalBlobStore(settings.blob_dir),
        step_s=float(os.environ.get("FACECHAIN_TEST_STEP_S", "0.05")),
        generate_s=float(os.environ.get("FACECHAIN_TEST_GENERATE_S", "0")),
    )
    asyncio.run(run_worker(settings, ctx={"runner": runner}))


def _real_stages(tiny_model: str, settings: WorkerSettings) -> StageRunner:
    """The real stages on the tiny model (FACECHAIN_TEST_TINY_MODEL), FACECHAIN_TEST_TRAIN_STEPS
    training steps: for tests that kill a worker in the middle of a real training."""
    from pipeline.runner import PipelineRunner
    from tests.pipeline.tiny import tiny_settings

    steps = int(os.environ.get("FACECHAIN_TEST_TRAIN_STEPS", "3"))
    real = tiny_settings(
        tiny_model, settings.data_dir.parent, data_dir=settings.data_dir, redis_url=str(settings.redis_url),
        heartbeat_ttl_s=settings.heartbeat_ttl_s, rank_faces=False, nsfw_check=False,
        steps_per_photo=steps, max_train_steps=steps, train_batch_size=1, lr_batch_scaling="none",
    )  # fmt: skip
    runner: StageRunner = PipelineRunner(real, LocalBlobStore(real.blob_dir))
    return runner


if __name__ == "__main__":
    main()
