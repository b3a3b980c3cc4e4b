"""``facechain-bot up``: the whole service on one machine without Docker, as one process tree.

Children: a private ``redis-server`` (only when no ``FACECHAIN_REDIS_URL`` is set), then ``facechain-bot
worker`` and ``facechain-bot bot``, each in its own process group so that a Ctrl-C in the terminal reaches
``up`` alone, which then stops them in order: bot and worker first (SIGTERM, SIGKILL after the grace
period), Redis last (it writes its append-only file on the way out). On Linux every child also gets
SIGTERM from the kernel if ``up`` itself is killed, so no redis-server is left behind.

If a child exits on its own, ``up`` names it, stops the others and exits with the child's code (1 when
the child was killed by a signal): a service manager (systemd ``Restart=on-failure``) restarts it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from bot.errors import NO_REDIS, OperatorError, redacted_url
from pipeline import jobs

if TYPE_CHECKING:
    from redis import Redis

#: Seconds a child has between SIGTERM and SIGKILL (``--grace``).
DEFAULT_GRACE_S = 20.0
#: Seconds a fresh redis-server has to answer PING.
REDIS_START_S = 15.0
#: How often ``up`` looks at its children.
POLL_S = 0.2


Say = Callable[[str], None]


def _say(line: str) -> None:
    print(f"facechain-bot up: {line}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A ``preexec_fn``: on Linux the kernel sends the child SIGTERM when ``up`` dies (even by SIGKILL)."""

    def arrange() -> None:
        if sys.platform.startswith("linux"):
            import ctypes

            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
            if os.getppid() != parent:  # ``up`` died before prctl: nobody would send the signal
                os._exit(1)

    return arrange


@dataclass
class Child:
    """One process ``up`` started."""

    name: str
    process: subprocess.Popen[bytes]
    #: Its exit was told already (a child that exited on its own is named once).
    reported: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None


def spawn(name: str, argv: Sequence[str], env: dict[str, str], **popen: object) -> Child:
    """Start ``argv`` in a process group of its own, tied to this process's life."""
    process = subprocess.Popen(  # type: ignore[call-overload]
        list(argv), env=env, stdin=subprocess.DEVNULL, start_new_session=True,
        preexec_fn=_die_with_parent(os.getpid()), **popen,
    )  # fmt: skip
    return Child(name, process)


def stop(children: Sequence[Child], grace_s: float, say: Say, hurry: Callable[[], bool] = lambda: False) -> None:
    """SIGTERM to each live child, SIGKILL to those still alive after ``grace_s`` (or when ``hurry()``)."""
    for child in children:
        if child.alive():
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(c.alive() for c in children) and time.monotonic() < deadline and not hurry():
        time.sleep(POLL_S / 2)
    for child in children:
        if child.alive():
            say(f"the {child.name} (pid {child.pid}) did not stop within {grace_s:g} s: killed")
            child.process.kill()
        elif child.process.returncode is not None and not child.reported:
            say(f"the {child.name} stopped (exit code {child.process.returncode})")
        child.process.wait()
        child.reported = True


# ------------------------------------------------------------------------------------ private Redis
@dataclass
class PrivateRedis:
    """A redis-server child on 127.0.0.1, password-protected, its data (AOF) in a 0700 folder."""

    child: Child
    url: str
    port: int
    folder: Path


def start_private_redis(folder: Path, server: str, say: Say, attempts: int = 3) -> PrivateRedis:
    """Start redis-server with append-only persistence in ``folder``; return once it answers PING."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    password = secrets.token_urlsafe(24)
    log_path = folder / "redis.log"
    for attempt in range(attempts):
        port = free_port()
        config = folder / "redis.conf"
        # The password is in a 0600 file, never on a command line (``ps`` shows those to every user).
        config.touch(mode=0o600)
        config.write_text(
            "\n".join([
                "bind 127.0.0.1", f"port {port}", "protected-mode yes", f'dir "{folder}"', "daemonize no",
                "appendonly yes", "appendfsync everysec", 'save ""', f"requirepass {password}", "",
            ])
        )  # fmt: skip
        with log_path.open("ab") as log:
            child = spawn("redis-server", [server, str(config)], dict(os.environ), stdout=log, stderr=log)
        url = f"redis://:{password}@127.0.0.1:{port}/0"
        if _wait_for_redis(child, url):
            say(f"started a private Redis on 127.0.0.1:{port} (pid {child.pid}; data and AOF in {folder})")
            return PrivateRedis(child, url, port, folder)
        stop([child], 5.0, say)
        last = _last_line(log_path)
        if "Address already in use" not in last or attempt == attempts - 1:
            raise OperatorError(f"redis-server ({server}) did not start: {last or 'no output'} (log: {log_path})")
    raise AssertionError("unreachable")


def _wait_for_redis(child: Child, url: str) -> bool:
    from redis import Redis
    from redis.exceptions import RedisError

    deadline = time.monotonic() + REDIS_START_S
    client = Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        while time.monotonic() < deadline and child.alive():
            with contextlib.suppress(RedisError, OSError):
                if client.ping():
                    return True
            time.sleep(0.05)
    finally:
        client.close()
    return False


def _last_line(path: Path) -> str:
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else ""


# ------------------------------------------------------------------------------------------- up
@dataclass(frozen=True)
class UpPlan:
    """What ``up`` runs: an external Redis (``redis_url``) or a private one (``redis_dir``)."""

    redis_url: str | None
    redis_dir: Path
    worker_queues: Sequence[str]
    grace_s: float = DEFAULT_GRACE_S


def find_redis_server() -> str:
    """The redis-server on PATH, or an :class:`OperatorError` saying what to install."""
    server = shutil.which("redis-server")
    if server is None:
        raise OperatorError(NO_REDIS)
    return server


class _Signals:
    """Records SIGINT, SIGTERM and SIGHUP instead of dying of them; restores the old handlers after."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._old: dict[int, object] = {}

    def __enter__(self) -> _Signals:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._old[sig] = signal.signal(sig, self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)


def _ready(client: Redis, queues: Sequence[str]) -> bool:
    """Every queue the worker serves has its health key: its models are loaded and it polls."""
    from redis.exceptions import RedisError

    try:
        found = client.exists(*(jobs.worker_health_key(q) for q in queues))
        return isinstance(found, int) and found == len(queues)
    except (RedisError, OSError):
        return False


def run_up(plan: UpPlan, say: Say = _say) -> int:
    """Run Redis (unless external), the worker and the bot until a signal or a child's exit; 0 on a signal."""
    with _Signals() as signals:
        redis: PrivateRedis | None = None
        if plan.redis_url is None:
            redis = start_private_redis(plan.redis_dir, find_redis_server(), say)
            url = redis.url
        else:
            url = plan.redis_url
            say(f"using the Redis at {redacted_url(url)} (FACECHAIN_REDIS_URL)")
        services: list[Child] = []
        exited: Child | None = None
        try:
            env = {**os.environ, "FACECHAIN_REDIS_URL": url, "PYTHONUNBUFFERED": "1"}
            command = [sys.executable, "-m", "bot.cli"]
            services = [spawn("worker", [*command, "worker"], env), spawn("bot", [*command, "bot"], env)]
            say(f"started the worker (pid {services[0].pid}) and the bot (pid {services[1].pid}); Ctrl-C stops all")
            exited = _supervise([*services, *([redis.child] if redis else [])], url, plan, signals, say)
        finally:
            seen = len(signals.received)

            def hurry() -> bool:  # another Ctrl-C while stopping: kill at once
                return len(signals.received) > seen

            if exited is not None:
                code = exited.process.returncode
                exited.reported = True
                say(f"the {exited.name} (pid {exited.pid}) exited with code {code}; stopping the others")
            else:
                say("stopping: the bot and the worker first, then Redis")
            stop(services, plan.grace_s, say, hurry)
            if redis is not None:
                stop([redis.child], plan.grace_s, say, hurry)
            say("stopped")
    if exited is None:
        return 0
    code = exited.process.returncode
    return code if code and code > 0 else 1


def _supervise(everyone: Sequence[Child], url: str, plan: UpPlan, signals: _Signals, say: Say) -> Child | None:
    """Watch the children until a signal (None) or until one exits (that child); say once when ready."""
    from redis import Redis

    client = Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    announced = False
    next_check = 0.0
    try:
        while not signals.received:
            exited = next((c for c in everyone if not c.alive()), None)
            if exited is not None:
                return exited
            if not announced and time.monotonic() >= next_check:
                next_check = time.monotonic() + 1.0
                if _ready(client, plan.worker_queues):
                    announced = True
                    pids = " ".join(f"{c.name}={c.pid}" for c in everyone)
                    say(f"ready: the worker serves {', '.join(plan.worker_queues)}; pids {pids}")
            time.sleep(POLL_S)
    finally:
        client.close()
    return None
