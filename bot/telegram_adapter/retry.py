"""Retrying Bot API calls: honour flood control (429 ``retry_after``) and ride out network errors.

Polling needs none of this (PTB's updater re-fetches, and an update is only confirmed once handled);
every call the adapter makes itself goes through :func:`with_retries`.
"""

from __future__ import annotations

import asyncio
import datetime as dtm
import logging
import warnings
from collections.abc import Awaitable, Callable
from typing import TypeVar

from telegram.error import BadRequest, NetworkError, RetryAfter, TimedOut
from telegram.warnings import PTBDeprecationWarning

log = logging.getLogger("facechain.telegram")

T = TypeVar("T")

#: Tries of one call in all (the first one included).
ATTEMPTS = 4
#: First pause after a network error; doubled after each further one.
BACKOFF_S = 0.5
#: A flood-control pause longer than this is not waited out: the call fails instead.
MAX_RETRY_AFTER_S = 120.0


def retry_after_seconds(exc: RetryAfter) -> float:
    """The pause Telegram asked for, in seconds (PTB 22 returns an int or a timedelta, with a warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    if isinstance(value, dtm.timedelta):
        return value.total_seconds()
    return float(value)


async def with_retries(
    call: Callable[[], Awaitable[T]],
    what: str,
    *,
    attempts: int = ATTEMPTS,
    backoff_s: float = BACKOFF_S,
) -> T:
    """Run ``call``; after a 429 sleep ``retry_after`` and try again, after a network error back off.

    A ``BadRequest`` (a subclass of ``NetworkError`` in PTB) is the caller's fault and is not retried.
    ``what`` names the call in log lines; it must never contain a URL (URLs carry the token).
    """
    delay = backoff_s
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except RetryAfter as exc:
            pause = retry_after_seconds(exc)
            if attempt == attempts or pause > MAX_RETRY_AFTER_S:
                raise
            log.info("flood control on %s: retrying in %.1f s", what, pause)
            await asyncio.sleep(pause)
        except BadRequest:
            raise
        except (TimedOut, NetworkError) as exc:
            if attempt == attempts:
                raise
            log.info("network error on %s (%s): retry %d in %.1f s", what, type(exc).__name__, attempt, delay)
            await asyncio.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover
