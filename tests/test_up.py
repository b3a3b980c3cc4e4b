"""``facechain-bot up`` as an operator runs it: the real command in a process of its own, its private
redis-server, its bot and worker children on the tiny model, a chat journey through the fake Telegram
server, and the stop (SIGTERM), after which no child is left and Redis's append-only file is on disk."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.cli_process import ROOT, assert_one_line_exit_2, cli_environment, run_cli
from tests.pipeline.tiny import tiny_model_dir  # noqa: F401  (the tiny SD model, built once per session)
from tests.telegram.fake_bot_api import FakeBotApi
from tests.telegram.media import face_photos
from tests.telegram.users import TgUser

TOKEN = "5550001234:AAH-up-test_TOKEN-0123456789abcdefghij"


def _gone(pid: int) -> bool:
    """No such process any more (a zombie waiting for a reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _all_gone(pids: list[int], within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if all(_gone(pid) for pid in pids):
            return True
        time.sleep(0.1)
    return False


class Up:
    """A running ``facechain-bot up`` and the lines it (and its children) wrote to stderr."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, env: dict[str, str], cwd: Path) -> Up:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "up", "--grace", "20",
            env=env, cwd=cwd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip())

    async def wait_for(self, pattern: str, within: float) -> re.Match[str]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for line in self.lines:
                found = re.search(pattern, line)
                if found:
                    return found
            if self.process.returncode is not None and self._reader.done():
                break
            await asyncio.sleep(0.1)
        raise AssertionError(f"no line matching {pattern!r}; last lines:\n" + "\n".join(self.lines[-30:]))

    def pids(self, ready_line: re.Match[str]) -> dict[str, int]:
        return {name: int(pid) for name, pid in re.findall(r"([\w-]+)=(\d+)", ready_line.group(0))}

    async def exited(self, within: float) -> int:
        """``up``'s exit code. Polled, not ``wait()``-ed: asyncio's wait also waits for the stderr pipe,
        which a child that outlived ``up`` (the failure a test looks for) would hold open forever."""
        deadline = time.monotonic() + within
        while self.process.returncode is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"up did not exit within {within} s; last lines:\n" + "\n".join(self.lines[-30:]))
            await asyncio.sleep(0.1)
        return self.process.returncode

    async def finish(self, within: float) -> int:
        code = await self.exited(within)
        await asyncio.wait_for(self._reader, 10)
        return code

    def child_pids(self) -> list[int]:
        """Every pid ``up`` said it started."""
        return [
            int(pid)
            for line in self.lines
            if line.startswith("facechain-bot up:")
            for pid in re.findall(r"pid (\d+)", line)
        ]

    async def kill(self) -> None:
        """End ``up`` and anything it started that is still alive (a failed test leaves nothing running)."""
        if self.process.returncode is None:
            self.process.kill()
            with contextlib.suppress(AssertionError):
                await self.exited(10)
        for pid in self.child_pids():
            if not _gone(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@pytest.fixture
async def telegram() -> AsyncIterator[FakeBotApi]:
    async with FakeBotApi(TOKEN) as server:
        yield server


def _up_env(tmp_path: Path, model: Path, api: FakeBotApi, **settings: str) -> dict[str, str]:
    env = cli_environment(tmp_path, "unused", telegram_token=TOKEN, telegram_api_url=api.root,
                          base_model=str(model), rank_faces="false", nsfw_check="false", **settings)  # fmt: skip
    del env["FACECHAIN_REDIS_URL"]  # no Redis configured: `up` starts its own
    return env


@pytest.mark.slow
async def test_up_runs_a_journey_on_its_own_redis_and_leaves_nothing_behind(
    tmp_path: Path,
    tiny_model_dir: Path,  # noqa: F811
    telegram: FakeBotApi,
) -> None:
    started = time.monotonic()
    up = await Up.start(_up_env(tmp_path, tiny_model_dir, telegram), tmp_path)
    try:
        ready = await up.wait_for(r"ready: .*pids .*", within=240)
        pids = up.pids(ready)
        assert set(pids) == {"worker", "bot", "redis-server"}
        ready_s = time.monotonic() - started

        # The whole chat journey, on the worker's default settings (FaceChain's training budget and
        # 10 candidates of 40 steps) at the tiny model's own size.
        alice = TgUser(telegram, 1001, "Alice")
        alice.say("/train")
        await alice.expect("Send me", within=60)
        alice.send_photos(face_photos(3))
        await alice.expect("Got 3 photos")
        alice.say("/done")
        await alice.expect("Who is in these photos?")
        alice.press("A woman")
        await alice.expect("Your face model is ready!", within=300)
        trained_s = time.monotonic() - started
        alice.say("/generate watercolor 2")
        making = await alice.expect("Making 2 portraits in watercolor")
        await alice.expect_edit(making, "Done.", within=300)
        await alice.wait_buttons(["More of this style", "Another style"], within=30)
        assert len([m for m in alice.replies if m.photo]) == 2
        print(f"\nup: ready after {ready_s:.0f} s, model after {trained_s:.0f} s, "
              f"portraits after {time.monotonic() - started:.0f} s")  # fmt: skip

        up.process.send_signal(signal.SIGTERM)
        assert await up.exited(within=90) == 0
        # Gone when `up` exits, not just soon after: `up` stopped them (the kernel's SIGTERM on its
        # death is only the safety net).
        assert _all_gone(list(pids.values()), within=0.5), [p for p in pids.values() if not _gone(p)]
        await up.finish(within=10)
    finally:
        await up.kill()
    for child in ("bot", "worker", "redis-server"):  # each stopped by `up`, cleanly, in this order
        assert f"facechain-bot up: the {child} stopped (exit code 0)" in up.lines, up.lines[-20:]
    assert up.lines[-1] == "facechain-bot up: stopped"
    redis_dir = tmp_path / "data" / "redis"
    assert oct(redis_dir.stat().st_mode & 0o777) == "0o700"
    assert list(redis_dir.glob("appendonlydir/*.aof")) or (redis_dir / "appendonly.aof").is_file()
    assert "requirepass" in (redis_dir / "redis.conf").read_text()
    assert oct((redis_dir / "redis.conf").stat().st_mode & 0o777) == "0o600"
    assert TOKEN not in "\n".join(up.lines)


async def test_when_a_child_exits_up_names_it_and_stops_the_rest(
    tmp_path: Path, telegram: FakeBotApi, redis_url: str
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("the worker's failure here is a CUDA device this machine lacks")
    model = tmp_path / "model"
    model.mkdir()
    (model / "model_index.json").write_text("{}")
    env = _up_env(tmp_path, model, telegram, device="cuda")
    env["FACECHAIN_REDIS_URL"] = redis_url  # an external Redis this time: no private one is started
    up = await Up.start(env, tmp_path)
    try:
        code = await up.exited(within=120)
        assert _all_gone(up.child_pids(), within=0.5), "the bot was stopped before `up` exited"
        await up.finish(within=10)
    finally:
        await up.kill()
    text = "\n".join(up.lines)
    assert code == 2, text
    assert "using the Redis at" in text and "private Redis" not in text
    assert "FACECHAIN_DEVICE=cuda but torch" in text, "the worker's own line"
    assert re.search(r"the worker \(pid \d+\) exited with code 2; stopping the others", text), text
    assert re.search(r"the bot \(pid \d+\)", text), text


async def test_a_killed_up_takes_its_redis_server_with_it(
    tmp_path: Path,
    tiny_model_dir: Path,  # noqa: F811
    telegram: FakeBotApi,
) -> None:
    up = await Up.start(_up_env(tmp_path, tiny_model_dir, telegram), tmp_path)
    try:
        redis = await up.wait_for(r"private Redis on 127\.0\.0\.1:\d+ \(pid (\d+)", within=60)
        children = await up.wait_for(r"started the worker \(pid (\d+)\) and the bot \(pid (\d+)\)", within=60)
        pids = [int(redis.group(1)), int(children.group(1)), int(children.group(2))]
        up.process.kill()  # SIGKILL: `up` cannot stop anything itself
        await up.exited(10)
        assert _all_gone(pids, within=30), [p for p in pids if not _gone(p)]
    finally:
        await up.kill()


def test_up_with_neither_redis_nor_redis_server_says_what_to_install(tmp_path: Path, redis_url: str) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model_index.json").write_text("{}")
    env = cli_environment(tmp_path, redis_url, telegram_token=TOKEN, base_model=str(model))
    del env["FACECHAIN_REDIS_URL"]
    env["PATH"] = str(tmp_path / "empty-bin")  # no redis-server anywhere
    assert os.path.exists(sys.executable) and str(ROOT) in env["PYTHONPATH"]
    result = run_cli(["up"], env, tmp_path)
    assert_one_line_exit_2(result, "install redis-server", "FACECHAIN_REDIS_URL")
    assert not (tmp_path / "data" / "redis").exists(), "nothing was started"
