"""Progress edits, throttled per chat: Telegram allows about one edit every few seconds per chat.

An intermediate edit that comes too soon waits; a later one for the same message replaces it (the
latest text wins). A final edit goes out at once and cancels what was waiting; intermediate edits
that arrive after it are dropped. Edits of one chat are sent one at a time, in order.
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

log = logging.getLogger("facechain.telegram")

#: Seconds between two edits in one chat.
EDIT_INTERVAL_S = 3.0
#: Chats tracked before idle ones are forgotten.
_CHATS_BEFORE_PRUNING = 1_000
#: Messages remembered as finished (a late intermediate edit of one of them is dropped).
_FINISHED_MEMORY = 10_000

#: What an edit carries (the sender's text and keyboard).
P = TypeVar("P")


@dataclass
class _ChatEdits(Generic[P]):
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_sent: float = float("-inf")
    #: message id → the latest content waiting for its turn.
    waiting: dict[int, P] = field(default_factory=dict)
    timer: asyncio.Task[None] | None = None


class EditThrottle(Generic[P]):
    """Calls ``edit(chat_id, message_id, content)`` at most once per ``interval`` per chat, finals at once."""

    def __init__(
        self,
        edit: Callable[[int, int, P], Awaitable[None]],
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
                await self._send(chat_id, chat, message_id, content)
            return
        if (chat_id, message_id) in self._finished:
            return
        due = chat.last_sent + self._interval - self._clock()
        if due <= 0 and chat.timer is None and not chat.lock.locked():
            async with chat.lock:
                await self._send(chat_id, chat, message_id, content)
            return
        chat.waiting[message_id] = content
        if chat.timer is None:
            chat.timer = asyncio.create_task(self._later(chat_id, chat, max(due, 0.0)))

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
                        await self._send(chat_id, chat, message_id, content)
                    delay = self._interval
        finally:
            chat.timer = None

    async def _send(self, chat_id: int, chat: _ChatEdits[P], message_id: int, content: P) -> None:
        chat.last_sent = self._clock()
        try:
            await self._edit(chat_id, message_id, content)
        except Exception:
            log.exception("editing a progress message in chat %s failed", chat_id)

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

    async def aclose(self) -> None:
        """Drop the edits still waiting (on shutdown)."""
        timers = [c.timer for c in self._chats.values() if c.timer is not None]
        for timer in timers:
            timer.cancel()
        for timer in timers:
            with contextlib.suppress(asyncio.CancelledError):
                await timer
        self._chats.clear()
