"""The worker's background work (warm-up, compiles) when the worker stops: it ends, or the process
leaves without it, never by an abort."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

from pipeline.background import BackgroundWork, still_running
from tests.cli_process import ROOT

# A background thread that stays inside torch's C++ code (as a compile does) while the process ends.
_BUSY_AT_EXIT = textwrap.dedent(
    """
    import logging, sys, threading, torch
    from pipeline.background import BackgroundWork, leave_if_busy

    logging.basicConfig(level=logging.INFO)
    inside = threading.Event()

    def compile_like():
        a = torch.randn(1200, 1200)
        while True:
            inside.set()
            a = (a @ a).clamp(-1, 1)

    work = BackgroundWork()
    work.start("unet-compile", compile_like)
    inside.wait()
    print("left:", work.stop(0.2), flush=True)
    if sys.argv[1] == "leave":
        leave_if_busy(0)
    """
)


def _exit_with_torch_busy(how: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", _BUSY_AT_EXIT, how]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_a_worker_leaving_while_a_compile_runs_exits_with_its_own_status() -> None:
    left = _exit_with_torch_busy("leave")
    assert left.returncode == 0, left.stderr
    assert "left: ['unet-compile']" in left.stdout
    assert "exiting without waiting for background work that is still running: unet-compile" in left.stderr
    assert "terminate called" not in left.stderr


def test_without_leaving_that_way_the_same_exit_aborts() -> None:
    # Why leave_if_busy exists: Python's own shutdown aborts the process (SIGABRT) here.
    aborted = _exit_with_torch_busy("interpreter-shutdown")
    assert aborted.returncode == -6, (aborted.returncode, aborted.stderr)
    assert "terminate called without an active exception" in aborted.stderr


def test_work_that_watches_the_flag_ends_and_nothing_new_starts_once_stopping() -> None:
    work = BackgroundWork()
    ran: list[str] = []

    def warm_up() -> None:
        while not work.stopping.wait(0.01):
            pass
        ran.append("warm-up ended")

    assert work.start("warm-up", warm_up)
    started = time.monotonic()
    assert work.stop(30) == []
    assert time.monotonic() - started < 5, "stop returned as soon as the work ended"
    assert ran == ["warm-up ended"]

    assert not work.start("unet-compile", lambda: ran.append("compiled"))
    time.sleep(0.1)
    assert ran == ["warm-up ended"], "no compile started after the stop"
    assert "warm-up" not in still_running() and "unet-compile" not in still_running()


def test_stop_names_the_work_that_did_not_end_in_time() -> None:
    release = threading.Event()
    work = BackgroundWork()
    work.start("train-compile", release.wait)
    try:
        assert work.stop(0.1) == ["train-compile"]
        assert "train-compile" in still_running()
    finally:
        release.set()
    assert work.stop(5) == []
