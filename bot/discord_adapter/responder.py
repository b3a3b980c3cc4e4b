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
Pictures that come with a private text (an admin's style list) are private follow-ups instead. Where
the bot may not post (Discord answers 403), the member is told so privately, which stays the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Sequence
from typing import Any

import discord

from bot.core import texts
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
        #: Discord refused the bot's posts in this channel: nothing more is sent there with the bot token.
        self._refused = False
        self.progress_ids: dict[str, str] = {}
        #: Runs started by this interaction whose progress Discord refused to show: nothing of them can
        #: appear here, so the caller stops them.
        self.unshown_runs: list[str] = []

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
        run_started = any(isinstance(reply, ProgressMessage) for reply in replies)
        private = False
        for reply in replies:
            if not isinstance(reply, Text) and not self._interaction.response.is_done():
                # Acknowledge before the bot-token calls, however long they take.
                await self._defer()
            try:
                match reply:
                    case Text():
                        private = reply.private
                        await self._text(reply)
                    case ProgressMessage():
                        if channel_id is not None and not self._refused:
                            ref = await self._channels.progress(channel_id, reply)
                            if ref is not None:
                                self.progress_ids[reply.run_id] = str(ref)
                    case Photos():
                        if private and not self._private_chat:
                            await self._private_photos(reply)
                        elif channel_id is not None and not self._refused:
                            await self._channels.photos(channel_id, reply)
                    case EditProgress():
                        await self._channels.edit_progress(reply)
            except discord.Forbidden as exc:
                log.warning(
                    "the bot may not post in channel %s (%s): it needs View Channel, Send Messages and Attach Files",
                    channel_id,
                    exc.text,
                )
                await self._refused_here(reply, run_started=run_started)
            except discord.HTTPException as exc:
                kind = type(reply).__name__
                log.warning(
                    "a %s reply to interaction %s failed: %s %s", kind, self._interaction.id, exc.status, exc.text
                )
            if isinstance(reply, ProgressMessage) and self._refused and not self._private_chat:
                self.unshown_runs.append(reply.run_id)

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
        if self._thinking and interaction.channel_id is not None and not self._refused:
            # The "thinking…" message is ephemeral, and the first follow-up would inherit that.
            await self._channels.text(interaction.channel_id, text, buttons)
            return
        if view is None:
            await interaction.followup.send(text, ephemeral=private)
        else:
            await interaction.followup.send(text, view=view, ephemeral=private)

    async def _private_photos(self, reply: Photos) -> None:
        """Pictures as ephemeral follow-ups, at most 10 files each: only the member who asked sees them."""
        channel_id = self._interaction.channel_id
        if channel_id is None:
            return
        batches = await self._channels.photo_batches(channel_id, reply.keys)
        caption = split_text(reply.caption)[0] if reply.caption else ""
        for index, files in enumerate(batches):
            content = caption if index == 0 else ""
            view = button_view(reply.buttons) if index == len(batches) - 1 else None
            if view is None:
                await self._interaction.followup.send(content, files=files, ephemeral=True)
            else:
                await self._interaction.followup.send(content, files=files, view=view, ephemeral=True)
            # A first follow-up replaces the "thinking…" message.
            self._thinking = False

    async def _refused_here(self, reply: Reply, *, run_started: bool) -> None:
        """Discord refused the bot's post in this server channel: tell the member privately (once), and
        show a refused text through the interaction instead, which needs no permission in the channel."""
        first = not self._refused
        self._refused = True
        if self._private_chat:
            return
        try:
            if first:
                await self._piece(texts.cannot_post_here(run_started=run_started), (), private=True)
            if isinstance(reply, Text):
                await self._text(reply)
        except discord.HTTPException as exc:
            log.warning("answering interaction %s privately failed: %s %s", self._interaction.id, exc.status, exc.text)

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
