"""Delivering a worker's progress and results to Discord, outside any interaction (bot token only).

``Delivery.chat_id`` is a channel id, or ``dm:<user id>`` when a server sends results to its members'
DMs: that DM channel is opened (POST /users/@me/channels) on first use and remembered.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import discord

from bot.core.replies import Reply
from bot.discord_adapter.sender import ChannelSender
from bot.discord_adapter.translate import dm_user_id
from bot.service import DeliveryRefused
from storage.models import Delivery

log = logging.getLogger("facechain.discord")

#: How long a delivery waits for the client to log in (a result that arrives while the bot starts).
READY_WAIT_S = 120.0
_DM_MEMORY = 10_000


class DiscordNotifier:
    """:class:`bot.service.Notifier` for Discord."""

    def __init__(self, client: discord.Client, sender: ChannelSender, logged_in: asyncio.Event) -> None:
        self._client = client
        self._sender = sender
        self._logged_in = logged_in
        self._dm_channels: OrderedDict[int, int] = OrderedDict()

    async def deliver(self, delivery: Delivery, replies: Sequence[Reply]) -> Mapping[str, str]:
        """Show the replies in the run's channel; return run_id → stored id of progress messages sent.
        Raises as :class:`bot.service.Notifier` says (a member's DMs that cannot be opened refuse)."""
        try:
            await asyncio.wait_for(self._logged_in.wait(), READY_WAIT_S)
        except TimeoutError:
            # Raising makes the service's caller retry later (an outcome job is run again by arq).
            raise ConnectionError(f"Discord client not logged in; {len(replies)} replies not sent") from None
        channel_id = await self._channel(delivery.chat_id)
        if channel_id is None:
            return {}
        return await self._sender.send(
            channel_id, replies, progress_message_id=delivery.progress_message_id, must_deliver=True
        )

    async def _channel(self, chat_id: str) -> int | None:
        if chat_id.isdigit():
            return int(chat_id)
        user_id = dm_user_id(chat_id)
        if user_id is None:
            log.warning("a delivery to a malformed Discord chat id %r was dropped", chat_id)
            return None
        known = self._dm_channels.get(user_id)
        if known is not None:
            return known
        try:
            channel = await self._client.create_dm(discord.Object(user_id))
        except (discord.Forbidden, discord.NotFound) as exc:
            raise DeliveryRefused(f"no DM with user {user_id}: {exc.status} {exc.text}") from exc
        self._dm_channels[user_id] = channel.id
        while len(self._dm_channels) > _DM_MEMORY:
            self._dm_channels.popitem(last=False)
        return channel.id
