"""Flood control, server errors and webhook mode: nothing is lost and nothing is sent twice."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import aiohttp
import pytest

from tests.telegram.conftest import TOKEN, Harness
from tests.telegram.fake_bot_api import FakeBotApi
from tests.telegram.gpu import ScriptedGpu
from tests.telegram.users import TgUser

# PTB itself reads the deprecated RetryAfter.retry_after when it builds the exception.
pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")


async def test_a_429_is_waited_out_and_the_message_sent_once(bot: Harness, api: FakeBotApi, alice: TgUser) -> None:
    api.fail_next("sendMessage", 429, retry_after=1)
    alice.say("/start")
    await alice.expect("Hi!")
    attempts = api.calls_of("sendMessage")
    assert len(attempts) == 2 and attempts[1].at - attempts[0].at >= 0.95, "retry_after was honoured"
    assert len(alice.replies) == 1


async def test_a_5xx_while_polling_loses_no_update(bot: Harness, api: FakeBotApi, alice: TgUser) -> None:
    api.fail_next("getUpdates", 500)
    alice.say("/help")
    await alice.expect("What I can do:", within=15)
    assert len(alice.replies) == 1


async def test_errors_while_delivering_results_are_retried(bot: Harness, api: FakeBotApi, alice: TgUser) -> None:
    await bot.train(alice)
    api.fail_next("sendMediaGroup", 502)
    api.fail_next("editMessageText", 429, retry_after=1)
    alice.say("/generate oil_painting 3")
    making = await alice.expect("Making 3 portraits")
    await alice.expect_edit(making, "Done.", within=20)
    await alice.wait_buttons(["More of this style", "Another style"])
    assert len([m for m in alice.replies if m.photo]) == 3, "sent once, after the retry"


async def test_results_wait_out_an_outage_longer_than_the_senders_own_retries(
    bot: Harness, api: FakeBotApi, alice: TgUser
) -> None:
    """The sender tries a call 4 times; when Telegram errs longer, the outcome is delivered again later."""
    await bot.train(alice)
    for _ in range(6):
        api.fail_next("sendMediaGroup", 502)
    alice.say("/generate oil_painting 3")
    making = await alice.expect("Making 3 portraits")
    await alice.expect_edit(making, "Done.", within=20)
    await alice.wait_buttons(["More of this style", "Another style"], within=30)
    assert len(api.calls_of("sendMediaGroup")) == 7, "4 tries, then the outcome again: 2 more failures, 1 success"
    assert len([m for m in alice.replies if m.photo]) == 3, "the portraits arrive, once"


async def test_webhook_mode_takes_updates_with_the_secret_only(
    webhook: str, bot: Harness, api: FakeBotApi, alice: TgUser
) -> None:
    assert api.webhook == {
        "url": webhook,
        "secret_token": "s3cret_Token",
        "allowed_updates": ["message", "callback_query"],
    }
    assert not api.calls_of("getUpdates")
    update = alice.webhook_update("/help")
    async with aiohttp.ClientSession() as http:
        async with http.post(webhook, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"}) as resp:
            assert resp.status == 403
        async with http.post(webhook, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret_Token"}) as resp:
            assert resp.status == 200
    await alice.expect("What I can do:")
    assert len(alice.replies) == 1


async def test_a_rejected_token_stops_the_adapter_with_a_clear_error(api: FakeBotApi, tmp_path: Path) -> None:
    from bot.config import BotSettings
    from bot.telegram_adapter import TelegramAdapter, TelegramStartupError
    from storage.blobs import LocalBlobStore

    wrong = "5550001234:AAH-not-the-right-token-000000000000000"
    settings = BotSettings(
        _env_file=None,
        data_dir=tmp_path / "data",
        telegram_token=wrong,
        telegram_api_url=api.root,
    )
    adapter = TelegramAdapter(settings, service=None, blobs=LocalBlobStore(settings.blob_dir))  # type: ignore[arg-type]
    with pytest.raises(TelegramStartupError) as stopped:
        await asyncio.wait_for(adapter.run(), 10)
    assert wrong not in str(stopped.value) and "FACECHAIN_TELEGRAM_TOKEN" in str(stopped.value)


async def test_a_webhook_port_in_use_stops_the_adapter_with_one_line_naming_the_setting(
    api: FakeBotApi, tmp_path: Path
) -> None:
    import socket
    from types import SimpleNamespace

    from bot.config import BotSettings
    from bot.errors import OperatorError
    from bot.telegram_adapter import TelegramAdapter
    from storage.blobs import LocalBlobStore

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = BotSettings(
            _env_file=None,
            data_dir=tmp_path / "data",
            telegram_token=TOKEN,
            telegram_api_url=api.root,
            telegram_webhook_url="https://bot.example.com/telegram-hook",
            telegram_webhook_listen=f"127.0.0.1:{port}",
        )
        # The adapter stops before it handles any update: the service is never asked for anything else.
        service = SimpleNamespace(register_notifier=lambda platform, notifier: None)
        adapter = TelegramAdapter(settings, service=service, blobs=LocalBlobStore(settings.blob_dir))  # type: ignore[arg-type]
        with pytest.raises(OperatorError) as stopped:
            await asyncio.wait_for(adapter.run(), 20)
    assert f"cannot listen for webhooks on 127.0.0.1:{port}" in str(stopped.value)
    assert "FACECHAIN_TELEGRAM_WEBHOOK_LISTEN" in str(stopped.value)


async def test_portraits_for_a_user_who_blocked_the_bot_meanwhile_are_not_charged(
    bot: Harness, api: FakeBotApi, alice: TgUser
) -> None:
    await bot.train(alice)
    gpu = bot.gpu
    assert isinstance(gpu, ScriptedGpu)
    gpu.hold_generate = threading.Event()
    alice.say("/generate watercolor 1")
    await alice.expect("Making 1 portrait")
    api.started.discard(alice.user_id)  # Alice blocks the bot while her portraits are made
    gpu.release()

    def delivered() -> bool:
        with sqlite3.connect(bot.settings.database_path) as db:
            row = db.execute("SELECT delivered_at FROM runs WHERE kind = 'generate'").fetchone()
        return row is not None and row[0] is not None

    await api.wait_for(delivered, 20, "the outcome to be handled")
    api.started.add(alice.user_id)  # and unblocks it
    alice.say("/status")
    status = await alice.expect("Portrait runs today")
    assert "Portrait runs today: 0 of 20" in status.shown, "portraits nobody saw are not charged"
