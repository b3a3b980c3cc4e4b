"""Running the real ``facechain-bot`` command as a separate process, as an operator does."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

_LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")

#: The checkout under test: the subprocess imports this code, not an installed copy.
ROOT = Path(__file__).resolve().parents[1]


def cli_environment(workdir: Path, redis_url: str, /, **settings: str) -> dict[str, str]:
    """An environment with no FACECHAIN_* from outside, data and models under ``workdir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACECHAIN_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["FACECHAIN_DATA_DIR"] = str(workdir / "data")
    env["FACECHAIN_MODELS_DIR"] = str(workdir / "models")
    env["FACECHAIN_REDIS_URL"] = redis_url
    env.update({f"FACECHAIN_{name.upper()}": value for name, value in settings.items()})
    return env


@dataclass(frozen=True)
class Finished:
    """What a finished command left: exit code and its two streams."""

    returncode: int
    stdout: str
    stderr: str

    def error_lines(self) -> list[str]:
        """stderr's lines, without blank ones and without log records (``2026-12-04 18:38:10,726 INFO …``)."""
        return [line for line in self.stderr.splitlines() if line.strip() and not _LOG_RECORD.match(line)]


def run_cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> Finished:
    """Run ``facechain-bot ARGS`` to its end."""
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    return Finished(done.returncode, done.stdout, done.stderr)


def assert_one_line_exit_2(result: Finished, *expected: str) -> str:
    """The operator-error contract: exit code 2, no traceback, the message on one stderr line."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    lines = result.error_lines()
    assert len(lines) == 1, lines
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]
