"""Why a worker (or a script-mode command) cannot start: torch-free, so the command line can name it.

Every subclass's text says what is missing and how to fix it; ``facechain-bot`` prints it as one line
and exits with code 2 instead of showing a traceback.
"""

from __future__ import annotations


class WorkerSetupError(Exception):
    """A model, a device or a setting the GPU stages need is not usable on this machine."""
