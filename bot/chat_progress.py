"""What both chat adapters do with a run's progress message: find it, and edit it without flooding.

:class:`ProgressMessages` remembers where each run's progress message is; an edit that races the
message's own send waits for it instead of being dropped. :class:`EditThrottle` spaces edits per
chat (Telegram allows about one edit every few seconds per chat; Discord rate-limits edits per
channel): an intermediate edit that comes too soon waits, and a later one for the same message
replaces it (the latest text wins). A final edit goes out at once and cancels what was waiting;
intermediate edits that arrive after it are dropped. Edits of one chat are sent one at a time, in order.

Platform-neutral (asyncio only): each adapter passes in its own edit call and message reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger("facechain.chat")

#: Seconds between two edits in one chat.
EDIT_INTERVAL_S = 3.0
#: How long an edit waits for its run's progress message to be sent.
PROGRESS_WAIT_S = 30.0
#: Chats tracked before idle ones are forgotten.
_CHATS_BEFORE_PRUNING = 1_000
#: Messages remembered as finished (a late intermediate edit of one of them is dropped).
_FINISHED_MEMORY = 10_000
#: Runs whose progress message is remembered.
_PROGRESS_MEMORY = 10_000

#: What an edit carries (the sender's text, and its keyboard where the platform needs one).
P = TypeVar("P")
#: Where a progress message is (the platform's chat and message ids).
T = TypeVar("T")


class ProgressMessages(Generic[T]):
    """Run id → its progress message, for the edits that follow (bounded, oldest forgotten first)."""

    def __init__(self, wait_s: float = PROGRESS_WAIT_S, memory: int = _PROGRESS_MEMORY) -> None:
        self._wait_s = wait_s
        self._memory = memory
        self._runs: OrderedDict[str, asyncio.Future[T | None]] = OrderedDict()

    async def sending(self, run_id: str, send: Callable[[], Awaitable[T]]) -> T:
        """Run ``send`` (which posts the run's progress message); edits arriving meanwhile wait for it."""
        # Registered before sending: an edit that races the send waits for the reference instead of dropping.
        waiting: asyncio.Future[T | None] = asyncio.get_running_loop().create_future()
        self._runs[run_id] = waiting
        self._runs.move_to_end(run_id)
        while len(self._runs) > self._memory:
            self._runs.popitem(last=False)
        try:
            where = await send()
        except BaseException:
            waiting.set_result(None)
            raise
        waiting.set_result(where)
        return where

    async def find(self, run_id: str, *, final: bool = False) -> T | None:
        """Where the run's progress message is (waiting for one being sent); None if not known here.

        A final edit forgets the run: nothing edits its message after that.
        """
        waiting = self._runs.pop(run_id, None) if final else self._runs.get(run_id)
        if waiting is None:
            return None
        try:
            return await asyncio.wait_for(asyncio.shield(waiting), self._wait_s)
        except TimeoutError:
            return None


@dataclass
class _ChatEdits(Generic[P]):
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_sent: float = float("-inf")
    #: message id → the latest content waiting for its turn.
    waiting: dict[int, P] = field(default_factory=dict)
    timer: asyncio.Task[None] | None = None


class EditThrottle(Generic[P]):
    """Calls ``edit(chat_id, message_id, content, final)`` at most once per ``interval`` per chat, finals at once."""

    def __init__(
        self,
        edit: Callable[[int, int, P, bool], Awaitable[None]],
        interval: float = EDIT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._edit = edit
        self._interval = interval
        self._clock = clock
        self._chats: dict[int, _ChatEdits[P]] = {}
        self._finished: OrderedDict[tuple[int, int], None] = OrderedDict()

    async def submit(self, chat_id: int, message_id: int, content: P, *, final: bool = False) -> None:
        """Edit now, later (coalesced), or never (superseded by a final edit)."""
        if len(self._chats) > _CHATS_BEFORE_PRUNING:
            self._prune()
        chat = self._chats.setdefault(chat_id, _ChatEdits[P]())
        if final:
            chat.waiting.pop(message_id, None)
            self._remember_finished(chat_id, message_id)
            async with chat.lock:
                await self._send(chat_id, chat, message_id, content, final=True)
            return
        if (chat_id, message_id) in self._finished:
            return
        due = chat.last_sent + self._interval - self._clock()
        if due <= 0 and chat.timer is None and not chat.lock.locked():
            async with chat.lock:
                await self._send(chat_id, chat, message_id, content, final=False)
            return
        chat.waiting[message_id] = content
        if chat.timer is None:
            chat.timer = asyncio.create_task(self._later(chat_id, chat, max(due, 0.0)))

    async def aclose(self) -> None:
        """Drop the edits still waiting (on shutdown: progress is lossy by design)."""
        timers = [c.timer for c in self._chats.values() if c.timer is not None]
        for timer in timers:
            timer.cancel()
        for timer in timers:
            with contextlib.suppress(asyncio.CancelledError):
                await timer
        self._chats.clear()

    async def _later(self, chat_id: int, chat: _ChatEdits[P], delay: float) -> None:
        try:
            while chat.waiting:
                await asyncio.sleep(delay)
                async with chat.lock:
                    # Another edit (a final one) may have gone out while this one slept.
                    delay = chat.last_sent + self._interval - self._clock()
                    if delay > 0 or not chat.waiting:
                        continue
                    message_id = next(iter(chat.waiting))
                    content = chat.waiting.pop(message_id)
                    if (chat_id, message_id) not in self._finished:
                        await self._send(chat_id, chat, message_id, content, final=False)
                    delay = self._interval
        finally:
            chat.timer = None

    async def _send(self, chat_id: int, chat: _ChatEdits[P], message_id: int, content: P, *, final: bool) -> None:
        chat.last_sent = self._clock()
        try:
            await self._edit(chat_id, message_id, content, final)
        except Exception:
            log.exception("editing progress message %s in chat %s failed", message_id, chat_id)

    def _prune(self) -> None:
        """Forget chats with nothing waiting whose last edit is older than the interval."""
        now = self._clock()
        idle = [
            chat_id
            for chat_id, chat in self._chats.items()
            if chat.timer is None and not chat.waiting and not chat.lock.locked()
            and now - chat.last_sent >= self._interval
        ]  # fmt: skip
        for chat_id in idle:
            del self._chats[chat_id]

    def _remember_finished(self, chat_id: int, message_id: int) -> None:
        self._finished[(chat_id, message_id)] = None
        while len(self._finished) > _FINISHED_MEMORY:
            self._finished.popitem(last=False)
