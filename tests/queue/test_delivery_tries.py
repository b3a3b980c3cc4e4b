"""How long the bot keeps trying to show an outcome the chat platform would not take."""

from __future__ import annotations

import asyncio
import logging

import pytest
from arq.worker import Retry

from bot import queue as queue_module
from bot.queue import DELIVERY_TRIES, _deliver_outcome, delivery_retry_delay
from pipeline import jobs


async def _platform_down(outcome: jobs.TrainOutcome | jobs.GenerateOutcome) -> None:
    raise ConnectionError("platform unreachable")


def _payload() -> object:
    return jobs.TrainOutcome(run_id="train_0001", error=jobs.ErrorCode.CANCELLED).model_dump(mode="json")


def test_the_tries_span_about_half_an_hour_of_outage() -> None:
    waited = sum(delivery_retry_delay(tries) for tries in range(1, DELIVERY_TRIES))
    assert 25 * 60 <= waited <= 35 * 60


async def test_a_failed_delivery_is_tried_again_later() -> None:
    with pytest.raises(Retry) as retried:
        await _deliver_outcome({"on_outcome": _platform_down, "job_try": 3}, _payload())
    assert retried.value.defer_score == delivery_retry_delay(3) * 1000


async def test_the_last_try_gives_up_with_an_error_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, "facechain.queue"):
        result = await _deliver_outcome({"on_outcome": _platform_down, "job_try": DELIVERY_TRIES}, _payload())
    assert result == "undelivered"
    assert f"delivering run train_0001 failed {DELIVERY_TRIES} times; giving up" in caplog.text


async def test_a_try_that_takes_too_long_is_cut_and_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Waiting out flood control for minutes must not outlast arq's own timeout, which would end the
    job for good: the try is cut first and counts as a failed one."""
    monkeypatch.setattr(queue_module, "DELIVERY_TRY_S", 0.05)

    async def slow(outcome: jobs.TrainOutcome | jobs.GenerateOutcome) -> None:
        await asyncio.sleep(5)

    with pytest.raises(Retry):
        await _deliver_outcome({"on_outcome": slow, "job_try": 1}, _payload())


async def test_the_last_try_tells_the_service_it_gave_up() -> None:
    given_up: list[str] = []

    async def note(run_id: str) -> None:
        given_up.append(run_id)

    ctx = {"on_outcome": _platform_down, "on_given_up": note, "job_try": DELIVERY_TRIES}
    assert await _deliver_outcome(ctx, _payload()) == "undelivered"
    assert given_up == ["train_0001"]
