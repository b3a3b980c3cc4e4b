#!/usr/bin/env python3
"""The bot side under load: N simulated Telegram users at once against the local fake Bot API server.

Three processes, all on 127.0.0.1:

- this one: the fake Bot API server (``tests/telegram/fake_bot_api.py``, extended here to time every
  update and every reply) and the simulated users;
- the real bot process: :func:`bot.app.run_bot` with a fresh data dir (a real SQLite file) and the
  real Redis database named by ``--redis-url``;
- a GPU worker process: ``--workers`` copies of :func:`pipeline.worker.run_worker` whose stage runner
  is instant (it writes tiny blobs and returns a successful outcome at once).

Every user, all starting together: /start, /train, 5 photos (``--photos single``: five messages, each
answered "Got 1 photo (k of 10)"; ``--photos album``: one album, answered once), /done, presses
"A woman", waits for "Training done." and "Your face model is ready!", sends ``/generate <style>``
and waits for the portraits and their buttons. A user sends an update only after the bot answered
the previous one (a person waits for the answer); ``--think MIN-MAX`` adds a pause of uniform MIN-MAX
seconds before each update (a person reading the answer and typing), none by default (a burst).

For every update the benchmark records when it reached the Bot API server (the user sent it), when
the bot fetched it (the first ``getUpdates`` answer that carried it) and when the bot first replied in
that chat (``sendMessage``, ``editMessageText``, ``sendPhoto``, ``sendMediaGroup`` or
``answerCallbackQuery`` arriving at the server). At the end it counts every user's messages against
the journey: nothing missing, nothing twice, nothing unexpected; and the runs table says every run
ended and was delivered.

    python bench/telegram_load.py --users 1000 [--redis-url redis://127.0.0.1:6379/15] [--out DIR]

The Redis database is emptied before and after (it must hold nothing but arq and facechain keys).
A summary goes to OUT/telegram_load.json and a table is printed. The run stops by itself: every wait
has a timeout and ``--deadline`` caps the whole run.

Finding where the time goes: ``--trace`` times the bot's parts from inside its process (database
lock waits and holds, lane slots, service calls, HTTP calls, downloads); ``--profile py-spy`` samples
it (``pip install py-spy``) and ``--profile cprofile`` profiles it (slowly); ``--experiment NAME``
applies a what-if change in the bot process's memory (see :data:`EXPERIMENTS`). ``--loop asyncio``
runs the bot on asyncio's own loop instead of uvloop (``FACECHAIN_UVLOOP=false``). The figures and what
they showed are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import cProfile
import io
import json
import logging
import math
import multiprocessing
import os
import platform
import pstats
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aiohttp import web  # noqa: E402

from tests.telegram.fake_bot_api import JSON, ChatMessage, FakeBotApi, Params, StoredFile  # noqa: E402

#: A token in Telegram's format (the fake server checks it).
TOKEN = "5550001234:AAH-bench_TOKEN-for-load-0123456789ab"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
#: Bot API methods that show the user something (the first one after an update is its reply).
REPLY_METHODS = ("sendMessage", "editMessageText", "sendPhoto", "sendMediaGroup", "answerCallbackQuery")
#: The subject button pressed after /done.
SUBJECT = "A woman"
MORE_BUTTONS = ["More of this style", "Another style"]
PHOTOS = 5
PORTRAITS = 4  # BotSettings.default_count
MAX_PHOTOS = 10  # BotSettings.max_photos
#: How often the bot process samples its event loop's lag.
LAG_SAMPLE_S = 0.05

#: When the Bot API call being handled arrived (set per request, read by the method handlers).
_CALL_AT: contextvars.ContextVar[float] = contextvars.ContextVar("call_at", default=0.0)


# ================================================================================ the fake server
@dataclass(frozen=True, slots=True)
class ReplyEvent:
    """One thing the bot showed in a chat."""

    at: float
    method: str
    text: str = ""
    query_id: str | None = None


class BenchBotApi(FakeBotApi):
    """The tests' fake Bot API server, timing updates and replies and waking the waiting users.

    Also: files are found by path through an index (the tests' server scans every file per download).
    """

    def __init__(self, token: str) -> None:
        super().__init__(token)
        #: update id → monotonic time the update was queued (the user sent it).
        self.pushed: dict[int, float] = {}
        #: update id → monotonic time of the first getUpdates answer that carried it.
        self.handed: dict[int, float] = {}
        #: chat id → what the bot showed there, in order of arrival.
        self.events: dict[int, list[ReplyEvent]] = defaultdict(list)
        #: Size of every getUpdates answer.
        self.batches: list[int] = []
        self.last_update_id = 0
        self._query_chats: dict[str, int] = {}
        self._changed: dict[int, asyncio.Event] = {}
        self._by_path: dict[str, StoredFile] = {}
        #: The client ports the bot called from (its connections).
        self.client_ports: set[int] = set()

    async def __aenter__(self) -> BenchBotApi:
        await super().__aenter__()
        return self

    # ---- recording
    async def _method(self, request: web.Request) -> web.Response:
        _CALL_AT.set(time.monotonic())
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            self.client_ports.add(int(peer[1]))
        return await super()._method(request)

    def _queue_update(self, update: JSON) -> None:
        super()._queue_update(update)
        self.last_update_id = int(self._updates[-1]["update_id"])
        self.pushed[self.last_update_id] = time.monotonic()

    async def _api_getUpdates(self, p: Params) -> list[JSON]:
        batch = await super()._api_getUpdates(p)
        now = time.monotonic()
        for update in batch:
            self.handed.setdefault(int(update["update_id"]), now)
        if batch:
            self.batches.append(len(batch))
        return batch

    async def _api_sendMessage(self, p: Params) -> JSON:
        result = await super()._api_sendMessage(p)
        self._note(int(result["chat"]["id"]), "sendMessage", str(result.get("text", "")))
        return result

    async def _api_editMessageText(self, p: Params) -> JSON:
        result = await super()._api_editMessageText(p)
        self._note(int(result["chat"]["id"]), "editMessageText", str(result.get("text", "")))
        return result

    async def _api_sendPhoto(self, p: Params) -> JSON:
        result = await super()._api_sendPhoto(p)
        self._note(int(result["chat"]["id"]), "sendPhoto", str(result.get("caption", "")))
        return result

    async def _api_sendMediaGroup(self, p: Params) -> list[JSON]:
        result = await super()._api_sendMediaGroup(p)
        self._note(int(result[0]["chat"]["id"]), "sendMediaGroup", str(result[0].get("caption", "")))
        return result

    async def _api_answerCallbackQuery(self, p: Params) -> bool:
        result = await super()._api_answerCallbackQuery(p)
        query_id = p.text("callback_query_id") or ""
        chat_id = self._query_chats.get(query_id)
        if chat_id is not None:
            self._note(chat_id, "answerCallbackQuery", query_id=query_id)
        return result

    def push_callback(self, chat_id: int, user_id: int, message: ChatMessage, data: str) -> str:
        query_id = super().push_callback(chat_id, user_id, message, data)
        self._query_chats[query_id] = chat_id
        return query_id

    def _note(self, chat_id: int, method: str, text: str = "", query_id: str | None = None) -> None:
        self.events[chat_id].append(ReplyEvent(_CALL_AT.get() or time.monotonic(), method, text, query_id))
        changed = self._changed.get(chat_id)
        if changed is not None:
            changed.set()

    # ---- files by path
    def add_file(self, data: bytes, *, size: int | None = None, folder: str = "photos", suffix: str = "jpg") -> str:
        file_id = super().add_file(data, size=size, folder=folder, suffix=suffix)
        stored = self.files[file_id]
        self._by_path[stored.path] = stored
        return file_id

    async def _file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        stored = self._by_path.get(request.match_info["path"])
        if stored is None:
            return web.Response(status=404)
        return web.Response(body=stored.data, content_type="application/octet-stream")

    # ---- the users' view
    async def wait_chat(self, chat_id: int, done: Callable[[], bool], within: float) -> bool:
        """Wait until ``done()`` (checked whenever the bot shows something in the chat); False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        changed = self._changed.setdefault(chat_id, asyncio.Event())
        while not done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)
        return True


# ========================================================================== the processes behind it
@dataclass(frozen=True)
class ChildConfig:
    """What the bot and worker processes need (picklable: they are started with ``spawn``)."""

    api_root: str
    data_dir: str
    redis_url: str
    out_dir: str
    workers: int = 1
    profile: bool = False
    trace: bool = False
    experiments: tuple[str, ...] = ()
    uvloop: bool = True


@dataclass
class InstantGpu:
    """A stage runner that does no work: it writes tiny blobs and reports success at once."""

    blobs: Any  # storage.blobs.BlobStore (imported in the worker process only)
    portrait: bytes

    def train(self, request: Any, control: Any) -> Any:
        from tests.scripted_stages import trained_outcome

        return trained_outcome(request, self.blobs, ("template.jpg", self.portrait), list(request.photo_keys))

    def generate(self, request: Any, control: Any) -> Any:
        from pipeline import jobs

        portraits = []
        for index in range(request.count):
            key = f"{jobs.run_prefix(request.run_id)}/portrait_{index}.jpg"
            self.blobs.put_bytes(key, self.portrait)
            portraits.append(jobs.Portrait(key=key, seed=1000 + index, score=0.9 - index / 20))
        return jobs.GenerateOutcome(run_id=request.run_id, style=request.style.name, portraits=portraits)

    def close(self, wait_s: float) -> list[str]:
        return []  # nothing runs beside its jobs


def _tiny_jpeg() -> bytes:
    """A 64×64 JPEG: the instant worker's template and portraits."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (40, 120, 200)).save(buffer, "JPEG")
    return buffer.getvalue()


def _child_logging(path: Path) -> None:
    """A child process logs to ``path``: warnings and errors, and the Telegram adapter's anomalies."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    # The outcome worker logs every job at INFO; keep the file to what went wrong.
    logging.getLogger("arq").setLevel(logging.WARNING)
    # The adapter's DEBUG lines are its anomalies (a progress edit skipped, a callback not answered).
    logging.getLogger("facechain.telegram").setLevel(logging.DEBUG)


async def _sample_loop_lag(samples: list[tuple[float, float]]) -> None:
    """(monotonic time, lag) pairs: how late a short sleep wakes up. CLOCK_MONOTONIC is system-wide."""
    while True:
        before = time.monotonic()
        await asyncio.sleep(LAG_SAMPLE_S)
        now = time.monotonic()
        samples.append((now, now - before - LAG_SAMPLE_S))


class Tracer:
    """Durations by name, kept in the bot process and written out at its end (``--trace``)."""

    def __init__(self) -> None:
        self.spans: dict[str, list[tuple[float, float]]] = defaultdict(list)

    def add(self, name: str, started: float, seconds: float) -> None:
        self.spans[name].append((started, seconds))

    def timed(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        """An async method wrapped to record how long each call took."""

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            try:
                return await method(*args, **kwargs)
            finally:
                self.add(name, started, time.monotonic() - started)

        return wrapper

    def timed_sync(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        """A blocking method wrapped to record how long each call took (in whichever thread runs it)."""

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            try:
                return method(*args, **kwargs)
            finally:
                self.add(name, started, time.monotonic() - started)

        return wrapper

    def lock_timed(self, name: str, manager: Callable[..., Any]) -> Callable[..., Any]:
        """An async context manager method wrapped to record the wait to enter it and the time held."""
        tracer = self

        @contextlib.asynccontextmanager
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            asked = time.monotonic()
            async with manager(*args, **kwargs) as value:
                entered = time.monotonic()
                tracer.add(f"{name} wait", asked, entered - asked)
                try:
                    yield value
                finally:
                    tracer.add(f"{name} held", entered, time.monotonic() - entered)

        return wrapper

    def install(self) -> None:
        """Wrap the bot's parts where an update's time can go (the bot's code on disk is not changed)."""
        from telegram.request import HTTPXRequest

        from bot.queue import ArqJobQueue
        from bot.service import ConversationService
        from bot.telegram_adapter import app as telegram_app
        from bot.telegram_adapter.lanes import ChatLanes
        from bot.telegram_adapter.request import AiohttpRequest
        from bot.telegram_adapter.sender import TelegramSender
        from storage.blobs import BlobStore
        from storage.db import Database

        # (wrapper, class, method, the name its time is recorded under)
        wrapped: list[tuple[Callable[..., Any], type, str, str]] = [
            (self.lock_timed, Database, "locked", "db statement"),
            (self.lock_timed, Database, "transaction", "db transaction"),
            (self.timed, ConversationService, "handle", "service.handle"),
            (self.timed, ConversationService, "_read", "service._read (state + facts)"),
            (self.timed, ConversationService, "on_outcome", "service.on_outcome"),
            (self.timed, ConversationService, "on_progress", "service.on_progress"),
            (self.timed, TelegramSender, "send", "sender.send"),
            (self.timed, ArqJobQueue, "position", "redis queue.position"),
            (self.timed, ArqJobQueue, "submit", "redis queue.submit"),
            (self.timed_sync, BlobStore, "put_photo", "blobs.put_photo (thread)"),
            (self.timed, HTTPXRequest, "do_request", "Bot API HTTP call"),
            (self.timed, AiohttpRequest, "do_request", "Bot API HTTP call"),
        ]
        for wrap, owner, method, name in wrapped:
            setattr(owner, method, wrap(name, getattr(owner, method)))
        make_downloader = telegram_app.make_downloader  # type: ignore[attr-defined]

        def traced_downloader(*args: Any, **kwargs: Any) -> Any:
            return self.timed("download (getFile + file)", make_downloader(*args, **kwargs))

        telegram_app.make_downloader = traced_downloader  # type: ignore[attr-defined]
        guarded = ChatLanes._guarded
        tracer = self

        async def traced_guarded(lanes: ChatLanes, work: Any) -> None:
            asked = time.monotonic()

            async def timed_work() -> None:
                entered = time.monotonic()
                tracer.add("lane slot wait (MAX_BUSY)", asked, entered - asked)
                try:
                    await work
                finally:
                    tracer.add("lane handling", entered, time.monotonic() - entered)

            await guarded(lanes, timed_work())

        ChatLanes._guarded = traced_guarded  # type: ignore[method-assign,assignment]


#: What-if changes to the bot process, made in its memory only (the official figures run without any).
EXPERIMENTS = {
    "switch-interval": "sys.setswitchinterval(0.0005): threads get the GIL back 10x sooner than the 5 ms default",
    "inline-sqlite": "aiosqlite runs each statement on the event loop's thread instead of handing it to its own",
    "http-pool-16": "PTB's Bot API connection pool holds 16 connections (default 256), pool timeout 30 s",
    "sniffio": "a stand-in sniffio module: httpcore stops retrying a failed `import sniffio` on every request",
    "httpx-request": "PTB's own HTTPXRequest instead of the adapter's AiohttpRequest (the default before it)",
}


def apply_experiments(names: Sequence[str]) -> None:
    """Apply the named :data:`EXPERIMENTS` in this (the bot's) process."""
    if "switch-interval" in names:
        sys.setswitchinterval(0.0005)
    if "inline-sqlite" in names:
        import aiosqlite
        import aiosqlite.core

        connect = aiosqlite.connect

        def connect_any_thread(database: Any, **kwargs: Any) -> Any:
            return connect(database, check_same_thread=False, **kwargs)

        async def execute_inline(self: Any, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            if not self._running or not self._connection:
                raise ValueError("Connection closed")
            return fn(*args, **kwargs)

        aiosqlite.connect = connect_any_thread
        aiosqlite.core.Connection._execute = execute_inline  # type: ignore[method-assign]
    if "sniffio" in names and "sniffio" not in sys.modules:
        stub = types.ModuleType("sniffio")
        stub.AsyncLibraryNotFoundError = type("AsyncLibraryNotFoundError", (RuntimeError,), {})  # type: ignore[attr-defined]
        stub.current_async_library_cvar = contextvars.ContextVar("sniffio_library", default=None)  # type: ignore[attr-defined]
        stub.current_async_library = lambda: "asyncio"  # type: ignore[attr-defined]
        sys.modules["sniffio"] = stub
    if "httpx-request" in names or "http-pool-16" in names:
        from telegram.request import HTTPXRequest

        from bot.telegram_adapter import app as telegram_app

        base = HTTPXRequest if "httpx-request" in names else telegram_app.AiohttpRequest

        def make_request(connection_pool_size: int) -> Any:
            if "http-pool-16" in names and connection_pool_size > 1:  # not getUpdates' own request
                return base(connection_pool_size=16, pool_timeout=30.0)
            return base(connection_pool_size=connection_pool_size)

        telegram_app.AiohttpRequest = make_request  # type: ignore[assignment,misc]


def bot_process(config: ChildConfig) -> None:
    """Entry of the bot process: the real run_bot against the fake server, until SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = Path(config.out_dir)
    _child_logging(out / "bot.log")
    from bot.app import loop_factory, run_bot
    from bot.config import BotSettings
    from bot.graceful import until_terminated

    settings = BotSettings(
        _env_file=None,
        data_dir=Path(config.data_dir),
        redis_url=config.redis_url,
        telegram_token=TOKEN,
        telegram_api_url=config.api_root,
        log_level="WARNING",
        uvloop=config.uvloop,
    )
    lags: list[tuple[float, float]] = []
    apply_experiments(config.experiments)
    tracer = Tracer()
    if config.trace:
        tracer.install()

    async def serve() -> None:
        (out / "bot_event_loop.txt").write_text(type(asyncio.get_running_loop()).__module__)
        sampler = asyncio.create_task(_sample_loop_lag(lags))
        try:
            await until_terminated(run_bot(settings))
        finally:
            sampler.cancel()

    profiler = cProfile.Profile() if config.profile else None
    if profiler is not None:
        profiler.enable()
    try:
        # As bot.app.main runs it: on uvloop unless --loop asyncio (FACECHAIN_UVLOOP=false).
        with asyncio.Runner(loop_factory=loop_factory(settings)) as runner:
            runner.run(serve())
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(out / "bot.pstats")
        (out / "bot_loop_lag.json").write_text(json.dumps({"sample_s": LAG_SAMPLE_S, "at_and_lag_s": lags}))
        if config.trace:
            (out / "bot_trace.json").write_text(json.dumps(tracer.spans))


def worker_process(config: ChildConfig) -> None:
    """Entry of the GPU worker process: ``config.workers`` run_worker loops with an instant runner."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _child_logging(Path(config.out_dir) / "worker.log")
    from bot.graceful import until_terminated
    from pipeline.config import WorkerSettings
    from pipeline.worker import run_worker
    from storage.blobs import LocalBlobStore

    settings = WorkerSettings(
        _env_file=None,
        data_dir=Path(config.data_dir),
        redis_url=config.redis_url,
        train_timeout_s=120,
        generate_timeout_s=120,
    )
    runner = InstantGpu(LocalBlobStore(settings.blob_dir), _tiny_jpeg())

    async def serve() -> None:
        await asyncio.gather(*(run_worker(settings, ctx={"runner": runner}) for _ in range(config.workers)))

    asyncio.run(until_terminated(serve()))


def _stop(process: BaseProcess, grace: float) -> None:
    """SIGTERM (the child cancels its work and cleans up), then SIGKILL after ``grace`` seconds."""
    if process.is_alive() and process.pid is not None:
        os.kill(process.pid, signal.SIGTERM)
    process.join(grace)
    if process.is_alive():
        process.kill()
        process.join(5)


# ============================================================================== the simulated users
@dataclass
class UpdateRecord:
    """One update a user sent and the bot's first reply to it."""

    user: int
    step: str
    update_id: int
    pushed: float
    first_at: float | None = None
    first_method: str = ""
    expected_first: bool = True
    handed: float | None = None

    @property
    def reply_ms(self) -> float | None:
        return None if self.first_at is None else (self.first_at - self.pushed) * 1000

    @property
    def bot_ms(self) -> float | None:
        if self.first_at is None or self.handed is None:
            return None
        return (self.first_at - self.handed) * 1000

    @property
    def fetch_ms(self) -> float | None:
        return None if self.handed is None else (self.handed - self.pushed) * 1000


@dataclass
class UserResult:
    """One user's updates, turnarounds, and why the journey stopped early (if it did)."""

    user: int
    records: list[UpdateRecord] = field(default_factory=list)
    #: Seconds from the subject button to "model ready", and from /generate to the portraits' buttons.
    train_s: float | None = None
    generate_s: float | None = None
    failed: str | None = None


class StepTimeout(Exception):
    """A user waited longer than the timeout for an answer or a result."""


@dataclass(frozen=True)
class Options:
    """How every simulated user behaves."""

    album: bool
    style: str
    reply_timeout: float
    result_timeout: float
    #: (min, max) seconds a user pauses before each update it sends; None: no pause (a burst).
    think: tuple[float, float] | None = None


class SimUser:
    """One user in their private chat, driving the journey through the fake server."""

    def __init__(self, api: BenchBotApi, user_id: int, options: Options) -> None:
        self.api = api
        self.id = user_id
        self.chat = user_id
        self.options = options
        self.result = UserResult(user_id)
        # Seeded per user: the same pauses in every run.
        self.rng = random.Random(user_id)
        api.add_user(user_id, f"User {user_id}")

    # ---- looking at the chat
    def bot_messages(self) -> list[ChatMessage]:
        return [m for m in self.api.messages[self.chat] if m.from_bot]

    def find(self, fragment: str) -> ChatMessage | None:
        return next((m for m in self.bot_messages() if any(fragment in text for text in m.history)), None)

    def shows(self, fragment: str) -> Callable[[], bool]:
        return lambda: self.find(fragment) is not None

    # ---- acting
    async def step(
        self, name: str, push: Callable[[], object], done: Callable[[], bool], expect: Callable[[ReplyEvent], bool]
    ) -> UpdateRecord:
        """Send one update (or an album: the last part counts), wait for its answer, record the first reply."""
        if self.options.think is not None:
            await asyncio.sleep(self.rng.uniform(*self.options.think))
        events = self.api.events[self.chat]
        start = len(events)
        push()
        record = UpdateRecord(self.id, name, self.api.last_update_id, self.api.pushed[self.api.last_update_id])
        self.result.records.append(record)
        if not await self.api.wait_chat(self.chat, done, self.options.reply_timeout):
            raise StepTimeout(f"no answer to {name} within {self.options.reply_timeout} s")
        if len(events) > start:
            first = events[start]
            record.first_at, record.first_method, record.expected_first = first.at, first.method, expect(first)
        return record

    async def wait(self, what: str, done: Callable[[], bool]) -> None:
        """Wait for a worker's result (no update of the user's own)."""
        if not await self.api.wait_chat(self.chat, done, self.options.result_timeout):
            raise StepTimeout(f"{what} did not come within {self.options.result_timeout} s")

    def say(self, text: str) -> Callable[[], object]:
        """A push that writes ``text`` in the user's chat."""
        return lambda: self.api.push_text(self.chat, self.id, text)

    async def journey(self, photos: Sequence[bytes]) -> UserResult:
        """The whole journey; a timeout ends it early and is recorded, never raised."""
        try:
            await self._journey(photos)
        except StepTimeout as exc:
            self.result.failed = str(exc)
        return self.result

    async def _journey(self, photos: Sequence[bytes]) -> None:
        api, options = self.api, self.options

        def text_starts(prefix: str) -> Callable[[ReplyEvent], bool]:
            return lambda e: e.method == "sendMessage" and e.text.startswith(prefix)

        await self.step("/start", self.say("/start"), self.shows("Hi! I turn"), text_starts("Hi! I turn"))
        await self.step("/train", self.say("/train"), self.shows("Send me 3 to 10"), text_starts("Great! Send me"))
        if options.album:
            album = api.new_album_id()

            def push_album() -> None:
                for data in photos:
                    api.push_photo(self.chat, self.id, data, media_group_id=album)

            head = f"Got {len(photos)} photos ({len(photos)} of {MAX_PHOTOS})"
            await self.step("album", push_album, self.shows(head), text_starts(head))
        else:
            for number, data in enumerate(photos, start=1):
                head = f"Got 1 photo ({number} of {MAX_PHOTOS})"
                push = (lambda d: lambda: api.push_photo(self.chat, self.id, d))(data)
                await self.step("photo", push, self.shows(head), text_starts(head))
        question_text = "Who is in these photos?"
        await self.step("/done", self.say("/done"), self.shows(question_text), text_starts(question_text))

        question = self.find(question_text)
        assert question is not None
        data = next(b["callback_data"] for b in question.buttons if b["text"] == SUBJECT)
        query: list[str] = []

        def answered() -> bool:
            return (
                any(e.query_id == query[0] for e in api.events[self.chat]) and self.find("Training queued") is not None
            )

        pressed = await self.step(
            "button",
            lambda: query.append(api.push_callback(self.chat, self.id, question, data)),
            answered,
            lambda e: e.method == "answerCallbackQuery" and e.query_id == query[0],
        )

        def trained() -> bool:
            progress = self.find("Training queued")
            return progress is not None and "Training done." in progress.history and self.find("is ready!") is not None

        await self.wait("training", trained)
        self.result.train_s = time.monotonic() - pressed.pushed

        making = f"Making {PORTRAITS} portraits in {options.style}"
        generate = await self.step(f"/generate {options.style}", self.say(f"/generate {options.style}"),
                                   self.shows(making), text_starts(making))  # fmt: skip

        def delivered() -> bool:
            progress = self.find(making)
            if progress is None or "Done." not in progress.history:
                return False
            portraits = [m for m in self.bot_messages() if m.photo is not None]
            return len(portraits) >= PORTRAITS and any(m.labels == MORE_BUTTONS for m in self.bot_messages())

        await self.wait("portraits", delivered)
        self.result.generate_s = time.monotonic() - generate.pushed


# ===================================================================================== the checks
def expected_messages(album: bool) -> Counter[str]:
    """What every user's chat holds at the end, by kind of message."""
    return Counter(
        welcome=1, train_tips=1, photos_saved=1 if album else PHOTOS, subject=1, train_progress=1, ready=1,
        generate_progress=1, portrait=PORTRAITS, more_buttons=1,
    )  # fmt: skip


def classify(message: ChatMessage) -> str:
    """The kind of a bot message in the journey (see :func:`expected_messages`), or "other"."""
    original = message.original
    if message.photo is not None:
        return "portrait"
    if message.labels == MORE_BUTTONS:
        return "more_buttons"
    prefixes = {
        "Hi! I turn": "welcome", "Great! Send me": "train_tips", "Got ": "photos_saved",
        "Who is in these photos?": "subject", "Training queued": "train_progress",
        "Your face model is ready!": "ready", "Making ": "generate_progress",
    }  # fmt: skip
    kind = next((kind for prefix, kind in prefixes.items() if original.startswith(prefix)), "other")
    if kind == "train_progress" and message.shown != "Training done.":
        return "train_progress_unfinished"
    if kind == "generate_progress" and message.shown != "Done.":
        return "generate_progress_unfinished"
    return kind


def check_chats(api: BenchBotApi, users: Sequence[SimUser], album: bool, style: str) -> dict[str, Any]:
    """Count every user's messages and callback answers against the journey."""
    expected = expected_messages(album)
    missing: Counter[str] = Counter()
    duplicated: Counter[str] = Counter()
    unexpected: Counter[str] = Counter()
    bad_users: list[int] = []
    answers = Counter(str(a["id"]) for a in api.callback_answers)
    groups_wrong = 0
    for user in users:
        messages = user.bot_messages()
        counts = Counter(classify(m) for m in messages)
        for kind, want in expected.items():
            got = counts.get(kind, 0)
            if got < want:
                missing[kind] += want - got
            elif got > want:
                duplicated[kind] += got - want
        for kind, got in counts.items():
            if kind not in expected:
                unexpected[kind] += got
        portraits = [m for m in messages if m.photo is not None]
        groups = {m.media_group_id for m in portraits}
        if len(groups) != 1 or None in groups or not portraits or not portraits[0].original.startswith(style):
            groups_wrong += 1
        queries = [e.query_id for e in api.events[user.chat] if e.query_id is not None]
        if len(queries) != 1 or any(answers[q] != 1 for q in queries):
            duplicated["callback_answer"] += max(len(queries) - 1, 0)
            missing["callback_answer"] += 1 if not queries else 0
        if user.result.failed or counts != expected:
            bad_users.append(user.id)
    return {
        "expected_per_user": dict(expected),
        "missing": dict(missing),
        "duplicated": dict(duplicated),
        "unexpected": dict(unexpected),
        "portraits_not_one_media_group": groups_wrong,
        "users_not_exactly_as_expected": len(bad_users),
        "first_bad_users": bad_users[:10],
        "lost": sum(missing.values()),
    }


def check_runs(database: Path) -> dict[str, Any]:
    """Runs by kind and status, and how many were delivered (read after the bot stopped)."""
    if not database.exists():
        return {"error": "no database"}
    with contextlib.closing(sqlite3.connect(database)) as conn:
        rows = conn.execute(
            "SELECT kind, status, COUNT(*), SUM(delivered_at IS NOT NULL) FROM runs GROUP BY kind, status"
        ).fetchall()
    return {f"{kind}:{status}": {"runs": count, "delivered": delivered} for kind, status, count, delivered in rows}


# ================================================================================== measurements
def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of ``values`` (not empty)."""
    ordered = sorted(values)
    rank = max(math.ceil(p / 100 * len(ordered)), 1)
    return ordered[min(rank, len(ordered)) - 1]


def stats_ms(values: Sequence[float]) -> dict[str, float | int]:
    """Count, mean and percentiles, rounded to 0.1."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "mean": round(sum(values) / len(values), 1),
        "p50": round(percentile(values, 50), 1),
        "p90": round(percentile(values, 90), 1),
        "p99": round(percentile(values, 99), 1),
        "max": round(max(values), 1),
    }


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process (all its threads), from /proc."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine() -> dict[str, Any]:
    """CPU count and model, Python and the versions of the packages the bot's speed depends on."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions: dict[str, str] = {}
    from importlib.metadata import PackageNotFoundError, version

    for package in ("python-telegram-bot", "arq", "aiosqlite", "redis", "httpx", "aiohttp"):
        with contextlib.suppress(PackageNotFoundError):
            versions[package] = version(package)
    return {"cpus": os.cpu_count(), "cpu": model, "python": platform.python_version(), "packages": versions}


def timeline(records: Sequence[UpdateRecord], start: float, bucket_s: float) -> list[dict[str, Any]]:
    """Updates sent per time bucket, with their p99 update→first-reply latency."""
    buckets: dict[int, list[float]] = defaultdict(list)
    for record in records:
        if record.reply_ms is not None:
            buckets[int((record.pushed - start) // bucket_s)].append(record.reply_ms)
    return [
        {"from_s": index * bucket_s, "updates": len(values), "p50_ms": round(percentile(values, 50), 1),
         "p99_ms": round(percentile(values, 99), 1)}
        for index, values in sorted(buckets.items())
    ]  # fmt: skip


# ===================================================================================== Redis guard
async def empty_redis(url: str) -> None:
    """Empty the benchmark's database; refuse if it holds keys that are not arq's or facechain's."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        foreign = [key async for key in client.scan_iter(count=1000) if not key.startswith((b"arq:", b"facechain:"))]
        if foreign:
            raise SystemExit(f"{url} holds keys that are not the bot's (e.g. {foreign[0]!r}): pick another database")
        await client.flushdb()
    finally:
        await client.aclose()


async def redis_pid(url: str) -> int | None:
    """The Redis server's process id (to read its CPU time), if it runs on this machine."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        info = await client.info("server")
        return int(info["process_id"])
    except Exception:
        return None
    finally:
        await client.aclose()


# ======================================================================================= the run
@dataclass
class Processes:
    """The child processes, so that every exit path can kill them."""

    bot: BaseProcess | None = None
    worker: BaseProcess | None = None
    spy: subprocess.Popen[bytes] | None = None

    def kill_all(self) -> None:
        for process in (self.bot, self.worker):
            if process is not None and process.is_alive():
                process.kill()
        if self.spy is not None and self.spy.poll() is None:
            self.spy.kill()


async def wait_until(done: Callable[[], bool], within: float, what: str) -> None:
    """Poll ``done`` until it holds; raise after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.05)


async def run(args: argparse.Namespace, processes: Processes) -> dict[str, Any]:
    from tests.telegram.media import face_photos

    out = Path(args.out)
    await empty_redis(args.redis_url)
    photos = face_photos(PHOTOS)
    options = Options(args.photos == "album", args.style, args.reply_timeout, args.result_timeout, args.think)
    spawn = multiprocessing.get_context("spawn")
    work = Path(tempfile.mkdtemp(prefix="facechain-load-"))
    try:
        async with BenchBotApi(TOKEN) as api:
            config = ChildConfig(
                api.root,
                str(work / "data"),
                args.redis_url,
                str(out),
                args.workers,
                profile=args.profile == "cprofile",
                trace=args.trace,
                experiments=tuple(args.experiment),
                uvloop=args.loop == "uvloop",
            )
            processes.worker = spawn.Process(target=worker_process, args=(config,), name="gpu-worker")
            processes.bot = spawn.Process(target=bot_process, args=(config,), name="bot")
            processes.worker.start()
            processes.bot.start()
            bot = processes.bot
            await wait_until(lambda: bool(api.calls_of("getUpdates")) or not bot.is_alive(), 60, "the bot to poll")
            if not bot.is_alive():
                raise RuntimeError(f"the bot process exited ({bot.exitcode}); see {out / 'bot.log'}")
            if args.profile == "py-spy":
                processes.spy = start_py_spy(bot.pid, out / "bot_pyspy.txt")
            users = [SimUser(api, 100_000 + index, options) for index in range(args.users)]
            pids = {"bot": bot.pid, "worker": processes.worker.pid, "harness": os.getpid(),
                    "redis": await redis_pid(args.redis_url)}  # fmt: skip
            cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            calls_before = len(api.calls)
            started = time.monotonic()
            results = await asyncio.gather(*(user.journey(photos) for user in users))
            wall = time.monotonic() - started
            cpu_after = {name: cpu_seconds(pid) for name, pid in pids.items()}
            calls = len(api.calls) - calls_before
            if processes.spy is not None:
                processes.spy.send_signal(signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    processes.spy.wait(30)
            # Anything that comes now is a reply twice (or a very late one).
            await asyncio.sleep(args.settle)
            for result in results:
                for record in result.records:
                    record.handed = api.handed.get(record.update_id)
            chats = check_chats(api, users, options.album, args.style)
            # In a thread: this loop must keep serving the bot's last getUpdates while it stops.
            await asyncio.to_thread(_stop, bot, 30)
            await asyncio.to_thread(_stop, processes.worker, 15)
            runs = check_runs(work / "data" / "facechain.sqlite3")
            batches = list(api.batches)
            method_counts = Counter(c.method for c in api.calls)
            connections = len(api.client_ports)
    finally:
        processes.kill_all()
        shutil.rmtree(work, ignore_errors=True)
        with contextlib.suppress(Exception):
            await empty_redis(args.redis_url)

    cpu = {
        name: round(cpu_after[name] - before, 1)  # type: ignore[operator]
        for name, before in cpu_before.items()
        if before is not None and cpu_after.get(name) is not None
    }
    return summarize(args, results, api_started=started, wall=wall, calls=calls, cpu=cpu, chats=chats, runs=runs,
                     batches=batches, method_counts=method_counts, connections=connections, out=out)  # fmt: skip


def start_py_spy(pid: int | None, path: Path) -> subprocess.Popen[bytes] | None:
    """Sample the bot process with py-spy (GIL holder only, collapsed stacks) until SIGINT."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if pid is None or not Path(exe).exists():
        print("py-spy not found (pip install py-spy): no profile", file=sys.stderr)
        return None
    command = [exe, "record", "--pid", str(pid), "--rate", "200", "--format", "raw", "--output", str(path),
               "--nonblocking", "--gil"]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarize(
    args: argparse.Namespace,
    results: Sequence[UserResult],
    *,
    api_started: float,
    wall: float,
    calls: int,
    cpu: dict[str, float],
    chats: dict[str, Any],
    runs: dict[str, Any],
    batches: list[int],
    method_counts: Counter[str],
    connections: int,
    out: Path,
) -> dict[str, Any]:
    records = [r for result in results for r in result.records]
    per_update = [r for r in records if r.step != "album"]
    reply = [r.reply_ms for r in per_update if r.reply_ms is not None]
    steps: dict[str, list[float]] = defaultdict(list)
    for record in records:
        if record.reply_ms is not None:
            steps[record.step].append(record.reply_ms)
    lags: list[float] = []
    with contextlib.suppress(OSError, ValueError):
        samples = json.loads((out / "bot_loop_lag.json").read_text())["at_and_lag_s"]
        lags = [lag * 1000 for at, lag in samples if api_started <= at <= api_started + wall]
    log_lines = []
    with contextlib.suppress(OSError):
        log_lines = [
            line
            for line in (out / "bot.log").read_text().splitlines()
            if any(f" {level} " in line for level in ("DEBUG", "WARNING", "ERROR"))
        ]
    failures = Counter(r.failed.split(" within")[0] for r in results if r.failed)
    summary: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "users": args.users,
        "photos": args.photos,
        "workers": args.workers,
        "style": args.style,
        "think_s": list(args.think) if args.think else None,
        "profile": args.profile,
        "experiments": list(args.experiment),
        "event_loop": _read_text(out / "bot_event_loop.txt"),
        "wall_s": round(wall, 2),
        "updates": len(records) + (sum(PHOTOS - 1 for r in records if r.step == "album")),
        "answered_updates": len(records),
        "updates_per_s": round(len(records) / wall, 1),
        "bot_api_calls": calls,
        "bot_api_calls_by_method": dict(method_counts),
        "bot_api_connections": connections,
        "update_to_first_reply_ms": stats_ms(reply),
        "fetch_ms": stats_ms([r.fetch_ms for r in per_update if r.fetch_ms is not None]),
        "fetched_to_first_reply_ms": stats_ms([r.bot_ms for r in per_update if r.bot_ms is not None]),
        "by_step_ms": {name: stats_ms(values) for name, values in steps.items()},
        "album_note": "album: from the last part to the reply; includes the adapter's 1 s gathering wait",
        "first_reply_not_the_expected_one": sum(not r.expected_first for r in records if r.first_at is not None),
        "no_reply": sum(r.first_at is None for r in records),
        "train_turnaround_s": stats_ms([r.train_s for r in results if r.train_s is not None]),
        "generate_turnaround_s": stats_ms([r.generate_s for r in results if r.generate_s is not None]),
        "users_finished": sum(r.failed is None for r in results),
        "user_failures": dict(failures),
        "chats": chats,
        "runs": runs,
        "get_updates_batches": {
            "n": len(batches),
            "mean": round(sum(batches) / max(len(batches), 1), 1),
            "max": max(batches, default=0),
        },
        "cpu_s_during_load": cpu,
        "bot_loop_lag_ms": stats_ms(lags),
        "bot_log_anomalies": len(log_lines),
        "bot_log_first": log_lines[:5],
        "timeline": timeline(records, api_started, args.timeline_bucket),
    }
    summary["lost"] = chats["lost"] + summary["no_reply"] + (args.users - summary["users_finished"])
    summary["target_p99_ms"] = 300
    summary["p99_met"] = bool(reply) and percentile(reply, 99) <= 300
    if args.trace and (out / "bot_trace.json").exists():
        summary["bot_trace_ms"] = trace_stats(out / "bot_trace.json", api_started, api_started + wall)
    if args.profile == "cprofile" and (out / "bot.pstats").exists():
        summary["profile_top"] = profile_top(out / "bot.pstats", out / "bot_profile.txt")
    if args.profile == "py-spy" and (out / "bot_pyspy.txt").exists():
        summary["profile_top"] = py_spy_top(out / "bot_pyspy.txt", out / "bot_profile.txt")
    return summary


def trace_stats(path: Path, start: float, end: float) -> dict[str, dict[str, float | int]]:
    """Per traced name: the durations (ms) of the calls that began during the load, and their sum (s)."""
    spans: dict[str, list[list[float]]] = json.loads(path.read_text())
    result: dict[str, dict[str, float | int]] = {}
    for name, pairs in sorted(spans.items()):
        durations = [seconds * 1000 for at, seconds in pairs if start <= at <= end]
        if durations:
            result[name] = {**stats_ms(durations), "total_s": round(sum(durations) / 1000, 2)}
    return result


def profile_top(pstats_path: Path, text_path: Path, lines: int = 40) -> list[str]:
    """The cProfile of the bot process: top functions by own time and by cumulative time, to a text file."""
    buffer = io.StringIO()
    stats = pstats.Stats(str(pstats_path), stream=buffer)
    stats.strip_dirs().sort_stats("tottime").print_stats(lines)
    stats.sort_stats("cumulative").print_stats(lines)
    text_path.write_text(buffer.getvalue())
    rows = []
    for (file, line, name), (_, calls, tottime, cumtime, _) in sorted(
        stats.stats.items(),  # type: ignore[attr-defined]
        key=lambda item: -item[1][2],
    )[:15]:
        rows.append(f"{tottime:8.2f} s own {cumtime:8.2f} s cum {calls:9d} calls  {name} ({file}:{line})")
    return rows


def py_spy_top(raw_path: Path, text_path: Path, lines: int = 40) -> list[str]:
    """py-spy's collapsed stacks: samples per leaf function (own) and per function anywhere (inclusive)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    packages: Counter[str] = Counter()
    for frame, count in own.items():
        packages[_package_of(frame)] += count
    report = [f"{total} samples (GIL held)", "own samples by package:"]
    report += [f"{100 * n / total:5.1f}%  {name}" for name, n in packages.most_common(20)]
    report += ["", "own:"] + [f"{100 * n / total:5.1f}%  {f}" for f, n in own.most_common(lines)]
    report += ["", "inclusive:"] + [f"{100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(lines)]
    text_path.write_text("\n".join(report) + "\n")
    return report[:18]


def _package_of(frame: str) -> str:
    """``Connection._execute (aiosqlite/core.py:158)`` → ``aiosqlite``; the stdlib's asyncio stays asyncio."""
    location = frame.rpartition(" (")[2].rstrip(")")
    path = location.rpartition(":")[0]
    head = path.split("/", 1)[0]
    if head in ("bot", "storage", "pipeline") and "/" in path:
        return "/".join(path.split("/")[:2]).removesuffix(".py")
    return head.removesuffix(".py") or "?"


# ======================================================================================= output
def print_table(summary: dict[str, Any]) -> None:
    """The summary as a readable table on stdout."""

    def row(name: str, s: dict[str, Any]) -> str:
        if not s.get("n"):
            return f"  {name:<30} -"
        return (
            f"  {name:<30} p50 {s['p50']:8.1f}  p90 {s['p90']:8.1f}  p99 {s['p99']:8.1f}  max {s['max']:8.1f}"
            f"  (n={s['n']})"
        )

    m = summary["machine"]
    think = summary["think_s"]
    pace = f"a user pauses {think[0]:g}-{think[1]:g} s before each update" if think else "zero think time"
    print(
        f"\ntelegram load: {summary['users']} users, {summary['photos']} photos, {summary['workers']} instant workers,"
        f" {pace}, {m['cpus']} CPUs ({m['cpu']}), Python {m['python']}, bot event loop: {summary['event_loop']}"
    )
    print(f"  wall time                    {summary['wall_s']:.1f} s")
    print(f"  updates                      {summary['updates']} ({summary['updates_per_s']} answered updates/s)")
    print(
        f"  Bot API calls                {summary['bot_api_calls']} over {summary['bot_api_connections']} connections"
    )
    print("latency, ms:")
    print(row("update → first reply", summary["update_to_first_reply_ms"]))
    print(row("  update → fetched", summary["fetch_ms"]))
    print(row("  fetched → first reply", summary["fetched_to_first_reply_ms"]))
    for name, s in summary["by_step_ms"].items():
        print(row(f"step {name}", s))
    print(row("bot event-loop lag", summary["bot_loop_lag_ms"]))
    print("turnaround with instant workers, s:")
    print(row("button → model ready", summary["train_turnaround_s"]))
    print(row("/generate → portraits", summary["generate_turnaround_s"]))
    chats = summary["chats"]
    print(
        f"lost: {summary['lost']} (missing {chats['missing'] or 0}, duplicated {chats['duplicated'] or 0}, "
        f"unexpected {chats['unexpected'] or 0}, users failed {summary['user_failures'] or 0})"
    )
    print(f"runs: {summary['runs']}")
    print(f"CPU s during the load: {summary['cpu_s_during_load']}")
    print(f"getUpdates batches: {summary['get_updates_batches']}; bot log anomalies: {summary['bot_log_anomalies']}")
    print(f"p99 ≤ 300 ms: {'yes' if summary['p99_met'] else 'NO'}")
    for name, s in summary.get("bot_trace_ms", {}).items():
        print(row(name, s) + f"  total {s['total_s']} s")
    for line in summary.get("profile_top", []):
        print("  " + line)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--redis-url", default=os.environ.get("FACECHAIN_BENCH_REDIS_URL", DEFAULT_REDIS_URL))
    parser.add_argument("--out", default=os.environ.get("OUT") or "/tmp/facechain-telegram-load")
    parser.add_argument("--photos", choices=("single", "album"), default="single",
                        help="five photo messages each answered, or one album answered once")  # fmt: skip
    parser.add_argument("--workers", type=int, default=8, help="instant GPU workers (run_worker loops)")
    parser.add_argument("--style", default="watercolor")
    parser.add_argument(
        "--think",
        type=_seconds_range,
        default=None,
        metavar="MIN-MAX",
        help="a user pauses uniform MIN-MAX s before each update it sends, the first included (e.g. 1-3: a person "
        "reading the answer); default: none, every user sends the next update as soon as the last is answered",
    )
    parser.add_argument("--reply-timeout", type=float, default=120.0, help="s a user waits for an answer")
    parser.add_argument("--result-timeout", type=float, default=300.0, help="s a user waits for a model/portraits")
    parser.add_argument("--settle", type=float, default=3.0, help="s to wait for late (duplicate) replies")
    parser.add_argument("--deadline", type=float, default=600.0, help="hard cap on the whole run, s")
    parser.add_argument("--timeline-bucket", type=float, default=5.0)
    parser.add_argument(
        "--experiment",
        action="append",
        default=[],
        choices=sorted(EXPERIMENTS),
        help="a what-if change to the bot process, in memory: "
        + "; ".join(f"{k}: {v}" for k, v in EXPERIMENTS.items()),
    )
    parser.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="the bot process's event loop (FACECHAIN_UVLOOP on/off; uvloop falls back to asyncio if not installed)",
    )
    parser.add_argument(
        "--trace", action="store_true", help="time the bot's parts (DB lock, lanes, HTTP calls...) from inside"
    )
    parser.add_argument(
        "--profile",
        choices=("none", "cprofile", "py-spy"),
        default="none",
        help="profile the bot process (cProfile slows it down; py-spy samples it from outside)",
    )
    args = parser.parse_args(argv)
    if args.users < 1 or args.workers < 1:
        parser.error("--users and --workers must be at least 1")
    return args


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _seconds_range(text: str) -> tuple[float, float]:
    """``1-3`` → (1.0, 3.0): a range of seconds for ``--think``."""
    low, sep, high = text.partition("-")
    try:
        values = (float(low), float(high if sep else low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN-MAX seconds, like 1-3, not {text!r}") from None
    if not 0 <= values[0] <= values[1]:
        raise argparse.ArgumentTypeError(f"expected 0 <= MIN <= MAX, not {text!r}")
    return values


def prepare_out(out: Path) -> None:
    """Create the output folder and remove what a previous run left there."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in (
        "bot.log",
        "worker.log",
        "bot.pstats",
        "bot_loop_lag.json",
        "bot_pyspy.txt",
        "bot_profile.txt",
        "bot_trace.json",
    ):
        (out / stale).unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    prepare_out(Path(args.out))
    processes = Processes()

    def give_up() -> None:
        print(f"telegram_load: hard deadline of {args.deadline + 60:.0f} s passed; killing everything", file=sys.stderr)
        processes.kill_all()
        os._exit(3)

    watchdog = threading.Timer(args.deadline + 60, give_up)
    watchdog.daemon = True
    watchdog.start()
    try:
        summary = asyncio.run(asyncio.wait_for(run(args, processes), args.deadline))
    except TimeoutError:
        print(f"telegram_load: did not finish within --deadline {args.deadline:.0f} s", file=sys.stderr)
        return 2
    finally:
        watchdog.cancel()
        processes.kill_all()
    out = Path(args.out)
    (out / "telegram_load.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print_table(summary)
    print(f"\nsummary: {out / 'telegram_load.json'}")
    return 0 if summary["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
