"""Core replies as messages sent with the bot token (not an interaction's token, which dies after 15
minutes): progress messages and their edits, portraits, and texts outside an interaction.

- Text → a channel message (split at 2000 characters), buttons under the last piece.
- Photos → messages of at most 10 files, each under the channel's upload limit (re-encoded to JPEG
  when too big), the caption on the first, the buttons under the last.
- ProgressMessage → a channel message; its id, as ``<channel id>/<message id>``, is what the service
  stores, so an edit finds the message wherever it was posted (a results-to-DMs server posts the
  progress in the server channel and the portraits in the DM).
- EditProgress → a message edit through :class:`EditThrottle`.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
import discord

from bot.chat_progress import EDIT_INTERVAL_S, EditThrottle, ProgressMessages
from bot.core import catalogue
from bot.core.formatting import split_message
from bot.core.replies import Button, EditProgress, Photos, ProgressMessage, Reply, Text
from bot.discord_adapter.media import CannotFit, Upload, fit_upload
from bot.discord_adapter.views import button_view
from bot.service import DeliveryRefused
from storage.blobs import BlobNotFound, BlobStore

log = logging.getLogger("facechain.discord")

#: Discord's limits: characters of a message, files of a message.
MAX_TEXT = 2000
MAX_FILES = 10
#: Channels whose upload limit is remembered from their interactions.
_LIMIT_MEMORY = 10_000


@dataclass(frozen=True, slots=True)
class MessageRef:
    """A message by channel and id; ``str()`` is the form stored as a run's progress message id."""

    channel_id: int
    message_id: int

    def __str__(self) -> str:
        return f"{self.channel_id}/{self.message_id}"

    @classmethod
    def parse(cls, value: str | None, channel_id: int | None = None) -> MessageRef | None:
        """Read a stored id: ``channel/message``, or a bare message id in ``channel_id``."""
        if not value:
            return None
        channel, _, message = value.rpartition("/")
        if channel.isdigit() and message.isdigit():
            return cls(int(channel), int(message))
        if not channel and message.isdigit() and channel_id is not None:
            return cls(channel_id, int(message))
        return None


#: The core's admin subcommands by their Discord names (``addstyle`` is ``add`` there), from the catalogue.
_ADMIN_SUBCOMMANDS = {c.name: c.slash_name for c in catalogue.ADMIN_COMMANDS}
#: The core names the admin command /admin; on Discord it is the /facechain-admin group.
_ADMIN_COMMAND = re.compile(
    rf"(?<![\w/-])/{re.escape(catalogue.ADMIN.name)}\b"
    rf"(?: (?P<sub>{'|'.join(map(re.escape, _ADMIN_SUBCOMMANDS))})\b)?"
)


def _admin_on_discord(match: re.Match[str]) -> str:
    sub = match["sub"]
    command = f"/{catalogue.ADMIN.slash_name}"
    return f"{command} {_ADMIN_SUBCOMMANDS[sub]}" if sub else command


#: The core speaks of "this group" (Telegram's word); on Discord the community is a server.
_THE_GROUP = re.compile(r"\b(?P<the>[Tt]his|[Tt]he whole|[Tt]he) group\b")


def discord_idiom(text: str) -> str:
    """The core's text as Discord users say it: command names as they type them (``/admin addstyle`` is
    ``/facechain-admin add``), and "this server" for "this group"."""
    return _THE_GROUP.sub(r"\g<the> server", _ADMIN_COMMAND.sub(_admin_on_discord, text))


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """Pieces Discord accepts (in Discord's command names), cut at line breaks where possible."""
    return split_message(discord_idiom(text), limit)


class ChannelSender:
    """Sends core replies to channels with the bot token. One per client; safe for any number of chats."""

    def __init__(
        self, client: discord.Client, blobs: BlobStore | None, *, edit_interval: float = EDIT_INTERVAL_S
    ) -> None:
        self._client = client
        self._blobs = blobs
        self._throttle: EditThrottle[str] = EditThrottle(self._edit, edit_interval)
        #: Runs' progress messages in memory (the database keeps their ids for good).
        self._progress: ProgressMessages[MessageRef] = ProgressMessages()
        self._limits: OrderedDict[int, int] = OrderedDict()

    # ------------------------------------------------------------------------------ public API
    def note_upload_limit(self, channel_id: int, limit: int) -> None:
        """Remember a channel's upload limit (every interaction tells it) for later deliveries there."""
        self._limits[channel_id] = limit
        self._limits.move_to_end(channel_id)
        while len(self._limits) > _LIMIT_MEMORY:
            self._limits.popitem(last=False)

    def upload_limit(self, channel_id: int) -> int:
        return self._limits.get(channel_id, discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES)

    async def send(
        self,
        channel_id: int,
        replies: Sequence[Reply],
        *,
        progress_message_id: str | None = None,
        must_deliver: bool = False,
    ) -> dict[str, str]:
        """Show ``replies`` in order in a channel; return run_id → stored id of each progress message sent.

        ``progress_message_id`` is the stored id of the run's progress message (from the database, for
        runs this process has not seen, as after a restart). A reply Discord rejects is logged and
        skipped. A channel the bot may not post in (or that is gone) ends the batch, and a reply that
        fails on the way (network, Discord's server) is skipped; with ``must_deliver`` (a worker's
        result) they raise instead: :class:`DeliveryRefused`, or the error, to be tried later.
        """
        sent: dict[str, str] = {}
        progress = MessageRef.parse(progress_message_id, channel_id)
        for reply in replies:
            try:
                match reply:
                    case Text():
                        await self.text(channel_id, reply.text, reply.buttons)
                    case Photos():
                        reference = progress if progress is not None and progress.channel_id == channel_id else None
                        await self.photos(channel_id, reply, reference=reference)
                    case ProgressMessage():
                        ref = await self.progress(channel_id, reply)
                        if ref is not None:
                            sent[reply.run_id] = str(ref)
                    case EditProgress():
                        await self.edit_progress(reply, progress)
            except (discord.Forbidden, discord.NotFound) as exc:
                log.info("channel %s does not take messages from the bot (%s %s)", channel_id, exc.status, exc.text)
                if must_deliver:
                    raise DeliveryRefused(f"channel {channel_id}: {exc.status} {exc.text}") from exc
                break
            except discord.DiscordServerError as exc:
                log.warning(
                    "a %s reply to channel %s failed: %s %s", type(reply).__name__, channel_id, exc.status, exc.text
                )
                if must_deliver:
                    raise
            except discord.HTTPException as exc:
                log.warning(
                    "a %s reply to channel %s was refused: %s %s",
                    type(reply).__name__,
                    channel_id,
                    exc.status,
                    exc.text,
                )
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.warning("a %s reply to channel %s failed: %r", type(reply).__name__, channel_id, exc)
                if must_deliver:
                    raise
        return sent

    async def text(self, channel_id: int, text: str, buttons: Sequence[Button] = ()) -> discord.Message:
        """A plain message (pieces of 2000 characters), the buttons under the last piece."""
        channel = self._client.get_partial_messageable(channel_id)
        pieces = split_text(text)
        message: discord.Message | None = None
        for index, piece in enumerate(pieces):
            view = button_view(buttons) if index == len(pieces) - 1 else None
            if view is None:
                message = await channel.send(piece)
            else:
                message = await channel.send(piece, view=view)
        assert message is not None
        return message

    async def progress(self, channel_id: int, reply: ProgressMessage) -> MessageRef | None:
        """Post a run's progress message; edits of the run that arrive meanwhile wait for its id."""

        async def send() -> MessageRef:
            message = await self.text(channel_id, reply.text, reply.buttons)
            return MessageRef(channel_id, message.id)

        return await self._progress.sending(reply.run_id, send)

    async def photo_batches(self, channel_id: int, keys: Sequence[str]) -> list[list[discord.File]]:
        """The pictures as files, each under the channel's upload limit, in messages of at most 10
        (none when no picture could be read or fitted)."""
        uploads = await asyncio.to_thread(self._uploads, keys, self.upload_limit(channel_id))
        return [
            [discord.File(io.BytesIO(u.data), filename=u.filename) for u in uploads[i : i + MAX_FILES]]
            for i in range(0, len(uploads), MAX_FILES)
        ]

    async def photos(self, channel_id: int, reply: Photos, *, reference: MessageRef | None = None) -> None:
        """Post portraits as files, at most 10 a message, each under the channel's upload limit."""
        batches = await self.photo_batches(channel_id, reply.keys)
        channel = self._client.get_partial_messageable(channel_id)
        caption = split_text(reply.caption)[0] if reply.caption else None
        for index, files in enumerate(batches):
            last = index == len(batches) - 1
            view = button_view(reply.buttons) if last else None
            kwargs: dict[str, object] = {}
            if view is not None:
                kwargs["view"] = view
            if index == 0 and reference is not None:
                kwargs["reference"] = discord.MessageReference(
                    message_id=reference.message_id, channel_id=reference.channel_id, fail_if_not_exists=False
                )
            await channel.send(caption if index == 0 else None, files=files, **kwargs)  # type: ignore[call-overload]

    async def edit_progress(self, reply: EditProgress, fallback: MessageRef | None = None) -> None:
        """Edit a run's progress message (throttled), found in memory or at ``fallback``."""
        stored = MessageRef.parse(reply.stored_at[1]) if reply.stored_at else None
        target = await self._progress.find(reply.run_id, final=reply.final) or stored or fallback
        if target is None:
            log.debug("no progress message known for run %s; edit skipped", reply.run_id)
            return
        await self._throttle.submit(target.channel_id, target.message_id, reply.text, final=reply.final)

    async def aclose(self) -> None:
        await self._throttle.aclose()

    # ------------------------------------------------------------------------------- helpers
    def _uploads(self, keys: Sequence[str], limit: int) -> list[Upload]:
        if self._blobs is None:
            raise RuntimeError("this Discord client was built without the blob store (a command-sync client)")
        uploads: list[Upload] = []
        for key in keys:
            try:
                data = self._blobs.get_bytes(key)
            except BlobNotFound:
                log.warning("portrait %s is missing from the blob store", key)
                continue
            try:
                uploads.append(fit_upload(data, key.rsplit("/", 1)[-1], limit))
            except CannotFit as exc:
                log.warning("portrait %s not sent: %s", key, exc)
        return uploads

    async def _edit(self, channel_id: int, message_id: int, text: str, final: bool) -> None:
        message = self._client.get_partial_messageable(channel_id).get_partial_message(message_id)
        try:
            if final:
                # A finished run's message keeps no buttons.
                await message.edit(content=split_text(text)[0], view=None)
            else:
                await message.edit(content=split_text(text)[0])
        except discord.NotFound:
            log.info("progress message %s in channel %s is gone", message_id, channel_id)
