"""Real processes for fault tests: a redis-server of the test's own (to stop and restart) and GPU
worker processes (to kill -9). Both are children of the test and are ended by it, by process id."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from redis.asyncio import Redis

from bot.up import free_port
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[1]


class RedisServer:
    """``redis-server`` on a free port, persisting to an append-only file in ``folder``."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    async def start(self) -> None:
        assert self.process is None, "already running"
        self.process = self._spawn()
        await eventually(self._answers, 15, f"redis-server on port {self.port}")

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
                "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "no",
            ],
            stdout=(self.folder / "redis.log").open("ab"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip

    async def _answers(self) -> bool:
        client = Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            return bool(await client.ping())
        except Exception:
            return False
        finally:
            await client.aclose()

    async def stop(self) -> None:
        """A clean shutdown (SIGTERM), as a restart by an operator or an orchestrator does it."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(self.process.wait, 15)
        self.process = None

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and the kernel still accepts new ones, but nothing answers
        (a hung Redis, or one cut off by a network partition without resets)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT: it answers again, on the connections it had."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(10)
        self.process = None


class WorkerProcess:
    """``python -m tests.worker_process``: the real arq worker (pipeline.worker.run_worker) on the
    scripted GPU stages, in a process of its own that the test can kill -9."""

    def __init__(self, data_dir: Path, redis_url: str, log_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.redis_url = redis_url
        self.log_dir = log_dir
        self.env = env
        self.processes: list[subprocess.Popen[bytes]] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    @property
    def current(self) -> subprocess.Popen[bytes]:
        return self.processes[-1]

    def start(self, **env: str) -> subprocess.Popen[bytes]:
        variables = {k: v for k, v in os.environ.items() if not k.startswith("FACECHAIN_")}
        variables.update(
            PYTHONPATH=str(ROOT),
            FACECHAIN_DATA_DIR=str(self.data_dir),
            FACECHAIN_REDIS_URL=self.redis_url,
            **self.env,
            **env,
        )
        log = (self.log_dir / f"worker-{len(self.processes)}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.worker_process"], cwd=ROOT, env=variables, stdout=log, stderr=log
        )
        self.processes.append(process)
        return process

    def kill9(self) -> None:
        """SIGKILL the newest worker: no cleanup of any kind runs."""
        self.current.send_signal(signal.SIGKILL)
        self.current.wait(10)

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)
