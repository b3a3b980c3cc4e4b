"""How long the bot keeps trying to show an outcome the chat platform would not take."""

from __future__ import annotations

import logging

import pytest
from arq.worker import Retry

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
