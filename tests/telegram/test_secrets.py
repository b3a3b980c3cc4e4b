"""No token and no webhook secret in anything the bot process writes, when a proxy between the bot and
the Bot API echoes requests (path with the token, body with the webhook secret) into its errors.

Everything is captured: every log record of every logger at DEBUG (python-telegram-bot, aiohttp, arq,
ours), formatted with its exception text, and the process's stdout and stderr.
"""

from __future__ import annotations

import logging

import aiohttp
import pytest

from bot.logging_setup import MASK
from tests.telegram.conftest import TOKEN, Harness
from tests.telegram.fake_bot_api import FakeBotApi
from tests.telegram.media import face_photos
from tests.telegram.users import TgUser

# PTB itself reads the deprecated RetryAfter.retry_after when it builds the exception.
pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

SECRET_HALF = TOKEN.split(":")[1]
WEBHOOK_SECRET = "whsec_0123456789-abcdefghij"


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def _written(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every record so far (the bot's start included) as a handler writes it: name, message, exception."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    records = caplog.get_records("setup") + caplog.get_records("call")
    return [formatter.format(record) for record in records]


def _assert_clean(lines: list[str], captured: pytest.CaptureResult[str], *secrets: str) -> None:
    for line in lines:
        for secret in secrets:
            assert secret not in line, f"a secret leaked: {line[:300]}"
    for secret in secrets:
        assert secret not in captured.out and secret not in captured.err, "a secret reached stdout/stderr"


async def test_no_token_in_any_log_when_a_proxy_echoes_requests(
    all_logs: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    bot: Harness,
    api: FakeBotApi,
    alice: TgUser,
) -> None:
    # An HTML error page quoting the request line: PTB logs "Can not load invalid JSON data" with it.
    api.fail_next("getUpdates", 502, echo="html")
    alice.say("/start")
    await alice.expect("Hi!", within=20)

    # JSON errors whose description quotes the request: PTB makes it the exception's message.
    api.fail_next("sendMessage", 503, echo="json")
    api.fail_next("editMessageText", 502, echo="html")
    await bot.train(alice, face_photos(3))
    api.fail_next("sendMediaGroup", 502, echo="json")
    alice.say("/generate watercolor 2")
    making = await alice.expect("Making 2 portraits")
    await alice.expect_edit(making, "Done.", within=20)
    await alice.wait_buttons(["More of this style", "Another style"])
    assert len([m for m in alice.replies if m.photo]) == 2, "nothing was lost to the failed calls"

    lines = _written(all_logs)
    echoed = [line for line in lines if "upstream failed" in line or "Can not load invalid JSON data" in line]
    assert echoed, "the echoed requests reached the logs (else this test proves nothing)"
    assert all(MASK in line for line in echoed), echoed[:3]
    assert any(line.startswith("telegram") and " DEBUG " in line for line in lines), "DEBUG was on"
    _assert_clean(lines, capfd.readouterr(), TOKEN, SECRET_HALF)


@pytest.fixture
def webhook_secret() -> str:
    """This module's webhook secret: one that could not show up in a log by chance."""
    return WEBHOOK_SECRET


@pytest.fixture
def echoing_set_webhook(api: FakeBotApi) -> None:
    """Before the bot starts: its first setWebhook (whose body carries the secret) meets an echoing proxy."""
    api.fail_next("setWebhook", 502, echo="html")


async def test_no_webhook_secret_in_any_log_when_a_proxy_echoes_requests(
    all_logs: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    echoing_set_webhook: None,
    webhook: str,
    bot: Harness,
    api: FakeBotApi,
    alice: TgUser,
) -> None:
    assert api.webhook is not None and api.webhook["secret_token"] == WEBHOOK_SECRET, "set on the second try"
    update = alice.webhook_update("/help")
    async with aiohttp.ClientSession() as http:
        headers = {"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET}
        async with http.post(webhook, json=update, headers=headers) as response:
            assert response.status == 200
    await alice.expect("What I can do:")

    lines = _written(all_logs)
    echoed = [line for line in lines if "Can not load invalid JSON data" in line]
    assert echoed and all(MASK in line for line in echoed), "the echoed setWebhook reached the logs, masked"
    _assert_clean(lines, capfd.readouterr(), TOKEN, SECRET_HALF, WEBHOOK_SECRET)
