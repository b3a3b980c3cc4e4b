"""Starting the Discord side as an operator does: a refused token is one line and exit code 2, the
gateway address may be set to a real ws:// or wss:// URL, and an unreachable Discord is named."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.cli import main
from bot.config import BotSettings
from bot.settings_loader import load_settings
from tests.discord.fake_discord import TOKEN, FakeDiscord
from tests.discord.harness import bot_settings, scripted_stack

WRONG_TOKEN = "wrong-bot-token.Zm9vYmFy.bm90LXRoZS1yaWdodC1vbmU"


def _discord_env(monkeypatch: pytest.MonkeyPatch, env: Path, fake: FakeDiscord, token: str) -> None:
    monkeypatch.setenv("FACECHAIN_DISCORD_TOKEN", token)
    monkeypatch.setenv("FACECHAIN_DISCORD_API_URL", fake.api_url)


def test_the_bot_with_a_refused_token_stops_in_one_line(
    fake_in_thread: FakeDiscord, cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _discord_env(monkeypatch, cli_env, fake_in_thread, WRONG_TOKEN)
    assert main(["bot"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("facechain-bot bot: Discord refused FACECHAIN_DISCORD_TOKEN (401")
    assert WRONG_TOKEN not in err and "Traceback" not in err
    assert "/users/@me" in fake_in_thread.unauthorized, "the token really was tried"


def test_discord_sync_with_a_refused_token_stops_in_one_line(
    fake_in_thread: FakeDiscord, cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _discord_env(monkeypatch, cli_env, fake_in_thread, WRONG_TOKEN)
    assert main(["discord-sync"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().startswith("facechain-bot discord-sync: Discord refused FACECHAIN_DISCORD_TOKEN")
    assert WRONG_TOKEN not in captured.err + captured.out
    assert not fake_in_thread.command_puts


@pytest.mark.parametrize(
    "url", ["wss://gateway.discord.gg", "ws://127.0.0.1:8080/gateway", "wss://proxy.example:8443/gw"]
)
def test_the_gateway_setting_takes_websocket_urls(url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FACECHAIN_DISCORD_GATEWAY_URL", url)
    assert str(load_settings(BotSettings).discord_gateway_url).rstrip("/") == url.rstrip("/")


def test_discord_sync_runs_with_discords_own_gateway_set(
    fake_in_thread: FakeDiscord, cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _discord_env(monkeypatch, cli_env, fake_in_thread, TOKEN)
    monkeypatch.setenv("FACECHAIN_DISCORD_GATEWAY_URL", "wss://gateway.discord.gg")
    assert main(["discord-sync"]) == 0
    assert "slash commands synced" in capsys.readouterr().out


async def test_the_bot_connects_to_the_gateway_the_setting_names(
    fake: FakeDiscord, tmp_path: Path, redis_url: str
) -> None:
    settings = bot_settings(fake, tmp_path, redis_url, discord_gateway_url=fake.gateway_url)
    assert str(settings.discord_gateway_url).startswith("ws://127.0.0.1:")
    stack = scripted_stack(fake, settings)
    await stack.start_bot()  # waits for IDENTIFY and READY on the websocket
    try:
        assert ("GET", "/gateway/bot") not in fake.requests, "the configured address was used, not asked for"
    finally:
        await stack.close()


async def test_an_unreachable_discord_is_named_and_tried_again(
    tmp_path: Path, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio
    import socket

    from bot.app import bot_runtime
    from bot.discord_adapter import run_discord

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = BotSettings(  # type: ignore[call-arg]
        _env_file=None, data_dir=tmp_path / "data", redis_url=redis_url, discord_token=TOKEN,
        discord_api_url=f"http://127.0.0.1:{port}/api/v10",
    )  # fmt: skip
    async with bot_runtime(settings) as runtime:
        task = asyncio.create_task(run_discord(settings, runtime.service, runtime.blobs))
        with caplog.at_level(logging.WARNING, logger="facechain.discord"):
            for _ in range(100):
                if sum("is not reachable" in r.getMessage() for r in caplog.records) >= 2:
                    break
                await asyncio.sleep(0.1)
        assert not task.done(), "an outage at start is waited out, not fatal"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    messages = [r.getMessage() for r in caplog.records if "is not reachable" in r.getMessage()]
    assert len(messages) >= 2 and f"http://127.0.0.1:{port}/api/v10" in messages[0]
    assert TOKEN not in caplog.text
