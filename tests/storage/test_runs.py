from __future__ import annotations

import json

import pytest

from storage.errors import Conflict, NotFound
from storage.models import Delivery, Platform, RunKind, RunStatus
from storage.repositories import Repositories
from tests.storage.conftest import FakeClock

TG = Delivery(Platform.TELEGRAM, chat_id="-100123")


async def test_create_and_read_back(repos: Repositories, clock: FakeClock) -> None:
    ada = await repos.users.get_or_create(Platform.TELEGRAM, "1")
    model = await repos.models.create(ada.id, None)
    community = await repos.communities.get_or_create(Platform.DISCORD, "guild-1")
    delivery = Delivery(Platform.DISCORD, "chan-9", progress_message_id=None, community_id=community.id)

    run = await repos.runs.create("gen_00000001", ada.id, RunKind.GENERATE, delivery, model.id, "noir", 4)

    assert (run.status, run.attempt, run.progress, run.stage) == (RunStatus.QUEUED, 1, 0.0, None)
    assert (run.kind, run.model_id, run.style, run.count) == (RunKind.GENERATE, model.id, "noir", 4)
    assert run.delivery == delivery
    # Read back as the types they are, not the text they are stored as (a user's /status shows them).
    assert (type(run.kind), type(run.status), type(run.delivery.platform)) == (RunKind, RunStatus, Platform)
    assert (run.created_at, run.started_at, run.finished_at) == (clock.now, None, None)
    assert await repos.runs.get("gen_00000001") == run
    assert await repos.runs.get("missing_1") is None

    await repos.runs.set_progress_message("gen_00000001", "msg-77")
    again = await repos.runs.get("gen_00000001")
    assert again is not None and again.delivery.progress_message_id == "msg-77"
    with pytest.raises(NotFound):
        await repos.runs.set_progress_message("missing_1", "x")


async def test_run_ids_are_unique_and_models_are_the_users_own(repos: Repositories) -> None:
    ada = await repos.users.get_or_create(Platform.TELEGRAM, "1")
    bob = await repos.users.get_or_create(Platform.TELEGRAM, "2")
    bobs_model = await repos.models.create(bob.id, None)
    await repos.runs.create("train_0000001", ada.id, RunKind.TRAIN, TG)
    with pytest.raises(Conflict, match="already used"):
        await repos.runs.create("train_0000001", ada.id, RunKind.TRAIN, TG)
    with pytest.raises(Conflict, match="another user"):
        await repos.runs.create("gen_0000002", ada.id, RunKind.GENERATE, TG, model_id=bobs_model.id)
    with pytest.raises(NotFound):
        await repos.runs.create("gen_0000003", 9999, RunKind.GENERATE, TG)


async def test_finish_is_idempotent(repos: Repositories, clock: FakeClock) -> None:
    ada = await repos.users.get_or_create(Platform.TELEGRAM, "1")
    await repos.runs.create("gen_00000001", ada.id, RunKind.GENERATE, TG)
    started = clock.now
    assert await repos.runs.mark_running("gen_00000001") is True
    assert await repos.runs.mark_running("gen_00000001") is False
    clock.advance(seconds=30)
    assert await repos.runs.update_progress("gen_00000001", "generating", 0.5)

    assert await repos.runs.finish("gen_00000001", RunStatus.DONE) is True
    done = await repos.runs.get("gen_00000001")
    # The same outcome delivered again, or a late failure/cancel: nothing changes.
    assert await repos.runs.finish("gen_00000001", RunStatus.DONE) is False
    assert await repos.runs.finish("gen_00000001", RunStatus.FAILED, "internal", "boom") is False
    assert await repos.runs.finish("gen_00000001", RunStatus.CANCELLED) is False
    assert await repos.runs.update_progress("gen_00000001", "ranking", 0.9) is False
    assert await repos.runs.get("gen_00000001") == done
    assert done is not None
    assert (done.status, done.progress, done.error_code) == (RunStatus.DONE, 1.0, None)
    assert (done.started_at, done.finished_at) == (started, clock.now)

    with pytest.raises(ValueError, match="terminal"):
        await repos.runs.finish("gen_00000001", RunStatus.RUNNING)
    assert await repos.runs.finish("missing_1", RunStatus.DONE) is False


async def test_failure_keeps_the_error_and_progress(repos: Repositories) -> None:
    ada = await repos.users.get_or_create(Platform.TELEGRAM, "1")
    await repos.runs.create("train_0000001", ada.id, RunKind.TRAIN, TG)
    # The first progress note is the sign a queued run started; progress is clamped to 0-1.
    assert await repos.runs.update_progress("train_0000001", "training", 1.7)
    running = await repos.runs.get("train_0000001")
    assert running is not None and (running.status, running.progress) == (RunStatus.RUNNING, 1.0)
    assert running.started_at is not None
    await repos.runs.update_progress("train_0000001", "training", 0.25)
    assert await repos.runs.finish("train_0000001", RunStatus.FAILED, "no_face", "no face in 5 photos")
    failed = await repos.runs.get("train_0000001")
    assert failed is not None
    assert (failed.status, failed.progress, failed.stage) == (RunStatus.FAILED, 0.25, "training")
    assert (failed.error_code, failed.error_message) == ("no_face", "no face in 5 photos")
    with pytest.raises(ValueError):
        await repos.runs.update_progress("train_0000001", None, float("nan"))


async def test_a_lost_attempt_restarts_once_and_an_ended_run_never(repos: Repositories) -> None:
    ada = await repos.users.get_or_create(Platform.TELEGRAM, "1")
    request = '{"run_id": "train_0000001", "kind": "train"}'
    await repos.runs.create("train_0000001", ada.id, RunKind.TRAIN, TG, request=request)
    await repos.runs.update_progress("train_0000001", "training", 0.4)

    assert await repos.runs.restart("train_0000001", attempt=1) == 2
    assert await repos.runs.restart("train_0000001", attempt=1) is None, "a second caller finds it restarted"
    retried = await repos.runs.get("train_0000001")
    assert retried is not None
    assert (retried.status, retried.attempt, retried.progress, retried.stage, retried.started_at) == (
        RunStatus.QUEUED,
        2,
        0.0,
        None,
        None,
    )
    assert retried.request == request, "the same request goes out again"
    assert await repos.runs.restart("train_0000001", attempt=2) == 3
    await repos.runs.finish("train_0000001", RunStatus.FAILED, "worker_lost")
    assert await repos.runs.restart("train_0000001", attempt=3) is None
    ended = await repos.runs.get("train_0000001")
    assert ended is not None and (ended.status, ended.attempt) == (RunStatus.FAILED, 3)
    assert await repos.runs.restart("missing_1", attempt=1) is None


async def test_active_runs_and_queue_positions(repos: Repositories, clock: FakeClock) -> None:
    ada = await repos.users.get_or_create(Platform.TELEGRAM, "1")
    bob = await repos.users.get_or_create(Platform.TELEGRAM, "2")
    for run_id, user, kind in [
        ("a_train_001", ada, RunKind.TRAIN),
        ("b_gen_00001", bob, RunKind.GENERATE),
        ("a_gen_00001", ada, RunKind.GENERATE),
        ("b_gen_00002", bob, RunKind.GENERATE),
        ("a_gen_00002", ada, RunKind.GENERATE),
    ]:
        await repos.runs.create(run_id, user.id, kind, TG)
        clock.advance(seconds=1)
    await repos.runs.mark_running("b_gen_00001")
    await repos.runs.finish("a_gen_00002", RunStatus.CANCELLED)

    assert [r.id for r in await repos.runs.active(ada.id)] == ["a_train_001", "a_gen_00001"]
    assert [r.id for r in await repos.runs.active_all()] == [
        "a_train_001",
        "b_gen_00001",
        "a_gen_00001",
        "b_gen_00002",
    ]
    assert [r.id for r in await repos.runs.by_status(RunStatus.QUEUED)] == [
        "a_train_001",
        "a_gen_00001",
        "b_gen_00002",
    ]
    assert [r.id for r in await repos.runs.by_status(RunStatus.CANCELLED)] == ["a_gen_00002"]
    assert await repos.runs.count_active() == {
        (RunKind.TRAIN, RunStatus.QUEUED): 1,
        (RunKind.GENERATE, RunStatus.QUEUED): 2,
        (RunKind.GENERATE, RunStatus.RUNNING): 1,
    }, "the metrics' runs in flight: ended runs are not counted"
    # Positions count queued runs of the same kind ahead: running and ended ones do not wait.
    assert await repos.runs.queue_position("a_train_001") == 1
    assert await repos.runs.queue_position("a_gen_00001") == 1
    assert await repos.runs.queue_position("b_gen_00002") == 2
    assert await repos.runs.queue_position("b_gen_00001") is None
    assert await repos.runs.queue_position("a_gen_00002") is None
    assert await repos.runs.queue_position("missing_1") is None


async def test_a_style_file_is_in_use_while_a_run_that_loads_it_is_active(repos: Repositories) -> None:
    ada = await repos.users.get_or_create(Platform.TELEGRAM, "1")
    file = "communities/1/styles/noir-a1.safetensors"
    await repos.runs.create("g_noir_0001", ada.id, RunKind.GENERATE, TG, request=json.dumps({"lora_key": file}))
    assert await repos.runs.active_using(file)
    assert not await repos.runs.active_using("communities/1/styles/noir-a"), "a key that only starts the same"
    await repos.runs.finish("g_noir_0001", RunStatus.DONE)
    assert not await repos.runs.active_using(file), "an ended run loads nothing any more"
