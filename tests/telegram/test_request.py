"""The adapter's PTB request on aiohttp (bot/telegram_adapter/request.py), against real local HTTP servers:
uploads and downloads arrive intact, timeouts and refused connections become PTB's errors, connections
are pooled and closed, and the token shows up nowhere."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web
from telegram import Bot, InputFile, InputMediaPhoto
from telegram.error import NetworkError, TimedOut
from telegram.request import RequestData
from telegram.request._requestparameter import RequestParameter

from bot.config import BotSettings
from bot.logging_setup import register_secret
from bot.telegram_adapter.app import build_application
from bot.telegram_adapter.request import AiohttpRequest, redact
from bot.up import free_port
from tests.telegram.conftest import TOKEN
from tests.telegram.fake_bot_api import FakeBotApi

SECRET = TOKEN.split(":")[1]
#: Every byte value, many times: an upload must not be re-encoded on the way.
BINARY = bytes(range(256)) * 4096


@asynccontextmanager
async def serving(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[str]:
    """A one-route aiohttp server on 127.0.0.1; yields the Bot API URL of ``getMe`` on it."""
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/bot{TOKEN}/getMe"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def opened(request: AiohttpRequest) -> AsyncIterator[AiohttpRequest]:
    await request.initialize()
    try:
        yield request
    finally:
        await request.shutdown()


@pytest.fixture
async def bot(api: FakeBotApi) -> AsyncIterator[Bot]:
    """A PTB Bot on two AiohttpRequests, as the adapter builds it, talking to the fake Bot API."""
    api.add_user(42, "Alice")
    api.started.add(42)
    async with Bot(
        TOKEN,
        base_url=f"{api.root}/bot",
        base_file_url=f"{api.root}/file/bot",
        request=AiohttpRequest(),
        get_updates_request=AiohttpRequest(connection_pool_size=1),
    ) as bot:
        yield bot


def _no_token(exc: BaseException) -> None:
    text = "".join(traceback.format_exception(exc))
    assert SECRET not in text, text


# ------------------------------------------------------------------------------------ the wire
async def test_the_adapter_talks_through_aiohttp(tmp_path: Path) -> None:
    settings = BotSettings(_env_file=None, data_dir=tmp_path, telegram_token=TOKEN)
    app = build_application(settings)
    assert isinstance(app.bot.request, AiohttpRequest)
    assert isinstance(app.updater.bot._request[0], AiohttpRequest)  # type: ignore[union-attr]  # getUpdates'


async def test_a_photo_upload_arrives_byte_for_byte(bot: Bot, api: FakeBotApi) -> None:
    sent = await bot.send_photo(42, InputFile(BINARY, filename="p.jpg"), caption="Portrait 1 — «ok» & done")
    stored = api.bot_messages(42)[-1]
    assert stored.photo == BINARY
    assert stored.caption == sent.caption == "Portrait 1 — «ok» & done"


async def test_a_media_group_upload_keeps_every_file_and_caption(bot: Bot, api: FakeBotApi) -> None:
    files = [bytes([n]) * 1000 + BINARY[: 10_000 * n] for n in range(1, 5)]
    media = [InputMediaPhoto(data, caption=f"№{n}", filename=f"{n}.jpg") for n, data in enumerate(files)]
    await bot.send_media_group(42, media)
    stored = api.bot_messages(42)[-4:]
    assert [m.photo for m in stored] == files
    assert [m.caption for m in stored] == ["№0", "№1", "№2", "№3"]
    assert len({m.media_group_id for m in stored}) == 1


async def test_form_fields_and_keyboards_survive_encoding(bot: Bot, api: FakeBotApi) -> None:
    from telegram import InlineKeyboardButton, InlineKeyboardMarkup

    text = "Héllo & goodbye = 100% ✓?\nline two"
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("A woman ♀", callback_data="subject:woman&x=1")]])
    await bot.send_message(42, text, reply_markup=markup)
    stored = api.bot_messages(42)[-1]
    assert stored.text == text
    assert stored.buttons == [{"text": "A woman ♀", "callback_data": "subject:woman&x=1"}]


async def test_a_download_arrives_byte_for_byte(bot: Bot, api: FakeBotApi) -> None:
    file_id = api.add_file(BINARY)
    file = await bot.get_file(file_id)
    assert bytes(await file.download_as_bytearray()) == BINARY


async def test_a_long_poll_is_not_cut_short_by_the_read_timeout() -> None:
    async def slow_updates(request: web.Request) -> web.Response:
        if request.path.endswith("/getMe"):
            return web.json_response({"ok": True, "result": FakeBotApi(TOKEN).bot_user})
        await asyncio.sleep(0.6)
        return web.json_response({"ok": True, "result": []})

    async with serving(slow_updates) as url:
        root = url.removesuffix(f"/bot{TOKEN}/getMe")
        updates = AiohttpRequest(connection_pool_size=1, read_timeout=0.2)
        async with Bot(TOKEN, base_url=f"{root}/bot", get_updates_request=updates) as bot:
            # PTB adds the long-polling timeout to the read timeout for getUpdates.
            assert await bot.get_updates(timeout=2) == ()


# ------------------------------------------------------------------------------------ failures
async def test_a_refused_connection_is_a_network_error_without_the_token() -> None:
    url = f"http://127.0.0.1:{free_port()}/bot{TOKEN}/getMe"
    async with opened(AiohttpRequest()) as request:
        with pytest.raises(NetworkError) as raised:
            await request.post(url)
    assert not isinstance(raised.value, TimedOut)
    assert "ClientConnectorError" in raised.value.message
    _no_token(raised.value)


async def test_a_slow_answer_times_out() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.json_response({"ok": True, "result": True})

    async with serving(slow) as url, opened(AiohttpRequest(read_timeout=0.2)) as request:
        started = time.monotonic()
        with pytest.raises(TimedOut) as raised:
            await request.post(url)
        assert time.monotonic() - started < 1.5
        # A call's own timeout wins over the default.
        with pytest.raises(TimedOut):
            await request.post(url, read_timeout=0.1)
    _no_token(raised.value)


async def test_a_full_pool_times_out_after_the_pool_timeout_without_the_token() -> None:
    release = asyncio.Event()

    async def held(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({"ok": True, "result": True})

    # aiohttp bounds waiting for a pooled connection and opening one together: pool + connect timeouts.
    small = AiohttpRequest(connection_pool_size=1, pool_timeout=0.2, connect_timeout=0.2)
    async with serving(held) as url, opened(small) as request:
        first = asyncio.create_task(request.post(url))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(TimedOut) as raised:
            await request.post(url)
        assert time.monotonic() - started < 1.5
        release.set()
        assert await first is True
    assert "pool" in raised.value.message
    _no_token(raised.value)


async def test_an_upload_the_server_does_not_take_times_out() -> None:
    """aiohttp has no write timeout of its own: a request with a body is bounded as a whole."""
    accepted: list[asyncio.StreamWriter] = []

    async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # holds the connection open and reads nothing

    server = await asyncio.start_server(never_read, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/bot{TOKEN}/sendPhoto"
    data = RequestData([RequestParameter.from_input("photo", InputFile(b"\0" * (64 * 1024 * 1024), filename="x"))])
    timeouts = {"read_timeout": 0.2, "connect_timeout": 0.2, "pool_timeout": 0.2, "media_write_timeout": 0.3}
    try:
        async with opened(AiohttpRequest(**timeouts)) as request:
            started = time.monotonic()
            with pytest.raises(TimedOut):
                await request.post(url, data)
            assert time.monotonic() - started < 3
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_http_errors_are_answers_not_network_errors() -> None:
    async def unauthorized(request: web.Request) -> web.Response:
        return web.json_response({"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401)

    async with serving(unauthorized) as url, opened(AiohttpRequest()) as request:
        status, body = await request.do_request(url, "POST")
    assert status == 401 and b'"description": "Unauthorized"' in body


async def test_no_token_in_the_logs_of_failed_calls(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    register_secret(TOKEN)  # as the adapter does where it hands the token to PTB (PTB logs its URLs at DEBUG)
    refused = f"http://127.0.0.1:{free_port()}"
    bot = Bot(TOKEN, base_url=f"{refused}/bot", request=AiohttpRequest(connect_timeout=0.5))
    with pytest.raises(NetworkError) as raised:
        await bot.initialize()  # getMe
    await bot.shutdown()
    logging.getLogger("facechain.test").error("the call failed", exc_info=raised.value)
    assert caplog.records
    assert any("Set Bot API URL" in r.getMessage() for r in caplog.records), "PTB logged its URL at DEBUG"
    for record in caplog.records:
        text = logging.Formatter().format(record)
        assert SECRET not in text, f"the token leaked through {record.name}"


def test_redact_masks_the_secret_wherever_it_appears() -> None:
    url = f"https://api.telegram.org/bot{TOKEN}/getMe"
    assert redact(f"Connection timeout to host {url}", url) == (
        "Connection timeout to host https://api.telegram.org/bot5550001234:<token>/getMe"
    )
    assert redact("nothing here", "http://127.0.0.1/file/x") == "nothing here"


# ------------------------------------------------------------------------------------ the pool
async def test_connections_are_reused_and_capped_by_the_pool_size() -> None:
    peers: set[object] = set()
    in_flight = 0
    most = 0

    async def counted(request: web.Request) -> web.Response:
        nonlocal in_flight, most
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return web.json_response({"ok": True, "result": True})

    async with serving(counted) as url, opened(AiohttpRequest(connection_pool_size=3, pool_timeout=5)) as request:
        for _ in range(5):
            await request.post(url)
        assert len(peers) == 1, "one kept-alive connection for calls one after another"
        await asyncio.gather(*(request.post(url) for _ in range(12)))
    assert most == 3 and len(peers) == 3


async def test_shutdown_closes_the_session_and_initialize_reopens_it() -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "result": True})

    request = AiohttpRequest()
    with pytest.raises(RuntimeError, match="not initialized"):
        await request.do_request("http://127.0.0.1:1/", "POST")
    async with serving(ok) as url:
        await request.initialize()
        assert await request.post(url) is True
        await request.shutdown()
        await request.shutdown()  # twice is fine
        with pytest.raises(NetworkError, match="not initialized"):
            await request.post(url)
        await request.initialize()
        assert await request.post(url) is True
        await request.shutdown()
