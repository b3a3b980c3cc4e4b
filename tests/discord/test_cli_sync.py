"""``facechain-bot discord-sync`` end to end: the CLI, settings from the environment, the fake Discord."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli import main
from tests.discord.fake_discord import TOKEN, FakeDiscord


def test_discord_sync_uploads_once_then_only_when_changed(
    fake_in_thread: FakeDiscord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FACECHAIN_DISCORD_TOKEN", TOKEN)
    monkeypatch.setenv("FACECHAIN_DISCORD_API_URL", fake_in_thread.api_url)
    monkeypatch.setenv("FACECHAIN_DATA_DIR", str(tmp_path / "data"))

    assert main(["discord-sync"]) == 0
    assert main(["discord-sync", "--if-changed"]) == 0
    assert [scope for scope, _ in fake_in_thread.command_puts] == ["global"]
    out = capsys.readouterr().out
    assert "slash commands synced globally" in out and "unchanged, not synced" in out
    assert f"client_id={fake_in_thread.app_id}" in out
    assert (tmp_path / "data" / "discord-commands.json").exists()
    assert ("GET", "/gateway/bot") not in fake_in_thread.requests, "syncing never touches the gateway"


def test_discord_sync_without_a_token_says_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FACECHAIN_DISCORD_TOKEN", raising=False)
    assert main(["discord-sync"]) == 2
    assert "FACECHAIN_DISCORD_TOKEN" in capsys.readouterr().err
