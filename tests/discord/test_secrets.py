"""No Discord token in anything the bot writes when a proxy in front of Discord echoes requests (their
Authorization header, with the token) into its error bodies: every log record at DEBUG, formatted with
its exception text, and stdout/stderr, in a journey and in the real ``facechain-bot bot`` process."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.logging_setup import MASK
from tests.discord.fake_discord import TOKEN, FakeDiscord
from tests.discord.harness import Stack, bot_settings, jpeg, scripted_stack


def _written(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every record so far (the bot's start included) as a handler writes it: name, message, exception."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return [formatter.format(r) for r in caplog.get_records("setup") + caplog.get_records("call")]


@pytest.fixture
async def echoing(
    fake: FakeDiscord, tmp_path: Path, redis_url: str, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Stack]:
    """The bot behind a proxy that echoes the request into the body of a refused command upload (at start)
    and of a refused message edit; everything logged at DEBUG from before the start."""
    caplog.set_level(logging.DEBUG)
    fake.echo_next("PUT", "/commands", 401)
    fake.echo_next("PATCH", "/messages/", 400)
    async with scripted_stack(fake, bot_settings(fake, tmp_path, redis_url)) as stack:
        yield stack


async def test_no_token_in_any_log_when_a_proxy_echoes_requests(
    echoing: Stack, fake: FakeDiscord, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    nia = fake.user("nia")
    await echoing.train_in_dm(nia, [fake.upload(f"p{i}.jpg", jpeg(i), "image/jpeg") for i in range(3)])
    _, portraits = await echoing.generate_in(nia, fake.general, "watercolor", 2)
    assert len(portraits.files) == 2, "the journey went through"
    assert not fake.echoes, "both echoing faults were met"

    lines = _written(caplog)
    echoed = [line for line in lines if "upstream refused the request" in line]
    assert len(echoed) >= 2, "the echoed bodies reached the logs (else this test proves nothing)"
    assert all(f"Authorization: Bot {MASK}" in line for line in echoed), echoed
    assert any(line.startswith("discord") and " DEBUG " in line for line in lines), "DEBUG was on"
    for line in lines:
        assert TOKEN not in line, f"the token leaked: {line[:300]}"
    captured = capfd.readouterr()
    assert TOKEN not in captured.out and TOKEN not in captured.err


async def test_the_bot_process_shows_no_token_when_login_is_refused_with_an_echo(
    fake: FakeDiscord, cli_env: Path
) -> None:
    fake.echo_next("GET", "/users/@me", 401)
    env = {
        **os.environ,
        "FACECHAIN_DISCORD_TOKEN": TOKEN,
        "FACECHAIN_DISCORD_API_URL": fake.api_url,
        "FACECHAIN_LOG_LEVEL": "DEBUG",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "bot", env=env, cwd=cli_env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
    output = out.decode() + err.decode()
    assert process.returncode != 0, output[-2000:]
    assert not fake.echoes, "the login met the echoing proxy"
    assert TOKEN not in output, output[-2000:]
