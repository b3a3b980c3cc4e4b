"""The whole bot behind the fake Discord: the real service stack (SQLite file, blob store, Redis, the
bot's outcome worker and progress listener, the Discord adapter) and a GPU worker (arq, real) whose
stages are either the real :class:`~pipeline.runner.PipelineRunner` on a tiny model or
:class:`ScriptedRunner`. The bot can be stopped and started again on the same files (a restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from bot.app import background_tasks, bot_runtime
from bot.config import BotSettings
from bot.core import texts
from bot.discord_adapter import DiscordOptions, run_discord
from pipeline import jobs
from pipeline.aio import cancel_all
from pipeline.config import WorkerSettings
from pipeline.worker import StageControl, run_worker
from storage.blobs import BlobStore, LocalBlobStore
from tests.discord.fake_discord import TOKEN, FakeDiscord, Interaction, Message, Upload, User
from tests.scripted_stages import NothingInBackground, trained_outcome


def jpeg(seed: int, size: int = 96) -> bytes:
    """A small, distinct JPEG (the bot stores any image; ScriptedRunner never looks at faces)."""
    rng = random.Random(seed)
    image = Image.new("RGB", (size, size), tuple(rng.randrange(256) for _ in range(3)))
    for _ in range(60):
        image.putpixel((rng.randrange(size), rng.randrange(size)), tuple(rng.randrange(256) for _ in range(3)))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG")
    return buffer.getvalue()


def noisy_png(seed: int, size: int = 256) -> bytes:
    """A PNG of noise: large for its size, as an uncompressed portrait would be."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", (size, size), bytes(rng.randrange(256) for _ in range(size * size * 3)))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


#: Adapter knobs for tests: the real answer deadline, a throttle short enough for fast tests.
OPTIONS = DiscordOptions(answer_within_s=1.5, edit_interval_s=0.5)


def bot_settings(fake: FakeDiscord, tmp_path: Path, redis_url: str, **overrides: Any) -> BotSettings:
    """Bot settings pointing at the fake Discord, with small limits (2 portraits by default)."""
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "redis_url": redis_url,
        "discord_token": TOKEN,
        "discord_api_url": fake.api_url,
        "min_photos": 3,
        "max_photos": 10,
        "default_count": 2,
        "max_count": 4,
        "candidates": 2,
        "daily_generations": None,
    }
    values.update(overrides)
    return BotSettings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class ScriptedRunner(NothingInBackground):
    """Stands in for the GPU stages: reports progress and writes small outputs like the real ones do."""

    blobs: BlobStore
    #: "jpeg" or "png" portraits (PNG noise is big: the adapter must re-encode it to fit).
    portrait_format: str = "jpeg"
    calls: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def train(self, request: jobs.TrainRequest, control: StageControl) -> jobs.TrainOutcome:
        with self.lock:
            self.calls.append(f"train:{request.run_id}")
        for step in range(3):
            control.report(jobs.Stage.TRAINING, (step + 1) / 3, "")
        return trained_outcome(request, self.blobs, ("template.png", b"template"), list(request.photo_keys))

    def generate(self, request: jobs.GenerateRequest, control: StageControl) -> jobs.GenerateOutcome:
        with self.lock:
            self.calls.append(f"generate:{request.run_id}")
        control.report(jobs.Stage.GENERATING, 0.5, "")
        portraits = []
        for i in range(request.count):
            if self.portrait_format == "png":
                key, data = f"{jobs.run_prefix(request.run_id)}/portrait_{i}.png", noisy_png(seed=i)
            else:
                key, data = f"{jobs.run_prefix(request.run_id)}/portrait_{i}.jpg", jpeg(seed=100 + i)
            self.blobs.put_bytes(key, data)
            portraits.append(jobs.Portrait(key=key, seed=1000 + i, score=0.9 - i / 10))
        return jobs.GenerateOutcome(run_id=request.run_id, style=request.style.name, portraits=portraits)


@dataclass
class Stack:
    """The bot process and a GPU worker around one fake Discord."""

    fake: FakeDiscord
    settings: BotSettings
    worker_settings: WorkerSettings
    runner: Any
    options: DiscordOptions
    _bot: contextlib.AsyncExitStack | None = None
    _bot_tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    _workers: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def blobs(self) -> BlobStore:
        return LocalBlobStore(self.settings.blob_dir)

    async def start_bot(self) -> None:
        """Start the bot process's parts (as ``bot.app.run_bot`` does) and wait for the gateway."""
        identified = len(self.fake.identifies)
        stack = contextlib.AsyncExitStack()
        runtime = await stack.enter_async_context(bot_runtime(self.settings))
        self._bot_tasks = [
            *background_tasks(runtime),
            asyncio.create_task(
                run_discord(self.settings, runtime.service, runtime.blobs, options=self.options), name="discord"
            ),
        ]
        self._bot = stack
        await self.fake.wait_for(
            lambda: len(self.fake.identifies) > identified and self.fake.ready, 20.0, "IDENTIFY and READY"
        )

    async def stop_bot(self) -> None:
        await cancel_all(self._bot_tasks)
        results = [t.exception() if not t.cancelled() else asyncio.CancelledError() for t in self._bot_tasks]
        self._bot_tasks = []
        if self._bot is not None:
            await self._bot.aclose()
            self._bot = None
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result

    async def start_worker(self, copies: int = 1) -> None:
        """Start ``copies`` more GPU workers (one per GPU in production; each takes a job at a time)."""
        ctx = {"runner": self.runner, "blobs": self.runner.blobs}
        for _ in range(copies):
            name = f"gpu-worker-{len(self._workers)}"
            self._workers.append(asyncio.create_task(run_worker(self.worker_settings, ctx=ctx), name=name))

    async def stop_worker(self) -> None:
        await cancel_all(self._workers)
        self._workers = []

    async def close(self) -> None:
        await self.stop_worker()
        await self.stop_bot()

    async def __aenter__(self) -> Stack:
        """The bot and one GPU worker started; both stopped when the block ends."""
        await self.start_bot()
        await self.start_worker()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---------------------------------------------------------------------------- user journeys
    async def train_in_dm(
        self, user: User, photos: Sequence[Upload], *, subject: str = "A woman", wait_s: float = 30.0
    ) -> Message:
        """/train (modal with the photos), /done, who-is-it button; wait for "model ready"; return it."""
        await self.ask_to_train_in_dm(user, photos, subject=subject)
        dm = self.fake.dm_channel(user)
        return await self.fake.wait_message(user, dm, texts.model_ready(has_styles=True)[:20], wait_s)

    async def ask_to_train_in_dm(self, user: User, photos: Sequence[Upload], *, subject: str = "A woman") -> None:
        """/train (modal with the photos), /done, who-is-it button: the training is asked for."""
        train = await self.fake.slash(user, "train")
        await self.fake.wait_for(lambda: train.modal, 5.0, "the upload modal")
        submitted = await self.fake.submit_modal(train, list(photos))
        await self.fake.wait_for(lambda: any("Got " in t for t in submitted.texts()), 10.0, "photos saved")
        done = await self.fake.slash(user, "done")
        question = await self.fake.wait_for(lambda: _with_buttons(done), 10.0, "the subject question")
        await self.fake.press(user, question, subject)

    async def generate_in(
        self, user: User, channel: int, style: str, count: int, *, wait_s: float = 20.0
    ) -> tuple[Interaction, Message]:
        """/generate in a server channel; return the interaction and the message with the portraits."""
        before = {m.id for m in self.fake.channel_messages(channel)}
        asked = await self.fake.slash(user, "generate", channel, style=style, count=count)
        photos = await self.fake.wait_for(
            lambda: next(
                (
                    m
                    for m in self.fake.channel_messages(channel)
                    if m.id not in before and m.files and style in m.content
                ),
                None,
            ),
            wait_s,
            f"portraits in {style}",
        )
        return asked, photos


def scripted_stack(
    fake: FakeDiscord, settings: BotSettings, runner: Callable[[BlobStore], Any] = ScriptedRunner
) -> Stack:
    """The bot of ``settings`` and a GPU worker on its data directory and Redis, whose stages are
    ``runner`` (scripted by default) on the bot's blob store."""
    worker = WorkerSettings(_env_file=None, data_dir=settings.data_dir, redis_url=settings.redis_url)  # type: ignore[call-arg]
    return Stack(fake, settings, worker, runner(LocalBlobStore(settings.blob_dir)), OPTIONS)


def _with_buttons(interaction: Interaction) -> Message | None:
    return next((m for m in interaction.messages() if m.components), None)
