"""Progress edits both adapters share: the lookup of a run's message, and the per-chat throttle."""

from __future__ import annotations

import asyncio
import time

import pytest

from bot.chat_progress import EditThrottle, ProgressMessages


class Recorder:
    def __init__(self) -> None:
        self.edits: list[tuple[int, int, str, bool, float]] = []

    async def __call__(self, chat_id: int, message_id: int, text: str, final: bool) -> None:
        self.edits.append((chat_id, message_id, text, final, time.monotonic()))


async def test_edits_coalesce_and_keep_an_interval_per_chat() -> None:
    sent = Recorder()
    throttle: EditThrottle[str] = EditThrottle(sent, interval=0.3)
    started = time.monotonic()
    for step in range(1, 6):
        await throttle.submit(1, 10, f"step {step}")  # the first goes at once; the rest wait, the latest wins
    await throttle.submit(2, 20, "other chat")
    await asyncio.sleep(0.05)
    await throttle.submit(1, 10, "step 6")
    await asyncio.sleep(0.45)
    assert [(c, t) for c, _, t, _, _ in sent.edits] == [(1, "step 1"), (2, "other chat"), (1, "step 6")]
    assert sent.edits[0][4] - started < 0.05, "the first edit goes at once"
    assert sent.edits[1][4] - started < 0.1, "another chat does not wait"
    assert sent.edits[2][4] - sent.edits[0][4] >= 0.29, "one edit per interval per chat"
    await throttle.aclose()


async def test_a_final_edit_goes_at_once_and_later_ones_are_dropped() -> None:
    sent = Recorder()
    throttle: EditThrottle[str] = EditThrottle(sent, interval=5.0)
    await throttle.submit(1, 10, "10%")
    await throttle.submit(1, 10, "50%")  # waits for its turn
    await throttle.submit(1, 10, "Done.", final=True)  # replaces it, at once
    await throttle.submit(1, 10, "90%")  # late: the run is over
    await asyncio.sleep(0.05)
    assert [(t, f) for _, _, t, f, _ in sent.edits] == [("10%", False), ("Done.", True)]
    await throttle.aclose()


async def test_a_failing_edit_does_not_stop_the_next() -> None:
    calls: list[str] = []

    async def flaky(chat_id: int, message_id: int, text: str, final: bool) -> None:
        calls.append(text)
        if text == "boom":
            raise RuntimeError("the platform said no")

    throttle: EditThrottle[str] = EditThrottle(flaky, interval=0.0)
    await throttle.submit(1, 10, "boom", final=True)
    await throttle.submit(1, 11, "fine", final=True)
    assert calls == ["boom", "fine"]


async def test_an_edit_racing_the_send_waits_for_the_message() -> None:
    messages: ProgressMessages[int] = ProgressMessages(wait_s=5.0)
    posted = asyncio.Event()

    async def send() -> int:
        await posted.wait()
        return 42

    sending = asyncio.create_task(messages.sending("run1", send))
    await asyncio.sleep(0)
    finding = asyncio.create_task(messages.find("run1"))
    await asyncio.sleep(0.05)
    assert not finding.done(), "the edit waits for the message id"
    posted.set()
    assert await sending == 42 and await finding == 42
    assert await messages.find("run1", final=True) == 42
    assert await messages.find("run1") is None, "a final edit forgets the run"
    assert await messages.find("never-sent") is None


async def test_a_failed_send_releases_the_waiting_edit() -> None:
    messages: ProgressMessages[int] = ProgressMessages(wait_s=5.0)

    async def send() -> int:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        await messages.sending("run1", send)
    started = time.monotonic()
    assert await messages.find("run1") is None
    assert time.monotonic() - started < 1.0, "no 5 s wait for a message that will never exist"


async def test_the_memory_is_bounded() -> None:
    messages: ProgressMessages[int] = ProgressMessages(memory=2)

    async def post(n: int) -> int:
        return n

    for n in range(3):
        await messages.sending(f"run{n}", lambda n=n: post(n))  # type: ignore[misc]
    assert [await messages.find(f"run{n}") for n in range(3)] == [None, 1, 2]
