"""One lane per chat: a chat's updates are handled one at a time and in order, chats in parallel.

PTB hands every update to :meth:`ChatLanes.submit`, which returns at once. Parts of an album (updates
sharing a ``media_group_id``) are gathered until none has arrived for ``album_wait`` seconds and then
handled together, once. Any other update of the chat first flushes a gathered album, so "album, then
/done" is seen in that order even when /done arrives within the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from telegram import Update

from pipeline.aio import cancel_all

log = logging.getLogger("facechain.telegram")

#: Seconds without a new part after which an album is complete (Telegram sends its parts in a burst).
ALBUM_WAIT_S = 1.0
#: Updates handled at once across all chats.
MAX_BUSY = 64

UpdateHandler = Callable[[Update], Awaitable[None]]
AlbumHandler = Callable[[list[Update]], Awaitable[None]]


@dataclass
class _Lane:
    items: deque[Update] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    album: list[Update] = field(default_factory=list)
    album_id: str | None = None
    deadline: float = 0.0
    task: asyncio.Task[None] | None = None


def lane_key(update: Update) -> int | None:
    """The chat an update belongs to (None: it has none and needs no ordering)."""
    chat = update.effective_chat
    return chat.id if chat is not None else None


def album_id(update: Update) -> str | None:
    message = update.message
    return message.media_group_id if message is not None else None


class ChatLanes:
    """Per-chat ordering and album gathering in front of the update handlers."""

    def __init__(
        self,
        handle: UpdateHandler,
        handle_album: AlbumHandler,
        *,
        album_wait: float = ALBUM_WAIT_S,
        max_busy: int = MAX_BUSY,
    ) -> None:
        self._handle = handle
        self._handle_album = handle_album
        self._album_wait = album_wait
        self._busy = asyncio.Semaphore(max_busy)
        self._lanes: dict[int | None, _Lane] = {}
        #: Set once the grace is over: a lane takes no further update, even if its cancel was swallowed.
        self._stopping = False

    def submit(self, update: Update) -> None:
        """Queue an update on its chat's lane (never blocks)."""
        key = lane_key(update)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        lane.items.append(update)
        lane.wake.set()
        if lane.task is None:
            lane.task = asyncio.create_task(self._run(key, lane), name=f"telegram-chat-{key}")

    async def aclose(self, grace: float = 10.0) -> None:
        """Let the lanes finish what they hold (albums included) for up to ``grace`` s, then stop them."""
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        self._stopping = True
        unhandled = sum(len(lane.items) + len(lane.album) for lane in self._lanes.values())
        if unhandled:
            log.warning("stopping: %d queued update(s) in %d chat(s) left unhandled", unhandled, len(pending))
        # A handler inside redis-py can swallow a cancel: cancel_all cancels again until it ends.
        await cancel_all(list(pending))

    async def _run(self, key: int | None, lane: _Lane) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not self._stopping:
                if lane.items:
                    await self._take(lane, lane.items.popleft(), loop.time())
                elif lane.album:
                    remaining = lane.deadline - loop.time()
                    if remaining <= 0:
                        await self._flush(lane)
                        continue
                    lane.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lane.wake.wait(), remaining)
                else:
                    return
        finally:
            # No await since the lane was last found empty: submit() can't have slipped anything in.
            if self._lanes.get(key) is lane:
                del self._lanes[key]

    async def _take(self, lane: _Lane, update: Update, now: float) -> None:
        group = album_id(update)
        if group is not None:
            if lane.album and lane.album_id != group:
                await self._flush(lane)
            lane.album.append(update)
            lane.album_id = group
            lane.deadline = now + self._album_wait
            return
        if lane.album:
            await self._flush(lane)
        await self._guarded(self._handle(update))

    async def _flush(self, lane: _Lane) -> None:
        parts, lane.album, lane.album_id = lane.album, [], None
        await self._guarded(self._handle_album(parts))

    async def _guarded(self, work: Awaitable[None]) -> None:
        async with self._busy:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("handling a Telegram update failed")
