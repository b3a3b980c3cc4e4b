"""The queue, both ways, against a real Redis, real arq workers in burst mode and a real SQLite file.

Only the GPU stages are replaced (by :class:`ScriptedRunner`): these tests are about the queue. The
bot side enqueues through the conversation service, a worker consumes the job and sends the outcome
back as a job on the bot's queue, and the bot's outcome worker records it in SQLite and tells the user.
"""

from __future__ import annotations

import asyncio
import io
import random
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from arq.connections import ArqRedis
from PIL import Image

from bot.core import texts
from bot.core.events import ButtonPressed, Command, OfferedFile, PhotosOffered
from bot.core.replies import EditProgress, Photos, ProgressMessage, Reply, Text
from bot.queue import DELIVERY_TRIES, ArqJobQueue, _deliver_outcome, build_outcome_worker, create_redis
from bot.service import ConversationService, Origin, StyleEntry
from bot.supervisor import Action, RunSupervisor, SupervisorSettings
from pipeline import jobs
from pipeline import worker as worker_module
from pipeline.aio import cancel_all
from pipeline.config import WorkerSettings
from pipeline.control import StageControl
from pipeline.worker import run_worker
from storage.blobs import BlobStore, LocalBlobStore
from storage.db import open_database
from storage.models import Delivery, ModelStatus, Platform, RunStatus
from storage.repositories import Repositories
from tests.scripted_stages import NothingInBackground, trained_outcome

STYLES = {
    "Business": StyleEntry(jobs.StyleSpec(name="Business", prompt="a person in a business suit")),
    "Watercolor": StyleEntry(jobs.StyleSpec(name="Watercolor", prompt="watercolor painting")),
}
ALICE = Origin(platform=Platform.TELEGRAM, user_id="1001", chat_id="1001", private=True, display_name="Alice")


@dataclass
class ScriptedRunner(NothingInBackground):
    """Stands in for the GPU stages: writes small outputs to the blob store like the real ones do."""

    blobs: BlobStore
    calls: list[str] = field(default_factory=list)
    #: Block inside the stage until released (to test cancel and timeout of a running job).
    hold: threading.Event | None = None
    started: threading.Event = field(default_factory=threading.Event)

    def hold_next(self) -> None:
        """Block the next stage until ``hold`` is set; ``started`` is set once that stage runs."""
        self.hold, self.started = threading.Event(), threading.Event()

    def _wait(self, control: StageControl) -> None:
        self.started.set()
        while self.hold is not None and not self.hold.is_set():
            control.check()
            self.hold.wait(0.05)

    def train(self, request: jobs.TrainRequest, control: StageControl) -> jobs.TrainOutcome:
        self.calls.append(f"train:{request.run_id}")
        for step in range(3):
            control.report(jobs.Stage.TRAINING, (step + 1) / 3, "")
        self._wait(control)
        assert request.subject is not None
        return trained_outcome(request, self.blobs, ("template.png", b"template"), list(request.photo_keys))

    def generate(self, request: jobs.GenerateRequest, control: StageControl) -> jobs.GenerateOutcome:
        self.calls.append(f"generate:{request.run_id}")
        self._wait(control)
        portraits = []
        for i in range(request.count):
            key = f"{jobs.run_prefix(request.run_id)}/portrait_{i}.jpg"
            self.blobs.put_bytes(key, _jpeg(seed=100 + i))
            portraits.append(jobs.Portrait(key=key, seed=1000 + i, score=0.9 - i / 10))
        return jobs.GenerateOutcome(run_id=request.run_id, style=request.style.name, portraits=portraits)


@dataclass
class RecordingNotifier:
    """The outermost edge on the bot side: what would be sent to the chat platform."""

    sent: list[tuple[Delivery, Reply]] = field(default_factory=list)

    async def deliver(self, delivery: Delivery, replies: Sequence[Reply]) -> Mapping[str, str]:
        ids = {}
        for reply in replies:
            self.sent.append((delivery, reply))
            if isinstance(reply, ProgressMessage):
                ids[reply.run_id] = f"m-{reply.run_id}"
        return ids


def _jpeg(seed: int, size: int = 96) -> bytes:
    rng = random.Random(seed)
    image = Image.new("RGB", (size, size), tuple(rng.randrange(256) for _ in range(3)))
    for _ in range(40):
        x, y = rng.randrange(size), rng.randrange(size)
        image.putpixel((x, y), tuple(rng.randrange(256) for _ in range(3)))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG")
    return buffer.getvalue()


@dataclass
class ServiceClock:
    """The service's wall clock: the real time, moved on by ``ahead`` (the database keeps the real one)."""

    ahead: timedelta = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.ahead


@dataclass
class Bench:
    service: ConversationService
    repos: Repositories
    blobs: BlobStore
    redis: ArqRedis
    notifier: RecordingNotifier
    runner: ScriptedRunner
    settings: WorkerSettings
    redis_url: str
    files: dict[str, bytes]
    clock: ServiceClock

    async def send(self, event: Any, origin: Origin = ALICE) -> list[Reply]:
        async def download(offered: OfferedFile) -> bytes:
            return self.files[offered.ref]

        replies = await self.service.handle(origin, event, download)
        for reply in replies:
            if isinstance(reply, ProgressMessage):
                await self.service.note_progress_message(reply.run_id, f"m-{reply.run_id}")
        return replies

    async def work(self, **ctx: Any) -> None:
        """Run the GPU worker in burst mode until its queues are empty."""
        await asyncio.wait_for(run_worker(self.settings, burst=True, ctx={"runner": self.runner, **ctx}), timeout=60)

    async def deliver(self) -> None:
        """Run the bot's outcome worker in burst mode until the bot queue is empty."""
        worker = build_outcome_worker(self.redis_url, self.service.on_outcome, burst=True)
        try:
            await asyncio.wait_for(worker.async_run(), timeout=30)
        finally:
            await worker.close()

    async def train_alice(self) -> str:
        await self.send(Command("train"))
        self.files.update({f"p{i}": _jpeg(seed=i) for i in range(4)})
        offered = tuple(OfferedFile(ref=f"p{i}", size=len(self.files[f"p{i}"]), mime="image/jpeg") for i in range(4))
        await self.send(PhotosOffered(files=offered))
        await self.send(Command("done"))
        replies = await self.send(ButtonPressed("subject", "woman"))
        progress = [r for r in replies if isinstance(r, ProgressMessage)]
        assert len(progress) == 1, replies
        return progress[0].run_id


@pytest.fixture
async def bench(tmp_path: Path, redis_url: str) -> AsyncIterator[Bench]:
    db = await open_database(tmp_path / "data" / "facechain.sqlite3")
    redis = await create_redis(redis_url)
    blobs = LocalBlobStore(tmp_path / "data" / "blobs")
    repos = Repositories(db)
    clock = ServiceClock()
    service = ConversationService(
        repos, blobs, ArqJobQueue(redis), STYLES, WorkerSettingsLimits, candidates=4, clock=clock
    )
    notifier = RecordingNotifier()
    service.register_notifier(Platform.TELEGRAM, notifier)
    settings = WorkerSettings(data_dir=tmp_path / "data", redis_url=redis_url, generate_timeout_s=10)
    try:
        yield Bench(service, repos, blobs, redis, notifier, ScriptedRunner(blobs), settings, redis_url, {}, clock)
    finally:
        await redis.aclose()
        await db.close()


from bot.core.limits import Limits  # noqa: E402

WorkerSettingsLimits = Limits(min_photos=3, max_photos=10, default_count=2, max_count=4)


async def test_train_then_generate_round_trip(bench: Bench) -> None:
    run_id = await bench.train_alice()
    queued = await bench.repos.runs.get(run_id)
    assert queued is not None and queued.status is RunStatus.QUEUED

    await bench.work()
    assert bench.runner.calls == [f"train:{run_id}"]
    await bench.deliver()

    run = await bench.repos.runs.get(run_id)
    assert run is not None and run.status is RunStatus.DONE
    model = await bench.repos.models.latest_ready(run.user_id)
    assert model is not None and model.status is ModelStatus.READY
    assert model.lora_key == f"runs/{run_id}/face_lora.safetensors"
    assert model.trigger == "<fcsks>, a beautiful woman"
    told = [r for _, r in bench.notifier.sent]
    assert any(isinstance(r, EditProgress) and r.final and r.run_id == run_id for r in told)
    assert any(isinstance(r, Text) and r.buttons for r in told), "the user is offered styles when ready"

    replies = await bench.send(Command("generate", ("Watercolor", "3")))
    gen_id = next(r.run_id for r in replies if isinstance(r, ProgressMessage))
    await bench.work()
    await bench.deliver()
    photos = [r for _, r in bench.notifier.sent if isinstance(r, Photos)]
    assert len(photos) == 1 and len(photos[0].keys) == 3
    assert all(bench.blobs.exists(k) for k in photos[0].keys)
    assert "Watercolor" in photos[0].caption
    stored = await bench.repos.portraits.for_run(gen_id)
    assert [p.seed for p in stored] == [1000, 1001, 1002]
    gen = await bench.repos.runs.get(gen_id)
    assert gen is not None and gen.status is RunStatus.DONE


async def test_a_worker_closes_the_stages_it_loaded_and_leaves_those_handed_in_open(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real stages warm up and compile in threads that must end before the process does; a runner
    # handed in belongs to its owner, who may give it to the next worker.
    loaded = ScriptedRunner(bench.blobs)
    monkeypatch.setattr(worker_module, "build_runner", lambda settings, blobs: loaded)
    await bench.train_alice()
    await asyncio.wait_for(run_worker(bench.settings, burst=True, ctx={"blobs": bench.blobs}), timeout=60)
    assert loaded.calls and loaded.closes == 1

    await bench.work()
    assert bench.runner.closes == 0


@dataclass
class SlowToClose(ScriptedRunner):
    """Its background work takes a moment to end (a warm-up finishing its graph capture)."""

    closed: threading.Event = field(default_factory=threading.Event)

    def close(self, wait_s: float) -> list[str]:
        time.sleep(1.5)
        self.closed.set()
        return super().close(wait_s)


async def test_a_worker_cancelled_again_and_again_still_waits_for_its_background_work(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SIGTERM cancels the worker every half second until it ends (bot.graceful): the wait for the
    # background work must not be cut short, or the process exits with a capture still running.
    runner = SlowToClose(bench.blobs)
    monkeypatch.setattr(worker_module, "build_runner", lambda settings, blobs: runner)
    worker = asyncio.create_task(run_worker(bench.settings, ctx={"blobs": bench.blobs}))
    await asyncio.sleep(0.5)
    await cancel_all([worker])
    assert worker.done()
    assert runner.closed.is_set() and runner.closes == 1


async def test_portraits_finished_after_midnight_count_for_the_day_they_were_asked_for(bench: Bench) -> None:
    await bench.train_alice()
    await bench.work()
    await bench.deliver()
    asked_on = datetime.now(UTC).date()
    await bench.send(Command("generate", ("watercolor", "1")))
    bench.clock.ahead = timedelta(days=1)  # the portraits arrive after midnight (UTC)
    await bench.work()
    await bench.deliver()
    user = await bench.repos.users.find(Platform.TELEGRAM, ALICE.user_id)
    assert user is not None
    charged = [await bench.repos.usage.count_user(user.id, asked_on + timedelta(days=d)) for d in (0, 1)]
    assert charged == [1, 0], "tomorrow's limit is whole"


async def test_a_job_run_twice_does_the_work_once_and_the_result_is_recorded_once(bench: Bench) -> None:
    run_id = await bench.train_alice()
    await bench.work()
    # arq runs a job at least once: enqueue the very same payload again under a new attempt id.
    request = jobs.TrainRequest(
        run_id=run_id, user_id=1, model_id=1, photo_keys=["users/1/photos/1/x"], subject=jobs.Subject.WOMAN
    )
    await ArqJobQueue(bench.redis).submit(request, attempt=2)
    await bench.work()
    assert bench.runner.calls == [f"train:{run_id}"], "the second attempt found the done marker"
    await bench.deliver()
    finals = [r for _, r in bench.notifier.sent if isinstance(r, EditProgress) and r.final]
    assert len(finals) == 1


async def test_a_malformed_job_is_answered_with_bad_payload_and_nothing_is_lost(bench: Bench) -> None:
    run_id = await bench.train_alice()
    # Corrupt the queued job's payload the way a buggy or forged producer would.
    await bench.redis.enqueue_job(
        jobs.GENERATE_JOB, {"run_id": run_id, "kind": "generate", "count": "lots"},
        _queue_name=jobs.GENERATE_QUEUE, _job_id="forged.1",
    )  # fmt: skip
    await bench.work()
    await bench.deliver()
    # The forged job reported bad_payload for the run it named; that outcome did not match the run's
    # kind and was dropped, and the real training's outcome still got through.
    run = await bench.repos.runs.get(run_id)
    assert run is not None and run.status is RunStatus.DONE
    assert bench.runner.calls == [f"train:{run_id}"]


async def test_cancel_a_queued_training_never_reaches_the_gpu(bench: Bench) -> None:
    run_id = await bench.train_alice()
    replies = await bench.send(Command("cancel"))
    # A queued run has no worker to wait for: it is stopped at once, and the user reads so at once. Each
    # edit says where the run's progress message is, for an adapter that restarted since it sent it.
    where = ("1001", f"m-{run_id}")
    assert replies == [
        Text("Cancelling 1 job…"),
        EditProgress(run_id, "Cancelling…", stored_at=where),
        EditProgress(run_id, "Training stopped.", final=True, stored_at=where),
        Text(texts.train_cancelled()),
    ]
    run = await bench.repos.runs.get(run_id)
    assert run is not None and run.status is RunStatus.CANCELLED
    await bench.work()
    assert bench.runner.calls == []
    # The photos are kept: the user can /done again.
    state_replies = await bench.send(Command("status"))
    status = "\n".join(r.text for r in state_replies if isinstance(r, Text))
    assert "Face model: none yet" in status and "Photo set: 4 of 10" in status, status


async def test_cancel_a_running_training_stops_the_stage(bench: Bench) -> None:
    bench.runner.hold_next()
    run_id = await bench.train_alice()
    worker = asyncio.create_task(bench.work())
    await asyncio.to_thread(bench.runner.started.wait, 10)
    await bench.send(Command("cancel"))
    await asyncio.wait_for(worker, 30)
    await bench.deliver()
    run = await bench.repos.runs.get(run_id)
    assert run is not None and run.status is RunStatus.CANCELLED
    assert run.error_code == jobs.ErrorCode.CANCELLED.value


async def test_a_stage_over_its_timeout_is_stopped_and_reported(bench: Bench) -> None:
    bench.runner.hold_next()
    bench.settings = bench.settings.model_copy(update={"train_timeout_s": 1})
    run_id = await bench.train_alice()
    await bench.work()
    await bench.deliver()
    run = await bench.repos.runs.get(run_id)
    assert run is not None and run.status is RunStatus.FAILED
    assert run.error_code == jobs.ErrorCode.TIMEOUT.value
    told = [r for _, r in bench.notifier.sent if isinstance(r, Text)]
    assert told, "the user hears that training failed"


@dataclass
class HungRunner(ScriptedRunner):
    """A training stuck in a call that never checks its control (a hung GPU, a read without timeout)."""

    unstuck: threading.Event = field(default_factory=threading.Event)

    def train(self, request: jobs.TrainRequest, control: StageControl) -> jobs.TrainOutcome:
        self.started.set()
        self.unstuck.wait(60)
        raise RuntimeError("unstuck at last")


async def test_a_stage_that_ignores_its_stop_fails_its_run_and_the_worker_leaves_to_be_restarted(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_module, "STAGE_STOP_GRACE_S", 0.5)
    hung = HungRunner(bench.blobs)
    bench.settings = bench.settings.model_copy(update={"train_timeout_s": 1})
    run_id = await bench.train_alice()
    try:
        with pytest.raises(worker_module.WorkerWedged, match=f"the train stage of run {run_id} did not stop"):
            await asyncio.wait_for(run_worker(bench.settings, ctx={"runner": hung}), 30)
        await bench.deliver()
        run = await bench.repos.runs.get(run_id)
        assert run is not None and run.status is RunStatus.FAILED
        assert run.error_code == jobs.ErrorCode.TIMEOUT.value, "the user is told it took too long"
    finally:
        hung.unstuck.set()


@dataclass
class FlakyNotifier(RecordingNotifier):
    """The chat platform is down for the first ``failures`` sends."""

    failures: int = 1

    async def deliver(self, delivery: Delivery, replies: Sequence[Reply]) -> Mapping[str, str]:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("platform unreachable")
        return await super().deliver(delivery, replies)


async def test_a_result_that_could_not_be_sent_is_sent_when_the_platform_is_back(bench: Bench) -> None:
    flaky = FlakyNotifier(failures=1)
    bench.service.register_notifier(Platform.TELEGRAM, flaky)
    run_id = await bench.train_alice()
    await bench.work()
    # The outcome worker's first send fails; arq runs the job again a few seconds later.
    await bench.deliver()
    assert flaky.failures == 0
    finals = [r for _, r in flaky.sent if isinstance(r, EditProgress) and r.final]
    assert len(finals) == 1, "delivered once, after the platform came back"
    run = await bench.repos.runs.get(run_id)
    assert run is not None and run.delivered_at is not None


async def test_portraits_the_platform_never_took_after_every_try_are_not_charged(bench: Bench) -> None:
    await bench.train_alice()
    await bench.work()
    await bench.deliver()
    down = FlakyNotifier(failures=DELIVERY_TRIES)
    bench.service.register_notifier(Platform.TELEGRAM, down)
    [making] = [r for r in await bench.send(Command("generate", ("watercolor", "1"))) if isinstance(r, ProgressMessage)]
    await bench.work()
    run = await bench.repos.runs.get(making.run_id)
    assert run is not None
    outcome = await bench.service.stored_outcome(run)
    assert outcome is not None
    ctx = {"on_outcome": bench.service.on_outcome, "on_given_up": bench.service.delivery_given_up}
    result = await _deliver_outcome({**ctx, "job_try": DELIVERY_TRIES}, outcome.model_dump(mode="json"))
    assert result == "undelivered"
    user = await bench.repos.users.find(Platform.TELEGRAM, ALICE.user_id)
    assert user is not None
    assert await bench.repos.usage.count_user(user.id, datetime.now(UTC).date()) == 0, "nothing shown, nothing charged"
    # A copy of the outcome arq runs once more is not sent an hour later, nor refunded twice.
    down.failures = 0
    await _deliver_outcome({**ctx, "job_try": 1}, outcome.model_dump(mode="json"))
    assert not down.sent
    assert await bench.repos.usage.count_user(user.id, datetime.now(UTC).date()) == 0


# ------------------------------------------------------------------------------ lost jobs, Redis keys
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _supervisor(bench: Bench, clock: Clock, max_attempts: int = 3) -> RunSupervisor:
    queue = ArqJobQueue(bench.redis)
    return RunSupervisor(bench.service, queue, SupervisorSettings(1.0, 30.0, max_attempts), clock=clock)


async def test_a_cancel_that_met_redis_down_reaches_the_queue_after_a_bot_restart(bench: Bench) -> None:
    run_id = await bench.train_alice()  # its job waits in Redis
    dead = await create_redis("redis://127.0.0.1:1/0")
    try:
        down = ConversationService(
            bench.repos, bench.blobs, ArqJobQueue(dead), STYLES, WorkerSettingsLimits, candidates=4, clock=bench.clock
        )
        await down.handle(ALICE, Command("cancel"))  # the run ends; the cancel waits in that bot's memory...
    finally:
        await dead.aclose()
    run = await bench.repos.runs.get(run_id)
    assert run is not None and run.status is RunStatus.CANCELLED
    # ...which a restart loses. The new bot's supervisor finds the job of a cancelled run on its first check.
    await _supervisor(bench, Clock()).check()
    await bench.work()
    assert bench.runner.calls == [], "no GPU time for a training nobody wants"


async def test_a_run_no_worker_ever_takes_fails_uncharged_after_the_wait_and_the_user_is_told(bench: Bench) -> None:
    await bench.train_alice()
    await bench.work()
    await bench.deliver()
    [making] = [r for r in await bench.send(Command("generate", ("watercolor", "1"))) if isinstance(r, ProgressMessage)]
    # The burst worker above is gone; its health key would lapse within 31 s.
    await bench.redis.delete(jobs.worker_health_key("generate"))
    clock = Clock()
    supervisor = RunSupervisor(
        bench.service, ArqJobQueue(bench.redis), SupervisorSettings(1.0, 30.0, 3, no_worker_after_s=600), clock=clock
    )
    assert await supervisor.check() == {}
    clock.now += 599
    assert await supervisor.check() == {}, "a worker may still be starting"
    clock.now += 1
    assert await supervisor.check() == {making.run_id: Action.FAIL_NO_WORKER}
    await bench.deliver()
    run = await bench.repos.runs.get(making.run_id)
    assert run is not None and run.status is RunStatus.FAILED and run.error_code == jobs.ErrorCode.NO_WORKER.value
    told = [r.text for _, r in bench.notifier.sent if isinstance(r, Text)]
    assert any(texts.error_reason(jobs.ErrorCode.NO_WORKER) in text for text in told), told
    user = await bench.repos.users.find(Platform.TELEGRAM, ALICE.user_id)
    assert user is not None and await bench.repos.usage.count_user(user.id, datetime.now(UTC).date()) == 0


async def test_a_run_whose_job_redis_lost_is_submitted_again_and_finishes(bench: Bench) -> None:
    run_id = await bench.train_alice()
    await bench.redis.flushdb()  # a Redis restarted without persistence: every job is gone
    clock = Clock()
    supervisor = _supervisor(bench, clock)
    assert await supervisor.check() == {}, "a vanished job gets its grace first"
    clock.now += 30
    assert await supervisor.check() == {run_id: Action.RESTART}
    restarted = await bench.repos.runs.get(run_id)
    assert restarted is not None and (restarted.status, restarted.attempt) == (RunStatus.QUEUED, 2)
    told = [r for _, r in bench.notifier.sent if isinstance(r, EditProgress) and r.run_id == run_id]
    assert told and "try 2 of 3" in told[-1].text

    await bench.work()
    await bench.deliver()
    done = await bench.repos.runs.get(run_id)
    assert done is not None and (done.status, done.attempt) == (RunStatus.DONE, 2)
    assert await supervisor.check() == {}


async def test_a_finished_run_whose_outcome_was_lost_is_delivered_from_its_done_marker(bench: Bench) -> None:
    run_id = await bench.train_alice()
    await bench.work()
    await bench.redis.delete(jobs.BOT_QUEUE, "arq:job:" + jobs.deliver_job_id(jobs.arq_job_id(run_id, 1)))
    clock = Clock()
    supervisor = _supervisor(bench, clock)
    await supervisor.check()
    clock.now += 31
    assert await supervisor.check() == {run_id: Action.DELIVER_STORED}
    await bench.deliver()
    run = await bench.repos.runs.get(run_id)
    assert run is not None and (run.status, run.attempt, run.delivered_at is not None) == (RunStatus.DONE, 1, True)
    assert bench.runner.calls == [f"train:{run_id}"], "trained once"


async def test_a_run_lost_on_its_last_attempt_fails_and_is_told(bench: Bench) -> None:
    run_id = await bench.train_alice()
    await bench.redis.flushdb()
    clock = Clock()
    supervisor = _supervisor(bench, clock, max_attempts=1)
    await supervisor.check()
    clock.now += 30
    assert await supervisor.check() == {run_id: Action.FAIL}
    await bench.deliver()
    run = await bench.repos.runs.get(run_id)
    assert run is not None and (run.status, run.error_code) == (RunStatus.FAILED, "worker_lost")
    failed = [r.text for _, r in bench.notifier.sent if isinstance(r, Text)]
    assert any("The GPU worker stopped while working on it" in text for text in failed), failed
    assert bench.runner.calls == []


async def test_a_superseded_attempt_stops_and_reports_nothing(bench: Bench) -> None:
    bench.runner.hold_next()
    run_id = await bench.train_alice()
    worker = asyncio.create_task(bench.work())
    await asyncio.to_thread(bench.runner.started.wait, 10)
    await bench.redis.set(jobs.superseded_key(jobs.arq_job_id(run_id, 1)), b"1")
    await asyncio.wait_for(worker, 30)
    assert await bench.redis.zcard(jobs.BOT_QUEUE) == 0, "no outcome sent"
    assert not bench.blobs.exists(jobs.outcome_key(run_id)), "no done marker written"
    run = await bench.repos.runs.get(run_id)
    assert run is not None and run.status.active, "the run waits for its newer attempt"


async def test_nothing_of_a_delivered_run_stays_in_redis(bench: Bench) -> None:
    run_id = await bench.train_alice()
    await bench.work()
    await bench.deliver()
    replies = await bench.send(Command("generate", ("Watercolor", "2")))
    gen_id = next(r.run_id for r in replies if isinstance(r, ProgressMessage))
    await bench.work()
    await bench.deliver()
    bench.runner.hold_next()
    replies = await bench.send(Command("generate", ("Watercolor", "1")))
    cancelled_id = next(r.run_id for r in replies if isinstance(r, ProgressMessage))
    worker = asyncio.create_task(bench.work())
    await asyncio.to_thread(bench.runner.started.wait, 10)
    await bench.send(Command("cancel"))
    await asyncio.wait_for(worker, 30)
    await bench.deliver()

    left: list[str] = []
    async for key in bench.redis.scan_iter():
        text = key.decode()
        kind = await bench.redis.type(key)
        values: list[bytes] = []
        if kind == b"string":
            values = [await bench.redis.get(key) or b""]
        elif kind == b"zset":
            values = await bench.redis.zrange(key, 0, -1)
        if any(r in text or any(r.encode() in v for v in values) for r in (run_id, gen_id, cancelled_id)):
            left.append(text)
    assert left == [], "arq results, flags and heartbeats of delivered runs are gone"
