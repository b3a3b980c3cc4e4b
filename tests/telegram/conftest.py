"""The whole bot process against the fake Bot API server: run_bot (adapter, service, real SQLite, real
Redis, the outcome worker) plus real arq GPU workers whose stages are scripted (see gpu.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.app import loop_factory, run_bot
from bot.config import BotSettings
from pipeline.config import WorkerSettings
from pipeline.worker import StageRunner, run_worker
from storage.blobs import BlobStore
from tests.telegram.fake_bot_api import FakeBotApi
from tests.telegram.gpu import ScriptedGpu
from tests.telegram.media import face_photos
from tests.telegram.users import TgUser

#: A token in Telegram's format; tests assert it never shows up in a log record.
TOKEN = "5550001234:AAH-fake_TOKEN-for-tests-0123456789abcd"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "bot_settings(**fields): BotSettings fields for the bot under test")
    config.addinivalue_line("markers", "gpus(n): how many GPU workers serve the queues (default 1)")
    config.addinivalue_line("markers", "real_gpu: the real pipeline stages on a tiny model instead of scripted ones")


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    """These tests run on the bot process's own loop (``bot.app.loop_factory``: uvloop when switched on),
    asyncio's with ``FACECHAIN_UVLOOP=false``."""
    factory = loop_factory(BotSettings(_env_file=None))
    return {"uvloop": factory} if factory is not None else {"asyncio": asyncio.new_event_loop}


@pytest.fixture
async def api() -> AsyncIterator[FakeBotApi]:
    async with FakeBotApi(TOKEN) as server:
        yield server


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def gpu_runner(data_dir: Path, request: pytest.FixtureRequest) -> StageRunner:
    """The GPU stages behind the real worker: scripted (fast), or with ``@pytest.mark.real_gpu`` the real
    pipeline on a tiny SD model (the module must import the ``tiny_model_dir`` fixture)."""
    if request.node.get_closest_marker("real_gpu") is None:
        return ScriptedGpu(BlobStore(data_dir / "blobs"))
    from pipeline.runner import PipelineRunner
    from tests.pipeline.tiny import tiny_settings

    settings = tiny_settings(
        request.getfixturevalue("tiny_model_dir"), data_dir.parent, rank_faces=False, nsfw_check=False
    )
    runner: StageRunner = PipelineRunner(settings, BlobStore(settings.blob_dir))
    return runner


@dataclass
class Harness:
    api: FakeBotApi
    settings: BotSettings
    gpu: Any
    bot_task: asyncio.Task[None]

    def user(self, user_id: int, name: str) -> TgUser:
        return TgUser(self.api, user_id, name)

    async def train(self, user: TgUser, photos: list[bytes] | None = None) -> None:
        """The shortest way to a ready face model (private chat)."""
        user.say("/train")
        await user.expect("Send me")
        user.send_photos(photos or face_photos(3))
        await user.expect("Got ")
        user.say("/done")
        await user.expect("Who is in these photos?")
        user.press("A woman")
        await user.expect("Your face model is ready!", within=20)


def _settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    marker = request.node.get_closest_marker("bot_settings")
    return dict(marker.kwargs) if marker else {}


@pytest.fixture
async def bot(
    api: FakeBotApi, redis_url: str, data_dir: Path, gpu_runner: StageRunner, request: pytest.FixtureRequest
) -> AsyncIterator[Harness]:
    """The bot process and the GPU workers, running until the test ends."""
    settings = BotSettings(
        _env_file=None,
        data_dir=data_dir,
        redis_url=redis_url,
        telegram_token=TOKEN,
        telegram_api_url=api.root,
        **_settings_overrides(request),
    )
    worker_settings = WorkerSettings(
        _env_file=None,
        data_dir=data_dir,
        redis_url=redis_url,
        train_timeout_s=60,
        generate_timeout_s=60,
    )
    gpus_marker = request.node.get_closest_marker("gpus")
    gpus = gpus_marker.args[0] if gpus_marker else 1
    bot_task = asyncio.create_task(run_bot(settings), name="bot")
    workers = [
        asyncio.create_task(run_worker(worker_settings, ctx={"runner": gpu_runner}), name=f"gpu{i}")
        for i in range(gpus)
    ]
    try:
        await api.wait_for(
            lambda: api.calls_of("getUpdates") or api.webhook or bot_task.done(), 15, "the bot to serve updates"
        )
        if bot_task.done():
            bot_task.result()
        yield Harness(api, settings, gpu_runner, bot_task)
    finally:
        if isinstance(gpu_runner, ScriptedGpu) and gpu_runner.hold is not None:
            gpu_runner.hold.set()
        for task in [bot_task, *workers]:
            task.cancel()
        for task in [bot_task, *workers]:
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.fixture
def alice(api: FakeBotApi) -> Iterator[TgUser]:
    yield TgUser(api, 1001, "Alice")
