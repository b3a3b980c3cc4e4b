"""The run id on every log line of a job, in the worker and in the bot.

A job function enters :func:`run_context`; every record logged in that context (its own lines, the
stage thread's, the helpers it calls) then carries the run id, added by :class:`RunIdFilter` on the
process's log handlers. ``asyncio.to_thread`` and tasks copy the context by themselves; a thread pool
does not: submit through :func:`in_this_context`.

Standard library only, so the bot and the worker can both use it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

#: The run the current code works for (None outside a job).
CURRENT_RUN: contextvars.ContextVar[str | None] = contextvars.ContextVar("facechain_run_id", default=None)

#: The process log format: `` run=<id>`` follows the logger's name on a job's lines.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s%(run)s: %(message)s"


@contextlib.contextmanager
def run_context(run_id: str | None) -> Iterator[None]:
    """Log lines in this block (and in tasks and ``to_thread`` calls made from it) carry ``run_id``."""
    token = CURRENT_RUN.set(run_id)
    try:
        yield
    finally:
        CURRENT_RUN.reset(token)


def in_this_context(fn: Callable[P, T]) -> Callable[P, T]:
    """``fn`` running in the caller's context: for work handed to other threads (safe to call in several)."""
    context = contextvars.copy_context()

    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        # A context can be entered by one thread at a time: each call runs in its own copy.
        return context.copy().run(fn, *args, **kwargs)

    return call


class RunIdFilter(logging.Filter):
    """Adds ``run_id`` (``-`` outside a job) and ``run`` (`` run=<id>`` or empty) to every record.

    Attach it to handlers (a logger's filter does not see its children's records). It never drops a
    record; a redaction filter may sit beside it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        run_id = CURRENT_RUN.get()
        record.run_id = run_id or "-"
        record.run = f" run={run_id}" if run_id else ""
        return True


def install_run_id_filter(root: logging.Logger | None = None) -> None:
    """Put a :class:`RunIdFilter` on every handler of the root logger (once each)."""
    for handler in (root or logging.getLogger()).handlers:
        if not any(isinstance(f, RunIdFilter) for f in handler.filters):
            handler.addFilter(RunIdFilter())
