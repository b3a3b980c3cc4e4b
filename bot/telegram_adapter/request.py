"""PTB's HTTP on aiohttp: a :class:`telegram.request.BaseRequest` the adapter gives the Application.

PTB's own ``HTTPXRequest`` cost half of the bot's CPU under load (httpx → httpcore → anyio/h11 for
every Bot API call, see docs/benchmarks.md); this one does the same work through aiohttp's C-accelerated
HTTP/1.1 client. It keeps ``HTTPXRequest``'s contract: the same defaults, timeouts that mean the same
things, errors mapped to PTB's ``TimedOut``/``NetworkError``, one connection pool per instance, closed on
:meth:`AiohttpRequest.shutdown`. It talks to the Bot API directly: no proxy, whatever the environment says.

Timeouts in aiohttp's terms (it has no per-write timeout):

- ``connect_timeout`` → ``sock_connect`` (opening the TCP/TLS connection);
- ``pool_timeout`` + ``connect_timeout`` → ``connect`` (waiting for a free pooled connection and opening it);
- ``read_timeout`` → ``sock_read`` (at most this long without a byte of the answer, once the request is sent);
- ``write_timeout`` (``media_write_timeout`` for uploads) bounds sending a request with a body: such a
  request must be done within pool + connect + write + read timeouts altogether (``total``). Downloads
  (GET) get no total, so a large file may take as long as it keeps arriving.

Error messages never contain the bot token: aiohttp puts the request URL (``…/bot<token>/method``) in some
of them, so the token's secret is masked, and the aiohttp exception is not chained (its text is in ours).
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import urlencode

import aiohttp
from telegram._utils.defaultvalue import DefaultValue
from telegram._utils.types import ODVInput
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

#: The secret half of a bot token as it appears in Bot API URLs (``/bot123456:AAE…/getMe``).
_TOKEN_SECRET = re.compile(r"bot\d+:([A-Za-z0-9_-]+)")
_FORM = {"Content-Type": "application/x-www-form-urlencoded"}


class AiohttpRequest(BaseRequest):
    """A PTB request backend on one :class:`aiohttp.ClientSession` (created by :meth:`initialize`).

    The arguments mean what they mean for PTB's ``HTTPXRequest`` and have its defaults. Give the
    Application two: one for the bot's calls, one (``connection_pool_size=1``) for ``getUpdates``.
    """

    __slots__ = ("_defaults", "_media_write_timeout", "_pool_size", "_session")

    def __init__(
        self,
        connection_pool_size: int = 256,
        read_timeout: float | None = 5.0,
        write_timeout: float | None = 5.0,
        connect_timeout: float | None = 5.0,
        pool_timeout: float | None = 1.0,
        media_write_timeout: float | None = 20.0,
    ) -> None:
        if connection_pool_size < 1:
            raise ValueError("connection_pool_size must be at least 1")
        self._pool_size = connection_pool_size
        #: (read, write, connect, pool) seconds, used where a call passes DEFAULT_NONE.
        self._defaults: Final = (read_timeout, write_timeout, connect_timeout, pool_timeout)
        self._media_write_timeout = media_write_timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def read_timeout(self) -> float | None:
        """The default read timeout (PTB adds the long-polling timeout to it for ``getUpdates``)."""
        return self._defaults[0]

    async def initialize(self) -> None:
        """Open the session and its connection pool (again after :meth:`shutdown`)."""
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._pool_size, limit_per_host=0)
            self._session = aiohttp.ClientSession(
                connector=connector,
                # The Bot API sets no cookies; a real jar costs a lookup per request.
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
                headers={"User-Agent": self.USER_AGENT},
            )

    async def shutdown(self) -> None:
        """Close the session and every pooled connection; safe to call twice."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        write_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        connect_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        pool_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        """Send one request; (status, body) for any answer, ``TimedOut``/``NetworkError`` for none."""
        session = self._session
        if session is None or session.closed:
            raise RuntimeError("This AiohttpRequest is not initialized!")
        files = request_data.multipart_data if request_data is not None else None
        fields = request_data.json_parameters if request_data is not None else {}
        body: aiohttp.FormData | bytes | None = None
        headers = None
        if files:
            form = aiohttp.FormData()
            for name, value in fields.items():
                form.add_field(name, value)
            for name, (filename, content, mime) in files.items():
                form.add_field(name, content, filename=filename or name, content_type=mime)
            body = form
        elif fields:
            body = urlencode(fields).encode()
            headers = _FORM
        read, write, connect, pool = self._defaults
        if files:
            write = self._media_write_timeout
        timeout = _client_timeout(
            _given(read_timeout, read),
            _given(write_timeout, write),
            _given(connect_timeout, connect),
            _given(pool_timeout, pool),
            bounded=body is not None or method != "GET",
        )
        try:
            async with session.request(method, url, data=body, headers=headers, timeout=timeout) as response:
                return response.status, await response.read()
        except TimeoutError as exc:
            raise TimedOut(f"Timed out ({_what_timed_out(exc)})") from None
        except aiohttp.ClientError as exc:
            raise NetworkError(f"aiohttp.{type(exc).__name__}: {redact(str(exc), url)}") from None


def _given(value: ODVInput[float], default: float | None) -> float | None:
    """The timeout a call passed, or this request's default where it passed DEFAULT_NONE."""
    return default if isinstance(value, DefaultValue) else value


def _client_timeout(
    read: float | None, write: float | None, connect: float | None, pool: float | None, *, bounded: bool
) -> aiohttp.ClientTimeout:
    parts = (read, write, connect, pool)
    total = sum(p for p in parts if p is not None) if bounded and None not in parts else None
    return aiohttp.ClientTimeout(
        total=total,
        connect=None if connect is None or pool is None else connect + pool,
        sock_connect=connect,
        sock_read=read,
    )


def _what_timed_out(exc: TimeoutError) -> str:
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return "connecting, or waiting for a free connection in the pool"
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return "waiting for the answer"
    return "sending the request or reading the answer"


def redact(text: str, url: str) -> str:
    """``text`` without the secret of the bot token that ``url`` carries."""
    match = _TOKEN_SECRET.search(url)
    return text.replace(match.group(1), "<token>") if match else text


__all__ = ["AiohttpRequest", "redact"]
