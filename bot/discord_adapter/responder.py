"""Answering one interaction with the core's replies, within Discord's 3 seconds.

The core usually answers in milliseconds, and then its first text is the interaction's response,
ephemeral when the core marks it private. When the core takes longer than ``answer_within`` (a busy
machine, a download), or its first reply is not a text (a progress message, sent with the bot token),
the interaction is deferred first: a command or modal shows "thinking…" (ephemeral in a server, since
whether the answer is private is not known yet), a button press is acknowledged silently. After such a
defer a private text replaces the "thinking…" message, a public one in a server goes to the channel as
a normal message, and a "thinking…" message that nothing replaced is deleted.

Progress messages, portraits and progress edits always go through the bot token
(:class:`ChannelSender`): the interaction token dies after 15 minutes, long before a training run ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Sequence
from typing import Any

import discord

from bot.core.replies import Button, EditProgress, Photos, ProgressMessage, Reply, Text
from bot.discord_adapter.sender import ChannelSender, split_text
from bot.discord_adapter.views import button_view

log = logging.getLogger("facechain.discord")

#: Answer directly when the core is done within this many seconds; defer otherwise.
ANSWER_WITHIN_S = 1.5


class InteractionResponder:
    """Shows the replies to one interaction: response, follow-ups and bot-token messages."""

    def __init__(
        self,
        interaction: discord.Interaction[Any],
        channels: ChannelSender,
        *,
        answer_within: float = ANSWER_WITHIN_S,
    ) -> None:
        self._interaction = interaction
        self._channels = channels
        self._answer_within = answer_within
        self._private_chat = interaction.guild_id is None
        #: A "thinking…" message stands as the response and no reply has replaced it yet.
        self._thinking = False
        self.progress_ids: dict[str, str] = {}

    async def run(self, work: Awaitable[list[Reply]]) -> list[Reply]:
        """Run the core's work, answer the interaction in time, show every reply; return the replies."""
        task: asyncio.Task[list[Reply]] = asyncio.ensure_future(work)
        try:
            done, _ = await asyncio.wait({task}, timeout=self._answer_within)
            if not done:
                await self._defer()
            replies = await task
        except BaseException:
            if not task.done():
                task.cancel()
            await self._clear_thinking()
            raise
        try:
            await self._show(replies)
        finally:
            await self._finish()
        return replies

    # ---------------------------------------------------------------------------------- replies
    async def _show(self, replies: Sequence[Reply]) -> None:
        channel_id = self._interaction.channel_id
        for reply in replies:
            if not isinstance(reply, Text) and not self._interaction.response.is_done():
                # Acknowledge before the bot-token calls, however long they take.
                await self._defer()
            try:
                match reply:
                    case Text():
                        await self._text(reply)
                    case ProgressMessage():
                        if channel_id is not None:
                            ref = await self._channels.progress(channel_id, reply)
                            if ref is not None:
                                self.progress_ids[reply.run_id] = str(ref)
                    case Photos():
                        if channel_id is not None:
                            await self._channels.photos(channel_id, reply)
                    case EditProgress():
                        await self._channels.edit_progress(reply)
            except discord.Forbidden as exc:
                log.warning(
                    "the bot may not post in channel %s (%s): it needs View Channel, Send Messages and Attach Files",
                    channel_id,
                    exc.text,
                )
            except discord.HTTPException as exc:
                kind = type(reply).__name__
                log.warning(
                    "a %s reply to interaction %s failed: %s %s", kind, self._interaction.id, exc.status, exc.text
                )

    async def _text(self, reply: Text) -> None:
        pieces = split_text(reply.text)
        for index, piece in enumerate(pieces):
            buttons = reply.buttons if index == len(pieces) - 1 else ()
            await self._piece(piece, buttons, private=reply.private)

    async def _piece(self, text: str, buttons: Sequence[Button], *, private: bool) -> None:
        interaction = self._interaction
        view = button_view(buttons)
        if not interaction.response.is_done():
            if view is None:
                await interaction.response.send_message(text, ephemeral=private)
            else:
                await interaction.response.send_message(text, view=view, ephemeral=private)
            return
        if self._thinking and (private or self._private_chat):
            self._thinking = False
            if view is None:
                await interaction.edit_original_response(content=text)
            else:
                await interaction.edit_original_response(content=text, view=view)
            return
        if self._thinking and interaction.channel_id is not None:
            # The "thinking…" message is ephemeral, and the first follow-up would inherit that.
            await self._channels.text(interaction.channel_id, text, buttons)
            return
        if view is None:
            await interaction.followup.send(text, ephemeral=private)
        else:
            await interaction.followup.send(text, view=view, ephemeral=private)

    # ------------------------------------------------------------------------------ acknowledging
    async def _defer(self) -> None:
        interaction = self._interaction
        if interaction.response.is_done():
            return
        if interaction.type is discord.InteractionType.component:
            await interaction.response.defer()
            return
        await interaction.response.defer(ephemeral=not self._private_chat, thinking=True)
        self._thinking = True

    async def _finish(self) -> None:
        """Every interaction gets a response, even when the core had nothing to say to it."""
        if not self._interaction.response.is_done():
            if self._interaction.type is discord.InteractionType.component:
                await self._interaction.response.defer()
                return
            await self._interaction.response.defer(ephemeral=True, thinking=True)
            self._thinking = True
        await self._clear_thinking()

    async def _clear_thinking(self) -> None:
        if not self._thinking:
            return
        self._thinking = False
        with contextlib.suppress(discord.HTTPException):
            await self._interaction.delete_original_response()
