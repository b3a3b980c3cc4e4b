"""Redis outages and bot restarts, with real processes: a redis-server of the test's own (AOF on) that
is stopped and started under a running bot and worker, a bot started while Redis is down, and a bot
restarted while a training runs."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.config import BotSettings
from pipeline import jobs
from tests.processes import RedisServer, WorkerProcess
from tests.telegram.conftest import TOKEN
from tests.telegram.fake_bot_api import FakeBotApi
from tests.telegram.faults import FAST_HEARTBEAT, FAST_SUPERVISOR, Faults, running_attempt
from tests.telegram.media import face_photos
from tests.telegram.users import TgUser
from tests.waiting import eventually

#: The bot's own outcome consumer and a worker's train queue record their health once connected.
BOT_CONNECTED = f"{jobs.BOT_QUEUE}:health-check"
WORKER_CONNECTED = "facechain:health:train"


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    try:
        yield server
    finally:
        server.kill()


def _faults(api: FakeBotApi, redis_url: str, tmp_path: Path, **overrides: Any) -> Faults:
    data = tmp_path / "data"
    values: dict[str, Any] = {**FAST_SUPERVISOR, **overrides}
    settings = BotSettings(
        _env_file=None, data_dir=data, redis_url=redis_url, telegram_token=TOKEN, telegram_api_url=api.root, **values
    )
    return Faults(api, settings, WorkerProcess(data, redis_url, tmp_path / "logs", **FAST_HEARTBEAT))


@pytest.fixture
async def patient_faults(api: FakeBotApi, redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[Faults]:
    """The test's Redis started, and a bot and worker for it (not started yet) with a longer grace than the
    other tests': these assert that nothing is restarted needlessly. Shut down when the test ends."""
    await redis_server.start()
    faults = _faults(api, redis_server.url(), tmp_path, run_lost_after_s=5.0)
    try:
        yield faults
    finally:
        await _shut_down(faults)


async def _shut_down(faults: Faults) -> None:
    """Stop the worker and the bot, and print what the test measured."""
    faults.workers.close()
    await faults.stop_bot()
    for name, seconds in faults.timings.items():
        print(f"measured: {name}: {seconds:.2f} s")


async def _alice_training_runs(faults: Faults, alice: TgUser) -> str:
    """The bot and a worker with 2 s training steps started, and Alice's training running on it: its
    arq job id."""
    await faults.start_bot()
    faults.workers.start(FACECHAIN_TEST_STEP_S="2")
    await alice.ask_to_train()
    await alice.expect("Training queued")
    return await running_attempt(faults.settings.redis_url)


def _assert_done_where_it_ran(faults: Faults, job_id: str) -> None:
    """Bot and worker are still up, and the run finished in its first attempt."""
    assert faults.workers.current.poll() is None and faults.bot_task is not None and not faults.bot_task.done()
    row = faults.run_row(job_id.rsplit(".", 1)[0])
    assert (row["status"], row["attempt"]) == ("done", 1), "it completed where it was, not restarted"


async def _connected(server: RedisServer, key: str, within: float) -> float:
    """Wait until ``key`` exists in the server's database 0; the monotonic time it was seen."""
    client = Redis(port=server.port)
    try:
        await eventually(lambda: client.exists(key), within, f"{key} in Redis", every=0.02)
        return time.monotonic()
    finally:
        await client.aclose()


async def test_the_bot_starts_with_redis_down_answers_and_connects_when_it_is_back(
    api: FakeBotApi, redis_server: RedisServer, tmp_path: Path, alice: TgUser
) -> None:
    faults = _faults(api, redis_server.url(), tmp_path)
    try:
        await faults.start_bot()  # Redis is down: the bot still polls Telegram
        faults.workers.start()  # ... and the worker waits for Redis instead of exiting
        alice.say("/help")
        await alice.expect("What I can do:")
        await alice.ask_to_train()
        busy = await alice.expect("I'm busy right now and couldn't start that. Please try again shortly.")
        assert busy.labels == ["A man", "A woman", "A boy", "A girl", "Someone else"], busy.labels
        assert faults.workers.current.poll() is None, "the worker did not give up"

        await redis_server.start()
        back = time.monotonic()
        bot_at = await _connected(redis_server, BOT_CONNECTED, 30)
        worker_at = await _connected(redis_server, WORKER_CONNECTED, 30)
        faults.timings["Redis up to the bot's queue connected"] = bot_at - back
        faults.timings["Redis up to the worker connected"] = worker_at - back

        alice.press("A woman")
        await alice.expect("Training queued")
        await alice.expect("Your face model is ready!", within=30)
        assert faults.bot_task is not None and not faults.bot_task.done()
    finally:
        await _shut_down(faults)


async def test_redis_restarting_mid_training_loses_nothing(
    api: FakeBotApi, redis_server: RedisServer, patient_faults: Faults, alice: TgUser
) -> None:
    faults, bob = patient_faults, TgUser(api, 1002, "Bob")
    alice_job = await _alice_training_runs(faults, alice)
    await bob.ask_to_train()
    await bob.expect("Training queued (next in line)")  # behind Alice's: only one worker

    await redis_server.stop()
    await asyncio.sleep(2)
    assert faults.workers.current.poll() is None, "the worker rode the outage out"
    assert faults.bot_task is not None and not faults.bot_task.done(), "the bot too"
    await redis_server.start()
    back = time.monotonic()

    await alice.expect("Your face model is ready!", within=60)
    faults.timings["Redis back to the running training's result"] = time.monotonic() - back
    await bob.expect("Your face model is ready!", within=60)
    faults.timings["Redis back to the queued training's result"] = time.monotonic() - back
    _assert_done_where_it_ran(faults, alice_job)


async def test_a_hung_redis_is_treated_as_down_and_both_recover_when_it_answers_again(
    api: FakeBotApi,
    redis_server: RedisServer,
    patient_faults: Faults,
    tmp_path: Path,
    alice: TgUser,
    caplog: pytest.LogCaptureFixture,
) -> None:
    faults, bob = patient_faults, TgUser(api, 1002, "Bob")
    try:
        alice_job = await _alice_training_runs(faults, alice)
        await bob.send_training_photos(face_photos(3))
        bob.say("/done")
        await bob.expect("Who is in these photos?")

        redis_server.freeze()  # no reset, no refusal: Redis just stops answering
        frozen = time.monotonic()
        alice.say("/help")
        await alice.expect("What I can do:", within=15)
        bob.press("A woman")
        busy = await bob.expect("I'm busy right now and couldn't start that. Please try again shortly.", within=30)
        faults.timings["Redis frozen to Bob told busy"] = time.monotonic() - frozen
        # Long enough for the worker's queue polling and the bot's progress subscription to notice.
        await asyncio.sleep(max(0.0, frozen + 15 - time.monotonic()))
        assert faults.workers.current.poll() is None, "the worker waits for Redis"
        assert faults.bot_task is not None and not faults.bot_task.done(), "the bot too"
        seen = caplog.text
        assert "progress: Redis unreachable" in seen, "the bot's progress subscription noticed the hang"
        # The train queue's polling waits for its job slot; the generate queue's polls Redis all along.
        assert re.search(r"queue \w+: Redis unreachable", _worker_log(tmp_path)), "the worker's polling noticed"

        redis_server.thaw()
        back = time.monotonic()
        bob.press("A woman", busy)
        bob_progress = await bob.expect("Training queued", within=30)
        faults.timings["Redis answering again to Bob's training queued"] = time.monotonic() - back
        await alice.expect("Your face model is ready!", within=60)
        faults.timings["Redis answering again to Alice's result"] = time.monotonic() - back
        # Bob's training is taken by the worker's new polling and followed by the new subscription.
        await bob.expect_edit(bob_progress, "Training your face model", within=60)
        await bob.expect("Your face model is ready!", within=60)
        faults.timings["Redis answering again to Bob's result"] = time.monotonic() - back
        _assert_done_where_it_ran(faults, alice_job)
    finally:
        redis_server.thaw()  # a failed assertion must not leave the bot's shutdown waiting on it


def _worker_log(tmp_path: Path) -> str:
    return "".join(path.read_text(errors="replace") for path in sorted((tmp_path / "logs").glob("worker-*.log")))


async def test_a_restarted_bot_goes_on_editing_the_progress_message(
    api: FakeBotApi, redis_url: str, tmp_path: Path, alice: TgUser
) -> None:
    faults = _faults(api, redis_url, tmp_path)
    try:
        await faults.start_bot()
        faults.workers.start(FACECHAIN_TEST_STEP_S="4")
        await alice.ask_to_train()
        progress = await alice.expect("Training queued")
        await alice.expect_edit(progress, "33%", within=30)

        await faults.stop_bot()
        await faults.start_bot()
        restarted = len(progress.edits)
        # Notes published while the bot was down are lost (pub/sub); the next ones edit the same message.
        await api.wait_for(
            lambda: any("Training your face model" in text for _, text in progress.edits[restarted:]),
            30,
            "a progress edit after the restart",
        )
        await alice.expect_edit(progress, "Training done.", within=30)
        await alice.expect("Your face model is ready!")
        shown_progress = [m for m in alice.replies if any("Training your face model" in text for text in m.history)]
        assert shown_progress == [progress], "no second progress message: the old one was edited"
    finally:
        await _shut_down(faults)
