"""The whole bot process against the fake Bot API server: run_bot (adapter, service, real SQLite, real
Redis, the outcome worker) plus real arq GPU workers whose stages are scripted (see gpu.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.app import run_bot
from bot.config import BotSettings
from bot.up import free_port
from pipeline.aio import cancel_all
from pipeline.config import WorkerSettings
from pipeline.worker import StageRunner, run_worker
from storage.blobs import LocalBlobStore
from tests.bot_loop import bot_loop_factories
from tests.telegram.fake_bot_api import FakeBotApi
from tests.telegram.gpu import ScriptedGpu
from tests.telegram.users import TgUser

#: A token in Telegram's format; tests assert it never shows up in a log record.
TOKEN = "5550001234:AAH-fake_TOKEN-for-tests-0123456789abcd"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "bot_settings(**fields): BotSettings fields for the bot under test")
    config.addinivalue_line("markers", "gpus(n): how many GPU workers serve the queues (default 1)")
    config.addinivalue_line("markers", "real_gpu: the real pipeline stages on a tiny model instead of scripted ones")


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    return bot_loop_factories()


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
        return ScriptedGpu(LocalBlobStore(data_dir / "blobs"))
    from pipeline.runner import PipelineRunner
    from tests.pipeline.tiny import tiny_settings

    settings = tiny_settings(
        request.getfixturevalue("tiny_model_dir"), data_dir.parent, rank_faces=False, nsfw_check=False
    )
    runner: StageRunner = PipelineRunner(settings, LocalBlobStore(settings.blob_dir))
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
        await user.ask_to_train(photos)
        await user.expect("Your face model is ready!", within=20)


def _settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    marker = request.node.get_closest_marker("bot_settings")
    return dict(marker.kwargs) if marker else {}


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Bot settings a test changes: ``@pytest.mark.bot_settings(...)``, or a module's own fixture of this name."""
    return _settings_overrides(request)


@pytest.fixture
async def bot(
    api: FakeBotApi,
    redis_url: str,
    data_dir: Path,
    gpu_runner: StageRunner,
    settings_overrides: dict[str, Any],
    request: pytest.FixtureRequest,
) -> AsyncIterator[Harness]:
    """The bot process and the GPU workers, running until the test ends."""
    settings = BotSettings(
        _env_file=None,
        data_dir=data_dir,
        redis_url=redis_url,
        telegram_token=TOKEN,
        telegram_api_url=api.root,
        **settings_overrides,
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
        if isinstance(gpu_runner, ScriptedGpu):
            gpu_runner.release()
        await cancel_all([bot_task, *workers])


@pytest.fixture
def webhook_secret() -> str:
    """The secret of the ``webhook`` fixture's bot; a module's own fixture of this name changes it."""
    return "s3cret_Token"


@pytest.fixture
def webhook(request: pytest.FixtureRequest, webhook_secret: str) -> str:
    """The bot under test in webhook mode on a free local port: the URL Telegram would post updates to."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram-hook"
    request.node.add_marker(
        pytest.mark.bot_settings(
            telegram_webhook_url=url,
            telegram_webhook_listen=f"127.0.0.1:{port}",
            telegram_webhook_secret=webhook_secret,
        )
    )
    return url


@pytest.fixture
def alice(api: FakeBotApi) -> Iterator[TgUser]:
    yield TgUser(api, 1001, "Alice")
