"""Progress edits, throttled per channel.

Discord's rate limits on message edits are per channel; a progress message that changes every half
second would burn them for no reader's benefit. So at most one edit per ``interval`` goes to a
channel: an edit that comes too soon waits, and a newer edit of the same message replaces it (the
latest text wins). A final edit is sent at once, replaces whatever waited for that message, and
makes later intermediate edits of it no-ops. Edits of one channel go out one at a time, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger("facechain.discord")

#: Seconds between two progress edits in one channel.
EDIT_INTERVAL_S = 3.0
#: Channels tracked before idle ones are forgotten.
_LANES_BEFORE_PRUNING = 1_000
#: Messages remembered as finished (a late intermediate edit of one of them is dropped).
_FINISHED_MEMORY = 10_000

#: ``edit(channel_id, message_id, text, final)`` performs one edit.
EditFunction = Callable[[int, int, str, bool], Awaitable[None]]


@dataclass
class _Lane:
    """One channel's edits."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_sent: float = float("-inf")
    #: message id → latest text waiting for its turn (insertion order = order of first arrival).
    waiting: dict[int, str] = field(default_factory=dict)
    drainer: asyncio.Task[None] | None = None


class EditThrottle:
    """Calls ``edit`` at most once per ``interval`` per channel; final edits at once."""

    def __init__(
        self, edit: EditFunction, interval: float = EDIT_INTERVAL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._edit = edit
        self._interval = interval
        self._clock = clock
        self._lanes: dict[int, _Lane] = {}
        self._finished: OrderedDict[tuple[int, int], None] = OrderedDict()

    async def submit(self, channel_id: int, message_id: int, text: str, *, final: bool = False) -> None:
        """Queue an edit. A final edit is awaited; an intermediate one is sent in the background."""
        if len(self._lanes) > _LANES_BEFORE_PRUNING:
            self._prune()
        lane = self._lanes.setdefault(channel_id, _Lane())
        if final:
            lane.waiting.pop(message_id, None)
            self._mark_finished(channel_id, message_id)
            async with lane.lock:
                await self._send(channel_id, lane, message_id, text, final=True)
            return
        if (channel_id, message_id) in self._finished:
            return
        lane.waiting[message_id] = text
        if lane.drainer is None or lane.drainer.done():
            lane.drainer = asyncio.create_task(self._drain(channel_id, lane), name=f"discord-edits-{channel_id}")

    async def aclose(self) -> None:
        """Stop sending; edits still waiting are dropped (progress is lossy by design)."""
        tasks = [lane.drainer for lane in self._lanes.values() if lane.drainer is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._lanes.clear()

    async def _drain(self, channel_id: int, lane: _Lane) -> None:
        while lane.waiting:
            delay = lane.last_sent + self._interval - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
            async with lane.lock:
                if not lane.waiting:
                    break
                delay = lane.last_sent + self._interval - self._clock()
                if delay > 0:
                    continue  # a final edit went out while this one slept
                message_id = next(iter(lane.waiting))
                text = lane.waiting.pop(message_id)
                await self._send(channel_id, lane, message_id, text, final=False)

    async def _send(self, channel_id: int, lane: _Lane, message_id: int, text: str, *, final: bool) -> None:
        try:
            await self._edit(channel_id, message_id, text, final)
        except Exception:
            log.exception("progress edit of message %s in channel %s failed", message_id, channel_id)
        finally:
            lane.last_sent = self._clock()

    def _prune(self) -> None:
        """Forget channels with nothing waiting whose last edit is older than the interval."""
        now = self._clock()
        for channel_id, lane in list(self._lanes.items()):
            idle = not lane.waiting and not lane.lock.locked() and (lane.drainer is None or lane.drainer.done())
            if idle and now - lane.last_sent >= self._interval:
                del self._lanes[channel_id]

    def _mark_finished(self, channel_id: int, message_id: int) -> None:
        self._finished[(channel_id, message_id)] = None
        self._finished.move_to_end((channel_id, message_id))
        while len(self._finished) > _FINISHED_MEMORY:
            self._finished.popitem(last=False)
