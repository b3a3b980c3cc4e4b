"""The run supervisor's decision, as tables: how a run's job looks from Redis, and what is done about it."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from bot.queue import JobState
from bot.supervisor import Action, Health, health, judge


def _state(stored: bool = False, in_progress: bool = False, heartbeat: bool = False, pending: bool = False) -> JobState:
    return JobState(stored=stored, in_progress=in_progress, heartbeat=heartbeat, outcome_pending=pending)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (_state(stored=True), Health.WAITING),
        (_state(stored=True, in_progress=True, heartbeat=True), Health.RUNNING),
        # Sending its outcome while Redis was away: arq's keys are gone, the worker still beats.
        (_state(heartbeat=True), Health.RUNNING),
        (_state(pending=True), Health.DELIVERING),
        (_state(stored=True, in_progress=True, pending=True), Health.DELIVERING),
        # kill -9: arq's in-progress key lives on (31 min by default), the heartbeat lapsed.
        (_state(stored=True, in_progress=True), Health.SILENT),
        (_state(in_progress=True), Health.SILENT),
        # Out of tries, expired, never enqueued, or lost with Redis's data.
        (_state(), Health.GONE),
    ],
)
def test_what_redis_says_about_an_attempt(state: JobState, expected: Health) -> None:
    assert health(state) is expected


def test_waiting_where_no_worker_serves_the_queue_is_unserved() -> None:
    assert health(_state(stored=True), served=False) is Health.UNSERVED
    assert health(_state(stored=True, in_progress=True, heartbeat=True), served=False) is Health.RUNNING


@dataclass(frozen=True)
class Case:
    seen: Health
    suspect_for_s: float = 60.0
    attempt: int = 1
    stored: bool = False
    restartable: bool = True
    expected: Action = Action.KEEP


LOST_AFTER = 30.0
MAX_ATTEMPTS = 3
NO_WORKER_AFTER = 900.0

CASES = {
    "waiting in line is fine however long": Case(Health.WAITING, suspect_for_s=10_000),
    "a heartbeating worker is fine": Case(Health.RUNNING, suspect_for_s=10_000),
    "an outcome on the way is fine": Case(Health.DELIVERING, suspect_for_s=10_000),
    "a silent worker gets its grace": Case(Health.SILENT, suspect_for_s=29.9),
    "a vanished job gets its grace": Case(Health.GONE, suspect_for_s=0.0),
    "a silent worker past the grace: restart": Case(Health.SILENT, expected=Action.RESTART),
    "a vanished job past the grace: restart": Case(Health.GONE, suspect_for_s=30.0, expected=Action.RESTART),
    "the second attempt lost: restart again": Case(Health.SILENT, attempt=2, expected=Action.RESTART),
    "the last attempt lost: fail": Case(Health.SILENT, attempt=3, expected=Action.FAIL),
    "more attempts than allowed: fail": Case(Health.GONE, attempt=4, expected=Action.FAIL),
    "no stored request: fail": Case(Health.GONE, restartable=False, expected=Action.FAIL),
    "finished but its outcome was lost: deliver it": Case(Health.GONE, stored=True, expected=Action.DELIVER_STORED),
    "a stored outcome beats the attempt limit": Case(
        Health.SILENT, attempt=3, stored=True, expected=Action.DELIVER_STORED
    ),
    "a stored outcome still waits out the grace": Case(Health.GONE, suspect_for_s=1.0, stored=True),
    # A worker may be starting (models load for minutes): the run waits NO_WORKER_AFTER, then fails.
    "no worker serves the queue yet: wait": Case(Health.UNSERVED, suspect_for_s=NO_WORKER_AFTER - 1),
    "no worker served the queue all along: fail": Case(
        Health.UNSERVED, suspect_for_s=NO_WORKER_AFTER, expected=Action.FAIL_NO_WORKER
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_what_is_done_with_a_run(case: Case) -> None:
    action = judge(
        case.seen,
        suspect_for_s=case.suspect_for_s,
        lost_after_s=LOST_AFTER,
        attempt=case.attempt,
        max_attempts=MAX_ATTEMPTS,
        has_stored_outcome=case.stored,
        restartable=case.restartable,
        no_worker_after_s=NO_WORKER_AFTER,
    )
    assert action is case.expected
