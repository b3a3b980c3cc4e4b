"""The discord.py client of the bot: slash commands, buttons and DMs in, the core's replies out.

Built like discord.py's advanced start-up example: dependencies are passed in, and asynchronous
set-up (persistent buttons and upload modal, the gateway address, the command sync) happens in
:meth:`setup_hook`, after login and before the gateway connects.

Intents: ``guilds`` (servers and their channels) and ``dm_messages`` (photos sent in a DM). No
privileged intent: a DM to the bot carries its content without ``message_content``, and the bot
reads no server messages at all.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import discord
import yarl
from discord import app_commands

from bot.chat_progress import EDIT_INTERVAL_S
from bot.config import BotSettings
from bot.core import catalogue
from bot.core.events import ButtonPressed, Event, OfferedFile, PhotosOffered, TextMessage
from bot.core.replies import Reply
from bot.core.state import StyleInfo
from bot.discord_adapter.commands import UploadModal, register_commands
from bot.discord_adapter.endpoints import DEFAULT_GATEWAY, point_client
from bot.discord_adapter.notifier import DiscordNotifier
from bot.discord_adapter.responder import ANSWER_WITHIN_S, InteractionResponder
from bot.discord_adapter.sender import ChannelSender
from bot.discord_adapter.sync import STATE_FILE, sync_commands
from bot.discord_adapter.translate import command_from_text, offered_file, origin_of_interaction, origin_of_message
from bot.discord_adapter.views import CoreButton
from bot.service import ConversationService, Downloader, DownloadError
from storage.blobs import BlobStore

log = logging.getLogger("facechain.discord")
#: Messages a user wrote (not a pin, a call or another system message of the DM).
_USER_MESSAGES = frozenset({discord.MessageType.default, discord.MessageType.reply})


def intents() -> discord.Intents:
    """The gateway intents the bot asks for: servers, and messages in DMs."""
    wanted = discord.Intents.none()
    wanted.guilds = True
    wanted.dm_messages = True
    return wanted


@dataclass(frozen=True, slots=True)
class DiscordOptions:
    """Knobs of the adapter that are not operator settings (tests turn them)."""

    #: Answer an interaction directly when the core is done within this time; defer otherwise.
    answer_within_s: float = ANSWER_WITHIN_S
    #: Seconds between two progress edits in one channel.
    edit_interval_s: float = EDIT_INTERVAL_S
    #: Upload the slash commands at start when they changed since the last upload.
    sync_on_start: bool = True
    #: Where the fingerprint of the last command upload is kept (default: the data dir).
    state_file: Path | None = None


class FacechainClient(discord.Client):
    """The bot on Discord. ``service`` and ``blobs`` (the bot process's, from :mod:`bot.app`) may be None
    for a client that only syncs commands."""

    def __init__(
        self,
        settings: BotSettings,
        service: ConversationService | None,
        options: DiscordOptions | None = None,
        *,
        blobs: BlobStore | None = None,
    ) -> None:
        super().__init__(
            intents=intents(),
            # The core echoes user input (style names, prompts): never let it ping anyone.
            allowed_mentions=discord.AllowedMentions.none(),
            max_messages=None,
            chunk_guilds_at_startup=False,
            member_cache_flags=discord.MemberCacheFlags.none(),
        )
        self.options = options or DiscordOptions()
        self.settings = settings
        self.service = service
        self.limits = settings.limits()
        self.state_file = self.options.state_file or settings.data_dir / STATE_FILE
        #: FACECHAIN_DISCORD_GATEWAY_URL, else what GET /gateway/bot says (learnt in setup_hook).
        self.gateway: yarl.URL | None = (
            yarl.URL(str(settings.discord_gateway_url)) if settings.discord_gateway_url else None
        )
        point_client(self, str(settings.discord_api_url), lambda: self.gateway)
        self.tree: app_commands.CommandTree[FacechainClient] = app_commands.CommandTree(
            self,
            allowed_contexts=app_commands.AppCommandContext(guild=True, dm_channel=True, private_channel=False),
            allowed_installs=app_commands.AppInstallationType(guild=True, user=False),
        )
        self.upload_modal = UploadModal(self, self.limits)
        register_commands(self.tree, self, self.limits, self.upload_modal)
        self.channels = ChannelSender(self, blobs, edit_interval=self.options.edit_interval_s)
        self.logged_in = asyncio.Event()
        self.notifier = DiscordNotifier(self, self.channels, self.logged_in)

    async def setup_hook(self) -> None:
        self.add_dynamic_items(CoreButton)
        self.add_view(self.upload_modal)
        if self.service is None:
            # A client that only syncs commands never connects to the gateway.
            self.logged_in.set()
            return
        await self._choose_gateway()
        if self.options.sync_on_start:
            try:
                await sync_commands(self.tree, self.state_file)
            except discord.HTTPException as exc:
                # The bot still works with the commands Discord already has.
                log.error("slash command sync failed: %s %s", exc.status, exc.text)
        self.logged_in.set()

    async def close(self) -> None:
        await self.channels.aclose()
        await super().close()

    async def _choose_gateway(self) -> None:
        """Connect where FACECHAIN_DISCORD_GATEWAY_URL says, else where GET /gateway/bot says."""
        if self.gateway is None:
            try:
                _, url, _ = await self.http.get_bot_gateway()
            except discord.GatewayNotFound:
                log.warning("GET /gateway/bot failed; connecting to %s", DEFAULT_GATEWAY)
                return
            self.gateway = yarl.URL(url)

    # --------------------------------------------------------------------------------- events in
    async def on_message(self, message: discord.Message) -> None:
        """A DM to the bot: photos, a typed command, or text. Server messages never arrive (no intent)."""
        if message.guild is not None or message.author.bot or self.service is None:
            return
        events: list[Event]
        download: Downloader | None = None
        command = command_from_text(message.content)
        if message.attachments:
            # Photos with a command typed beside them: both, in the order the command needs.
            events = [PhotosOffered(tuple(offered_file(a) for a in message.attachments))]
            download = self.downloader(list(message.attachments), self.limits.max_photo_bytes)
            if command is not None:
                events = [command, *events] if catalogue.runs_before_files(command.name) else [*events, command]
        elif command is not None:
            events = [command]
        elif message.type in _USER_MESSAGES:
            # Text, or a sticker or voice message with none: answered with a hint of what the bot takes.
            events = [TextMessage(message.content)]
        else:
            return
        origin = origin_of_message(message)
        replies: list[Reply] = []
        for event in events:
            replies.extend(await self.service.answer(origin, event, download))
        await self._show_in_channel(message.channel.id, replies)

    async def button_pressed(
        self, interaction: discord.Interaction[Any], action: str, value: str, community: str | None
    ) -> None:
        """A press of one of the bot's buttons (see :class:`CoreButton`)."""
        await self.run_interaction(interaction, [ButtonPressed(action, value)], acting_for=community)

    async def run_interaction(
        self,
        interaction: discord.Interaction[Any],
        events: list[Event],
        download: Downloader | None = None,
        *,
        acting_for: str | None = None,
    ) -> None:
        """Hand the events to the core one after another and answer the interaction with all replies.
        ``acting_for``: the server a button pressed in a DM belongs to (its results were sent there)."""
        service = self.service
        if service is None:
            return
        if interaction.channel_id is not None:
            self.channels.note_upload_limit(interaction.channel_id, interaction.filesize_limit)
        origin = origin_of_interaction(interaction)

        async def work() -> list[Reply]:
            nonlocal origin
            if acting_for is not None and origin.private and await self._is_member(acting_for, interaction.user.id):
                # A DM is no age-restricted channel: the server's NSFW switch does not reach it.
                origin = replace(origin.acting_for(acting_for), age_restricted=False)
            replies: list[Reply] = []
            for event in events:
                replies.extend(await service.answer(origin, event, download))
            return replies

        responder = InteractionResponder(interaction, self.channels, answer_within=self.options.answer_within_s)
        await responder.run(work())
        for run_id, message_id in responder.progress_ids.items():
            await service.note_progress_message(run_id, message_id)
        for run_id in responder.unshown_runs:
            await service.cancel_run(origin, run_id)

    async def _is_member(self, guild_id: str, user_id: int) -> bool:
        """Whether ``user_id`` is still in the server (and the bot too); False when Discord can't say."""
        guild = self.get_guild(int(guild_id)) if guild_id.isdigit() else None
        if guild is None:
            log.info("a button of server %s pressed in a DM: the bot is not in that server", guild_id)
            return False
        if guild.get_member(user_id) is not None:
            return True
        try:
            await guild.fetch_member(user_id)
        except discord.NotFound:
            log.info("user %s pressed a button of server %s they are no longer in", user_id, guild_id)
            return False
        except discord.HTTPException as exc:
            log.warning("member lookup in server %s failed (%s): the press acts for the DM", guild_id, exc.status)
            return False
        return True

    async def training_now(self, interaction: discord.Interaction[Any]) -> bool:
        """Whether the user's face model is training now (no upload window is opened then)."""
        if self.service is None:
            return False
        return await self.service.training_now(origin_of_interaction(interaction))

    async def styles_here(self, interaction: discord.Interaction[Any], *, every: bool) -> tuple[StyleInfo, ...]:
        """The styles enabled where the interaction happens (for autocomplete)."""
        if self.service is None:
            return ()
        return await self.service.styles_for(origin_of_interaction(interaction), every=every)

    def downloader(self, attachments: list[discord.Attachment], limit: int) -> Downloader:
        """Fetches the given attachments from Discord's CDN; refuses one over ``limit`` bytes unfetched."""
        by_url = {a.url: a for a in attachments}

        async def download(offered: OfferedFile) -> bytes:
            attachment = by_url.get(offered.ref)
            if attachment is None:
                raise DownloadError("download_failed")
            if attachment.size > limit:
                raise DownloadError("too_large")
            try:
                return await attachment.read()
            except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as exc:
                log.info("download of attachment %s failed: %s", attachment.id, type(exc).__name__)
                raise DownloadError("download_failed") from None

        return download

    async def _show_in_channel(self, channel_id: int, replies: list[Reply]) -> None:
        sent = await self.channels.send(channel_id, replies)
        if self.service is not None:
            for run_id, message_id in sent.items():
                await self.service.note_progress_message(run_id, message_id)
