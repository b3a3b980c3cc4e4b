"""The work a GPU worker does beside its jobs, in threads of its own (the warm-up, the compiles), and
how the process ends while a piece of it still runs.

Those threads spend their time inside torch's C++ code. When a process exits while such a daemon
thread is there, Python's shutdown ends the thread by unwinding its stack, which that code does not
allow: the process aborts ("terminate called without an active exception", exit status 134) instead
of exiting with its own status. So a stopping worker first stops its background work
(:meth:`BackgroundWork.stop`): nothing new starts, and the piece that runs gets a few seconds to
end. A compile does not end in seconds; :func:`leave_if_busy` then ends the process without
Python's shutdown. By then the worker's jobs have ended and their outcomes are sent: what is lost is
the compile's own progress.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import NoReturn

log = logging.getLogger("facechain.worker")

#: Seconds a stopping worker waits for its background work: a graph capture ends within them, a
#: compile (tens of seconds to minutes) does not, and the process then leaves without it.
STOP_WAIT_S = 5.0

#: Every background thread this process started, while it runs.
_running: weakref.WeakSet[threading.Thread] = weakref.WeakSet()


class BackgroundWork:
    """The background threads of one worker's stages, and the flag that asks them to stop.

    A piece of work reads :attr:`stopping` between its parts and returns early once it is set.
    """

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self, name: str, target: Callable[..., object], *args: object) -> bool:
        """Run ``target(*args)`` in a daemon thread called ``name``; False, and nothing runs, once stopping."""
        with self._lock:
            if self.stopping.is_set():
                return False
            thread = threading.Thread(target=target, args=args, name=name, daemon=True)
            self._threads.append(thread)
            _running.add(thread)
            thread.start()
        return True

    def stop(self, wait_s: float) -> list[str]:
        """Ask the work to stop and wait up to ``wait_s`` for it: the names of the threads still running."""
        with self._lock:
            self.stopping.set()
            threads = list(self._threads)
        deadline = time.monotonic() + wait_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [thread.name for thread in threads if thread.is_alive()]


def still_running() -> list[str]:
    """The names of this process's background threads that have not ended."""
    return sorted(thread.name for thread in list(_running) if thread.is_alive())


def leave_if_busy(status: int) -> None:
    """End the process with ``status`` now, logs flushed, if a background thread still runs; else return.

    For the very end of a process's main, once everything else is closed (see the module's docstring).
    """
    busy = still_running()
    if not busy:
        return
    log.warning("exiting without waiting for background work that is still running: %s", ", ".join(busy))
    leave(status)


def leave(status: int) -> NoReturn:
    """End the process with ``status`` now, logs flushed, whatever threads still run (a stuck stage's
    thread would keep a normal exit waiting for it forever)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
