"""No user is ever stuck: GPU workers killed with SIGKILL mid-run, on every try; /cancel with a dead
worker. Real processes: the bot (run_bot over the fake Bot API), real Redis, worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bot.config import BotSettings
from tests.pipeline.tiny import tiny_model_dir  # noqa: F401  (the tiny SD model, built once per session)
from tests.processes import WorkerProcess
from tests.telegram.conftest import TOKEN
from tests.telegram.fake_bot_api import FakeBotApi
from tests.telegram.faults import (
    FAST_HEARTBEAT,
    FAST_SUPERVISOR,
    Faults,
    heartbeat_of,
    running_attempt,
)
from tests.telegram.users import TgUser

#: A scripted training step this long never ends before the test kills its worker.
FOREVER = {"FACECHAIN_TEST_STEP_S": "600", "FACECHAIN_TEST_GENERATE_S": "600"}


@pytest.fixture
async def faults(api: FakeBotApi, redis_url: str, tmp_path: Path) -> AsyncIterator[Faults]:
    data = tmp_path / "data"
    settings = BotSettings(
        _env_file=None, data_dir=data, redis_url=redis_url, telegram_token=TOKEN, telegram_api_url=api.root,
        daily_generations=5, **FAST_SUPERVISOR,
    )  # fmt: skip
    workers = WorkerProcess(data, redis_url, tmp_path / "logs", **FAST_HEARTBEAT)
    stack = Faults(api, settings, workers)
    try:
        await stack.start_bot()
        yield stack
    finally:
        workers.close()
        await stack.stop_bot()
        for name, seconds in stack.timings.items():
            print(f"measured: {name}: {seconds:.1f} s")


async def _kill_every_try(faults: Faults, user: TgUser, progress_text: str, run_kind: str) -> str:
    """Start a worker, let it take the run's current attempt, kill -9 it; three times. The run id."""
    run_id = ""
    progress = await user.expect(progress_text)
    for attempt in (1, 2, 3):
        faults.workers.start(**FOREVER)
        job_id = f"{run_id}.{attempt}" if run_id else None
        if job_id is None:
            job_id = await running_attempt(str(faults.settings.redis_url))
            run_id = job_id.rsplit(".", 1)[0]
            assert job_id == f"{run_id}.1"
        else:
            await heartbeat_of(str(faults.settings.redis_url), job_id)
        faults.workers.kill9()
        killed = time.monotonic()
        if attempt < 3:
            # The run goes back in line as its next attempt; the progress message says so.
            await user.expect_edit(progress, f"started again (try {attempt + 1} of 3)", within=60)
            faults.timings[f"{run_kind}: kill -9 to 'started again (try {attempt + 1})' note"] = (
                time.monotonic() - killed
            )
    faults.timings[f"{run_kind}: last kill -9"] = killed
    return run_id


async def test_a_training_whose_worker_is_killed_on_every_try_fails_and_frees_the_user(
    faults: Faults, alice: TgUser
) -> None:
    await alice.ask_to_train()
    run_id = await _kill_every_try(faults, alice, "Training queued", "train")
    killed = faults.timings.pop("train: last kill -9")

    await alice.expect("Sorry, training failed. The GPU worker stopped while working on it", within=120)
    faults.timings["train: last kill -9 to the user told"] = time.monotonic() - killed
    row = faults.run_row(run_id)
    assert (row["status"], row["error_code"], row["attempt"]) == ("failed", "worker_lost", 3)

    # Not locked out: the photos are kept, and a healthy worker trains them.
    faults.workers.start()
    await alice.answer_subject()
    await alice.expect("Your face model is ready!", within=60)


async def test_portraits_whose_worker_is_killed_on_every_try_fail_uncharged(faults: Faults, alice: TgUser) -> None:
    faults.workers.start()
    await alice.ask_to_train()
    await alice.expect("Your face model is ready!", within=60)
    faults.workers.close()

    alice.say("/generate oil_painting 2")
    run_id = await _kill_every_try(faults, alice, "Making 2 portraits", "generate")
    killed = faults.timings.pop("generate: last kill -9")
    told = await alice.expect("Sorry, I couldn't make your portraits.", within=120)
    faults.timings["generate: last kill -9 to the user told"] = time.monotonic() - killed
    assert "didn't count against your daily limit" in told.shown
    row = faults.run_row(run_id)
    assert (row["status"], row["error_code"], row["attempt"]) == ("failed", "worker_lost", 3)
    assert faults.generations_charged() == 0
    alice.say("/status")
    await alice.expect("Portrait runs today: 0 of 5")


async def test_a_worker_killed_once_is_replaced_and_the_training_finishes_clean(faults: Faults, alice: TgUser) -> None:
    await alice.ask_to_train()
    progress = await alice.expect("Training queued")
    faults.workers.start(**FOREVER)
    job_id = await running_attempt(str(faults.settings.redis_url))
    run_id = job_id.rsplit(".", 1)[0]
    faults.workers.kill9()
    killed = time.monotonic()
    # What a worker killed while saving leaves: a half-written LoRA's temp file, and (from a store
    # without atomic writes) a truncated LoRA under the final name. Neither may reach the user.
    run_dir = faults.settings.blob_dir / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / ".tmp-killed.part").write_bytes(b"half a lo")
    (run_dir / "face_lora.safetensors").write_bytes(b"truncated")
    await alice.expect_edit(progress, "started again (try 2 of 3)", within=60)
    faults.timings["train: kill -9 to 'started again (try 2)' note"] = time.monotonic() - killed

    faults.workers.start()
    await alice.expect("Your face model is ready!", within=60)
    row = faults.run_row(run_id)
    assert (row["status"], row["attempt"]) == ("done", 2)
    assert (run_dir / "face_lora.safetensors").read_bytes() == b"lora", "the second attempt wrote its own"
    assert not (run_dir / ".tmp-killed.part").exists()


async def test_cancel_ends_a_run_whose_worker_was_killed(faults: Faults, alice: TgUser) -> None:
    await alice.ask_to_train()
    await alice.expect("Training queued")
    faults.workers.start(**FOREVER)
    job_id = await running_attempt(str(faults.settings.redis_url))
    faults.workers.kill9()

    asked = time.monotonic()
    alice.say("/cancel")
    await alice.expect("Training cancelled. Your photos are kept", within=10)
    faults.timings["/cancel with a killed worker to 'cancelled'"] = time.monotonic() - asked
    row = faults.run_row(job_id.rsplit(".", 1)[0])
    assert (row["status"], row["error_code"]) == ("cancelled", "cancelled")
    alice.say("/done")
    await alice.expect("Who is in these photos?")


@pytest.mark.slow
async def test_a_worker_killed_in_a_real_training_is_replaced_and_the_lora_is_whole(
    faults: Faults,
    tiny_model_dir: Path,  # noqa: F811  (the fixture imported above)
    alice: TgUser,
) -> None:
    """The real stages on the tiny model: the worker is killed once its training stage is under way."""
    real = {"FACECHAIN_TEST_TINY_MODEL": str(tiny_model_dir), "FACECHAIN_TEST_TRAIN_STEPS": "1500"}
    faults.workers.start(**real)
    await alice.ask_to_train()
    progress = await alice.expect("Training queued", within=30)
    job_id = await running_attempt(str(faults.settings.redis_url), within=120)
    run_id = job_id.rsplit(".", 1)[0]
    await alice.expect_edit(progress, "Training your face model", within=180)  # the training loop runs
    faults.workers.kill9()
    killed = time.monotonic()

    faults.workers.start(**real)
    await alice.expect_edit(progress, "started again (try 2 of 3)", within=60)
    await alice.expect("Your face model is ready!", within=300)
    faults.timings["real training: kill -9 to 'ready'"] = time.monotonic() - killed
    await asyncio.sleep(2)  # a second "ready" would have come by now
    assert sum("Your face model is ready!" in m.shown for m in alice.replies) == 1
    assert (faults.run_row(run_id)["status"], faults.run_row(run_id)["attempt"]) == ("done", 2)

    with contextlib.closing(sqlite3.connect(faults.database)) as db:
        [(lora_key,)] = db.execute("SELECT lora_key FROM face_models WHERE status = 'ready'").fetchall()
    blob_root = faults.settings.blob_dir
    lora = load_file(str(blob_root / lora_key))  # a half-written file would not parse
    assert lora and all(torch.isfinite(t).all() for t in lora.values())
    strays = [p for p in blob_root.rglob("*") if p.name.startswith(".tmp-") or p.suffix == ".part"]
    assert strays == [], strays
