"""Discord objects → the core's vocabulary: who is speaking and from where (:class:`Origin`), the files
they offer (:class:`OfferedFile`) and the text of a DM that looks like a command.

Chat ids are Discord channel ids as strings. A user's DMs, when a server sends results there, are
named ``dm:<user id>`` (:func:`direct_chat_id`); the notifier opens that DM channel when it first
delivers there, so no interaction has to wait for Discord to create it.
"""

from __future__ import annotations

from dataclasses import replace

import discord

from bot.core.events import Command, OfferedFile
from bot.service import Origin
from storage.models import Platform

#: Prefix of a chat id that names a user's DM channel by the user's id.
DM_PREFIX = "dm:"


def direct_chat_id(user_id: int) -> str:
    """The chat id that stands for the DM channel with ``user_id`` (opened when first used)."""
    return f"{DM_PREFIX}{user_id}"


def dm_user_id(chat_id: str) -> int | None:
    """The user id of a ``dm:<user id>`` chat id; None for a plain channel id."""
    if not chat_id.startswith(DM_PREFIX):
        return None
    rest = chat_id[len(DM_PREFIX) :]
    return int(rest) if rest.isdigit() else None


def origin_of_interaction(interaction: discord.Interaction[discord.Client]) -> Origin:
    """The origin of an interaction: a server channel (with the member's Manage Server permission) or a DM."""
    user = interaction.user
    channel_id = str(interaction.channel_id or "")
    in_private = _dm_origin(user, channel_id)
    if interaction.guild_id is None:
        return in_private
    return replace(
        in_private,
        private=False,
        community_id=str(interaction.guild_id),
        # The permission Discord computed for this member in this channel, sent with the interaction:
        # the command's default_permissions only hides the menu entry, and server owners can change that.
        is_admin=interaction.permissions.manage_guild,
        direct_chat_id=direct_chat_id(user.id),
        age_restricted=_age_restricted(interaction.channel),
    )


def origin_of_message(message: discord.Message) -> Origin:
    """The origin of a DM to the bot (the only messages the bot reads)."""
    return _dm_origin(message.author, str(message.channel.id))


def _dm_origin(user: discord.User | discord.Member, chat_id: str) -> Origin:
    """A private chat with ``user``: no community, no admin rights, no age mark."""
    return Origin(
        platform=Platform.DISCORD,
        user_id=str(user.id),
        chat_id=chat_id,
        private=True,
        display_name=user.display_name,
    )


def offered_file(attachment: discord.Attachment) -> OfferedFile:
    """An attachment as the core sees it before download; its URL is the handle to fetch it."""
    return OfferedFile(
        ref=attachment.url,
        size=attachment.size,
        mime=attachment.content_type,
        filename=attachment.filename,
        # Discord keeps attachments byte-exact.
        compressed=False,
    )


def command_from_text(text: str) -> Command | None:
    """``/done`` typed into a DM as plain text (not picked from the command menu) is still the command."""
    stripped = text.strip()
    if not stripped.startswith("/") or len(stripped) < 2:
        return None
    name, _, rest = stripped[1:].partition(" ")
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        return None
    return Command(name=name.casefold(), args=tuple(rest.split()), text=rest.strip())


def _age_restricted(channel: object) -> bool | None:
    is_nsfw = getattr(channel, "is_nsfw", None)
    if is_nsfw is None:
        return False
    return bool(is_nsfw())
