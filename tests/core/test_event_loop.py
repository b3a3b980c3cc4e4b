"""The bot process runs on asyncio's own loop by default and on uvloop when ``FACECHAIN_UVLOOP`` is on and
uvloop is installed: through the real entry point, ``facechain-bot bot``."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

import bot.app
from bot.app import loop_factory
from bot.cli import main
from bot.config import BotSettings
from bot.service import ConversationService
from storage.blobs import BlobStore


class _Probed(Exception):
    """Raised by the probe adapter once it has looked at its loop: ends ``run_bot``."""


@pytest.fixture
def env(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FACECHAIN_TELEGRAM_TOKEN", "123456:AAH-probe-token-for-the-event-loop-test")
    return cli_env


def _run_bot_command(monkeypatch: pytest.MonkeyPatch) -> asyncio.AbstractEventLoop:
    """``facechain-bot bot`` with the real runtime (SQLite, Redis, outcome worker, progress listener) and a
    probe in place of the chat adapters; returns the loop the adapter ran on."""
    seen: list[asyncio.AbstractEventLoop] = []

    async def probe(settings: BotSettings, service: ConversationService, blobs: BlobStore) -> None:
        seen.append(asyncio.get_running_loop())
        await asyncio.sleep(0.2)  # the outcome worker and progress listener start on the same loop
        raise _Probed

    monkeypatch.setattr(bot.app, "configured_adapters", lambda settings: {"probe": probe})
    with pytest.raises(_Probed):
        main(["bot"])
    assert len(seen) == 1
    assert seen[0].is_closed(), "the runner closes its loop"
    return seen[0]


def test_the_bot_runs_on_uvloop_when_switched_on(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uvloop = pytest.importorskip("uvloop")
    monkeypatch.setenv("FACECHAIN_UVLOOP", "true")
    assert isinstance(_run_bot_command(monkeypatch), uvloop.Loop)


def test_the_bot_runs_on_asyncios_loop_by_default(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert BotSettings(_env_file=None).uvloop is False
    loop = _run_bot_command(monkeypatch)
    assert type(loop).__module__.startswith("asyncio"), type(loop)


def test_without_uvloop_installed_the_default_loop_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop → ImportError
    assert loop_factory(BotSettings(_env_file=None, uvloop=True)) is None
    assert loop_factory(BotSettings(_env_file=None, uvloop=False)) is None
