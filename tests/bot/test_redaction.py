"""The log redaction (bot/logging_setup.py): what it removes, from which parts of a record, on which
loggers and handlers; uncaught exceptions in a real process. Journeys through the fake servers are in
tests/telegram/test_secrets.py and tests/discord/test_secrets.py."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.logging_setup import MASK, redact, register_secret

TELEGRAM = "7654321:AAF-redaction_unit-test-token-0123456789"
DISCORD = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GxYzAb.redaction-unit-discord-token-012"
WEBHOOK = "webhook_secret-for-the-redaction-test"


@pytest.fixture(autouse=True)
def _registered() -> None:
    for secret in (TELEGRAM, DISCORD, WEBHOOK):
        register_secret(secret)


def test_every_form_of_a_registered_secret_is_removed() -> None:
    text = redact(
        f"GET /bot{TELEGRAM}/getMe; /bot7654321%3A{TELEGRAM.split(':')[1]}/x; half {TELEGRAM.split(':')[1]}; "
        f"Authorization: Bot {DISCORD}; secret_token={WEBHOOK}"
    )
    for secret in (TELEGRAM, TELEGRAM.split(":")[1], DISCORD, WEBHOOK):
        assert secret not in text
    assert text.count(MASK) == 5 and "GET /bot" in text and "getMe" in text, text


def test_token_shaped_strings_are_removed_even_unregistered() -> None:
    other_telegram = "1234567890:AAG-some_other-bot-token-abcdefghijklmn"
    assert redact(f"https://api.telegram.org/bot{other_telegram}/getMe") == f"https://api.telegram.org/bot{MASK}/getMe"
    other_discord = "OTg3NjU0MzIxMDk4NzY1NDMy.Gabcde.another-discord-token-value-0123456"
    text = redact(f"{other_telegram} {other_discord} {{'Authorization': 'Bot anything-else'}}")
    assert other_telegram not in text and other_discord not in text and "anything-else" not in text, text
    ordinary = "run 2026120412 took 3.5 s at redis://127.0.0.1:6379/13 (facechain:queue:bot) models/base.safetensors"
    assert redact(ordinary) == ordinary


def test_records_of_any_logger_reach_any_handler_clean(caplog: pytest.LogCaptureFixture) -> None:
    """caplog's handler is added after the redaction was installed, on the root, for a library's child logger."""
    caplog.set_level(logging.DEBUG)
    child = logging.getLogger("telegram.ext.Updater.some.child")
    try:
        try:
            raise ValueError(f"inner {WEBHOOK}")
        except ValueError as inner:
            raise RuntimeError(f"echoed /bot{TELEGRAM}/getUpdates") from inner
    except RuntimeError:
        child.exception("failed with %s and %r", DISCORD, {"token": TELEGRAM}, stack_info=True)
    (record,) = [r for r in caplog.records if r.name == child.name]
    written = logging.Formatter().format(record)
    assert "failed with" in written and "RuntimeError" in written and "ValueError" in written
    for secret in (TELEGRAM, DISCORD, WEBHOOK):
        assert secret not in written and secret not in caplog.text
        assert secret not in repr(record.__dict__), "nothing left in the record itself"


def _run(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )


def test_uncaught_exceptions_in_a_process_are_written_clean(tmp_path: Path) -> None:
    code = f"""
import logging, threading
from bot.logging_setup import configure_logging
configure_logging("DEBUG", [{WEBHOOK!r}])
logging.getLogger("aiohttp.client").debug("to /bot{TELEGRAM}/x")
def boom():
    raise RuntimeError("in a thread: {WEBHOOK}")
thread = threading.Thread(target=boom)
thread.start(); thread.join()
raise RuntimeError("uncaught: Bot {DISCORD}")
"""
    result = _run(code, tmp_path)
    assert result.returncode == 1
    assert "in a thread" in result.stderr and "uncaught: Bot" in result.stderr and "aiohttp.client" in result.stderr
    for secret in (TELEGRAM, DISCORD, WEBHOOK):
        assert secret not in result.stderr + result.stdout, result.stderr
