"""Logging of every facechain-bot process, with the secrets taken out of everything it writes.

One redaction applies to every log record of the process, whichever library made it (python-telegram-bot,
httpx, discord.py, aiohttp, arq, tornado, ours): it is installed as the record factory, so a record is
cleaned when it is made, before any handler (a later one included, such as pytest's) sees it. The
message is merged with its arguments and cleaned; exception and stack text are formatted then and
cleaned, and the live exception is dropped from the record (a handler formatting it again would bring
the secret back). The same :class:`RedactingFilter` sits on the root handlers as well, for records
made by other means (``logging.makeLogRecord``). Uncaught exceptions (main thread and other threads) and
warnings go through the same redaction.

What is removed:

- every registered secret (the tokens and the webhook secret: :func:`reveal` registers a ``SecretStr``
  where it is unwrapped, :func:`configure_logging` those of the settings), as written and URL-encoded,
  and the secret half of a Telegram token on its own;
- anything shaped like a Telegram bot token (``123456:AA…``) or a Discord bot token, and the value of a
  ``Bot …`` Authorization header, even when it was never registered (a worker, a token from elsewhere).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any
from urllib.parse import quote

from pydantic import SecretStr

from pipeline.runlog import LOG_FORMAT, install_run_id_filter

#: What a removed secret is replaced with.
MASK = "<redacted>"
#: Secrets shorter than this are not searched for in text (they would mask ordinary words); settings
#: validation refuses them.
MIN_SECRET_LENGTH = 12

_PATTERNS = (
    # A Telegram bot token: bot id, ':' (or %3A in a URL), then the secret; alone or after "/bot".
    re.compile(r"(?:(?<=bot)|(?<![A-Za-z0-9_-]))\d{3,20}(?::|%3[Aa])[A-Za-z0-9_-]{30,}"),
    # A Discord bot token: base64 of the bot's id, a timestamp, an HMAC.
    re.compile(r"(?<![A-Za-z0-9_.-])[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{27,}"),
    # An Authorization header's value, however it was quoted.
    re.compile(r"(?i)(?<=Authorization)(['\"]?\s*[:=]\s*['\"]?Bot\s+)[^\s'\",;}]+"),
)

_FORMATTER = logging.Formatter()
_lock = threading.Lock()
_secrets: set[str] = set()
_installed = False


def _masked_auth(match: re.Match[str]) -> str:
    return match.group(1) + MASK if match.lastindex else MASK


def redact(text: str) -> str:
    """``text`` with every registered secret and every token-shaped string replaced by ``<redacted>``."""
    if not text:
        return text
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern in _PATTERNS:
        text = pattern.sub(_masked_auth, text)
    return text


def register_secret(value: str | SecretStr | None) -> None:
    """Have ``value`` removed from every log line of this process from now on (and install the redaction)."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if not value:
        return
    forms = {value, quote(value, safe=""), quote(value)}
    # A Telegram token's secret half can show up alone (a URL cut at the colon, a parsed error).
    _, colon, secret_half = value.partition(":")
    if colon and len(secret_half) >= MIN_SECRET_LENGTH:
        forms.add(secret_half)
    with _lock:
        _secrets.update(form for form in forms if len(form) >= MIN_SECRET_LENGTH)
    install_redaction()


def reveal(secret: SecretStr) -> str:
    """The secret's value, for the one place that hands it to a library; registered for redaction first."""
    register_secret(secret)
    return secret.get_secret_value()


class RedactingFilter(logging.Filter):
    """Cleans a record in place (message and arguments, exception and stack text); lets every record pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        clean_record(record)
        return True


def clean_record(record: logging.LogRecord) -> logging.LogRecord:
    """Merge the message with its arguments, format the exception and stack, and redact all of it."""
    if getattr(record, "_facechain_redacted", False):
        return record
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: keep what can be shown, as logging itself would
        message = f"{record.msg!r} % {record.args!r}"
    record.msg = redact(message)
    record.args = ()
    if record.exc_info:
        if not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        record.exc_info = None
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    record._facechain_redacted = True
    return record


def install_redaction() -> None:
    """Clean every log record this process makes, uncaught exceptions and warnings (once; idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    make_record = logging.getLogRecordFactory()

    def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return clean_record(make_record(*args, **kwargs))

    logging.setLogRecordFactory(redacting_factory)
    sys.excepthook = _redacting_excepthook(sys.excepthook)
    threading.excepthook = _redacting_thread_hook(threading.excepthook)
    # Warnings are written by the logging system ("py.warnings"), so they are cleaned too.
    logging.captureWarnings(True)


def _redacting_excepthook(
    previous: Callable[[type[BaseException], BaseException, TracebackType | None], Any],
) -> Callable[[type[BaseException], BaseException, TracebackType | None], Any]:
    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            previous(kind, value, tb)
            return
        sys.stderr.write(redact("".join(traceback.format_exception(kind, value, tb))))
        sys.stderr.flush()

    return hook


def _redacting_thread_hook(
    previous: Callable[[threading.ExceptHookArgs], Any],
) -> Callable[[threading.ExceptHookArgs], Any]:
    def hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit or args.exc_value is None:
            previous(args)
            return
        name = args.thread.name if args.thread is not None else "?"
        text = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
        sys.stderr.write(redact(f"Exception in thread {name}:\n{text}"))
        sys.stderr.flush()

    return hook


#: Loggers that write a line per HTTP request at INFO: noise at the default level.
NOISY_LOGGERS = ("httpx", "httpcore")


def configure_logging(level: str, secrets: Iterable[str | SecretStr | None] = ()) -> None:
    """The logging of a facechain-bot process: one line per record on stderr at ``level``, secrets removed.

    ``secrets`` are the values known at start (the tokens and the webhook secret of the settings); values
    made later are registered where they are made (:func:`reveal`, :func:`register_secret`).
    """
    install_redaction()
    for secret in secrets:
        register_secret(secret)
    logging.basicConfig(level=getattr(logging, level, logging.INFO), format=LOG_FORMAT)
    # A separate filter: `` run=<id>`` on the lines of a job (pipeline.runlog).
    install_run_id_filter()
    redacting = RedactingFilter()
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(redacting)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


__all__ = [
    "MASK",
    "RedactingFilter",
    "clean_record",
    "configure_logging",
    "install_redaction",
    "redact",
    "register_secret",
    "reveal",
]
