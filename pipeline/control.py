"""How a running stage reports progress and learns that it must stop (no queue, no torch here)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline import jobs


class StageCancelled(Exception):
    """Raised inside a stage when the run was cancelled or timed out."""


@dataclass
class StageControl:
    """What a blocking stage gets to report progress and to learn it should stop."""

    report: Callable[[jobs.Stage, float, str], None] = lambda stage, fraction, message: None
    stop_event: threading.Event = field(default_factory=threading.Event)

    def should_stop(self) -> bool:
        return self.stop_event.is_set()

    def check(self) -> None:
        """Raise :class:`StageCancelled` if the run should stop (call between steps)."""
        if self.stop_event.is_set():
            raise StageCancelled()
