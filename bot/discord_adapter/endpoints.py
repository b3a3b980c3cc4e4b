"""FACECHAIN_DISCORD_API_URL and FACECHAIN_DISCORD_GATEWAY_URL, for one client only.

discord.py keeps Discord's addresses in class attributes (``discord.http.Route.BASE``,
``DiscordWebSocket.DEFAULT_GATEWAY``); overwriting them would move every client in the process.
Instead, each :class:`FacechainClient` rebases its own HTTP client's requests and gateway
connections (:func:`point_client`), and interaction responses, which discord.py sends through a
context-local webhook adapter, are rebased for the tasks of the adapter that runs the client
(:func:`interaction_endpoints`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import discord
import yarl
from discord.webhook.async_ import AsyncWebhookAdapter, async_context

#: discord.py's own addresses, which every Route and gateway URL it builds starts with.
DEFAULT_API = discord.http.Route.BASE
DEFAULT_GATEWAY = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY


def rebase(url: str, api_base: str) -> str:
    """``url`` (one of discord.py's REST URLs) on ``api_base`` instead of Discord's."""
    if api_base != DEFAULT_API and url.startswith(DEFAULT_API):
        return api_base + url[len(DEFAULT_API) :]
    return url


def point_client(client: discord.Client, api_base: str, gateway: Callable[[], yarl.URL | None]) -> None:
    """Send this client's REST calls to ``api_base`` and its fresh gateway connections to ``gateway()``
    (read at each connection: the address is known only after login). A resumed session keeps the
    address Discord gave for it."""
    http = client.http
    api_base = api_base.rstrip("/")
    request, ws_connect = http.request, http.ws_connect

    async def rebased_request(route: discord.http.Route, **kwargs: Any) -> Any:
        route.url = rebase(route.url, api_base)
        return await request(route, **kwargs)

    async def rebased_ws_connect(url: str, *, compress: int = 0) -> Any:
        target, parsed = gateway(), yarl.URL(url)
        if target is not None and parsed.with_query(None) == DEFAULT_GATEWAY:
            url = str(target.with_query(parsed.query))
        return await ws_connect(url, compress=compress)

    http.request = rebased_request  # type: ignore[method-assign]
    http.ws_connect = rebased_ws_connect  # type: ignore[method-assign]


class _RebasedWebhookAdapter(AsyncWebhookAdapter):
    """discord.py's webhook adapter (interaction responses and follow-ups) on another API base."""

    def __init__(self, api_base: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._api_base = api_base.rstrip("/")

    async def request(self, route: Any, *args: Any, **kwargs: Any) -> Any:
        route.url = rebase(route.url, self._api_base)
        return await super().request(route, *args, **kwargs)


@contextlib.contextmanager
def interaction_endpoints(api_base: str) -> Iterator[None]:
    """Within this block (and the tasks it starts) interaction responses go to ``api_base``."""
    token = async_context.set(_RebasedWebhookAdapter(api_base))
    try:
        yield
    finally:
        async_context.reset(token)
