"""Real ``facechain-bot`` processes for the scale-out tests, and reading their /metrics endpoints.

Each process gets a clean environment (no FACECHAIN_* from outside, this checkout on PYTHONPATH), its
own data directory (machines share nothing but Redis and the bucket) and its log in a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]

#: The tiny SD model's worker settings (CPU, 64 px, 2 steps; 2 candidates), as environment variables.
TINY_WORKER_ENV = {
    "FACECHAIN_DEVICE": "cpu",
    "FACECHAIN_DTYPE": "fp32",
    "FACECHAIN_RESOLUTION": "64",
    "FACECHAIN_INFERENCE_STEPS": "2",
    "FACECHAIN_CANDIDATES": "2",
    "FACECHAIN_GENERATE_BATCH_SIZE": "2",
    "FACECHAIN_STEPS_PER_PHOTO": "1",
    "FACECHAIN_MAX_TRAIN_STEPS": "3",
    "FACECHAIN_RANK_FACES": "false",
    "FACECHAIN_NSFW_CHECK": "false",
    "FACECHAIN_TRAIN_TIMEOUT_S": "300",
    "FACECHAIN_GENERATE_TIMEOUT_S": "300",
}


@dataclass
class Process:
    """A running ``facechain-bot`` command; its output (stdout and stderr) goes to ``log_path``."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int
    _log: object = field(repr=False, default=None)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of ``/metrics``: (name, sorted labels) → value."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
            text = response.read().decode()
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
        return samples

    def value(self, name: str, **labels: str) -> float | None:
        """One sample's value from a fresh scrape (None when absent)."""
        return self.scrape().get((name, tuple(sorted(labels.items()))))

    async def wait_metrics(self, within: float = 120.0) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """The first scrape that answers (the endpoint is up before the models load)."""
        deadline = asyncio.get_running_loop().time() + within
        while True:
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.popen.returncode}:\n{self.log()[-3000:]}")
            with contextlib.suppress(OSError):
                return await asyncio.to_thread(self.scrape)
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{self.name}: no /metrics within {within} s:\n{self.log()[-3000:]}")
            await asyncio.sleep(0.1)

    async def wait_value(self, name: str, expected: float, within: float = 120.0, **labels: str) -> None:
        """Eventually the sample ``name{labels}`` equals ``expected``."""
        deadline = asyncio.get_running_loop().time() + within
        seen = None
        while asyncio.get_running_loop().time() < deadline:
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.popen.returncode}:\n{self.log()[-3000:]}")
            with contextlib.suppress(OSError):
                seen = await asyncio.to_thread(self.value, name, **labels)
                if seen == expected:
                    return
            await asyncio.sleep(0.2)
        raise AssertionError(f"{self.name}: {name}{labels} is {seen}, not {expected}:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)


def start(name: str, args: list[str], env: dict[str, str], workdir: Path) -> Process:
    """Start ``facechain-bot ARGS`` (as ``python -m bot.cli``) with only ``env`` for settings."""
    workdir.mkdir(parents=True, exist_ok=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FACECHAIN_", "AWS_"))}
    base["PYTHONPATH"] = str(REPO)
    port = int(env.get("FACECHAIN_WORKER_METRICS_PORT") or env.get("FACECHAIN_BOT_METRICS_PORT") or 0)
    log_path = workdir / f"{name}.log"
    handle = log_path.open("wb")
    popen = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", *args],
        env={**base, **env}, cwd=workdir, stdout=handle, stderr=subprocess.STDOUT,
    )  # fmt: skip
    return Process(name, popen, log_path, port, handle)


def job_lines(log: str, kind: str, run_id: str) -> list[str]:
    """The log lines a worker wrote from ``kind job started`` to ``kind job ended`` of one run.

    arq's own lines are left out: its poll loop (health records) runs beside the job, and its lines
    about a job name the job id in the message.
    """
    lines = log.splitlines()
    start = next(i for i, line in enumerate(lines) if f"{kind} job started" in line and f"run={run_id}" in line)
    end = next(i for i, line in enumerate(lines) if i > start and f"{kind} job ended" in line)
    return [
        line for line in lines[start : end + 1] if re.match(r"\d{4}-\d\d-\d\d ", line) and " arq.worker: " not in line
    ]


def run_ids(log: str, kind: str) -> list[str]:
    """The run ids of the ``kind`` jobs a worker started, in order."""
    return re.findall(rf" run=(\S+): {kind} job started", log)
