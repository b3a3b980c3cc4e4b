"""Telegram objects → core events and origins. Pure functions: no I/O, no flow decisions.

Photos arrive as ``message.photo`` (compressed, several sizes: the largest is used) or as a
document (byte-exact; a document's thumbnail is never used in its place). Videos and animations
are passed on as files too, so the core can tell the user why it can't use them. A file whose
caption is a command is both: the file on offer and the command (:func:`file_events`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace

from telegram import CallbackQuery, Chat, Message, User
from telegram.constants import ChatType

from bot.core import catalogue
from bot.core.events import ButtonPressed, Command, Event, OfferedFile, PhotosOffered, TextMessage
from bot.core.replies import Button
from bot.service import Origin
from storage.models import Platform

_COMMAND = re.compile(r"^/(?P<name>[A-Za-z0-9_]{1,32})(?:@(?P<bot>[A-Za-z0-9_]{1,64}))?(?=\s|$)")


def is_private(chat: Chat) -> bool:
    return chat.type == ChatType.PRIVATE


def sent_as_chat(message: Message) -> bool:
    """The message was sent on behalf of its own group: an anonymous admin wrote it."""
    return message.sender_chat is not None and message.sender_chat.id == message.chat.id


def sender_key(message: Message) -> tuple[str, str] | None:
    """(user id, display name) of whoever sent the message; None for messages nobody sent.

    A message sent on behalf of a chat (an anonymous admin, a channel) belongs to that chat: its
    ``from`` is a shared placeholder account, so the chat's own id is the sender's identity.
    """
    if message.sender_chat is not None:
        return str(message.sender_chat.id), message.sender_chat.title or ""
    if message.from_user is None:
        return None
    return str(message.from_user.id), display_name(message.from_user)


def display_name(user: User) -> str:
    return user.full_name or user.username or str(user.id)


def origin(user_id: str, name: str, chat: Chat, *, is_admin: bool = False, direct_chat_id: str | None = None) -> Origin:
    """The core's Origin for a sender in a chat. A user's private chat id equals their user id."""
    private = is_private(chat)
    return Origin(
        platform=Platform.TELEGRAM,
        user_id=user_id,
        chat_id=str(chat.id),
        private=private,
        display_name=name,
        community_id=None if private else str(chat.id),
        is_admin=is_admin and not private,
        direct_chat_id=direct_chat_id,
    )


def parse_command(text: str, bot_username: str | None) -> Command | None:
    """``/name@bot args`` → Command, or None when the text is no command or is meant for another bot."""
    match = _COMMAND.match(text)
    if match is None:
        return None
    target = match.group("bot")
    if target is not None and (bot_username is None or target.casefold() != bot_username.casefold()):
        return None
    rest = text[match.end() :].strip()
    return Command(name=match.group("name").lower(), args=tuple(rest.split()), text=rest)


def _user_content(message: Message) -> bool:
    """The message carries something a user sent that the bot has no use for."""
    kinds = (message.sticker, message.voice, message.audio, message.location, message.venue, message.contact,
             message.poll, message.dice, message.game, message.story)  # fmt: skip
    return any(kind is not None for kind in kinds)


def offered_file(message: Message) -> OfferedFile | None:
    """The file a message carries, described before any download; None when it carries none."""
    if message.document is not None:
        doc = message.document
        return OfferedFile(
            ref=doc.file_id, size=doc.file_size, mime=doc.mime_type, filename=doc.file_name, compressed=False
        )
    if message.photo:
        largest = max(message.photo, key=lambda p: (p.width * p.height, p.file_size or 0))
        return OfferedFile(ref=largest.file_id, size=largest.file_size, mime="image/jpeg", compressed=True)
    if message.video is not None:
        video = message.video
        return OfferedFile(ref=video.file_id, size=video.file_size, mime=video.mime_type or "video/mp4")
    if message.animation is not None:
        anim = message.animation
        return OfferedFile(ref=anim.file_id, size=anim.file_size, mime=anim.mime_type or "video/mp4")
    if message.video_note is not None:
        note = message.video_note
        return OfferedFile(ref=note.file_id, size=note.file_size, mime="video/mp4")
    return None


def message_events(message: Message, bot_username: str | None) -> list[Event]:
    """The core events of one message, in the order to handle them; empty when none is for the bot."""
    if offered_file(message) is not None:
        return file_events([message], bot_username)
    if message.text is None:
        # A sticker, voice message, location...: what the user sent is answered like text (a hint of
        # what the bot takes), not with silence. Service messages (a pin, a member joining) are not.
        return [TextMessage("")] if _user_content(message) else []
    if message.text.startswith("/"):
        command = parse_command(message.text, bot_username)
        return [] if command is None else [command]
    return [TextMessage(message.text)]


def file_events(messages: Iterable[Message], bot_username: str | None) -> list[Event]:
    """The events of messages that carry files (one message, or all parts of an album).

    The files are offered together, in the order the user arranged them. A caption that is a command
    runs the command too: before the files when it opens a set they join (``/train``), after them
    otherwise (``/done`` then counts them). Only a command that takes a file (see :func:`takes_file`)
    gets its message's file as its attachment instead.
    """
    before: list[Event] = []
    after: list[Event] = []
    files: list[OfferedFile] = []
    for message in sorted(messages, key=lambda m: m.message_id):
        attached = offered_file(message)
        if attached is None:
            continue
        command = parse_command(message.caption, bot_username) if message.caption else None
        if command is not None and takes_file(command):
            after.append(replace(command, attachment=attached))
            continue
        files.append(attached)
        if command is not None:
            (before if catalogue.runs_before_files(command.name) else after).append(command)
    offered: list[Event] = [PhotosOffered(files=tuple(files))] if files else []
    return [*before, *offered, *after]


def takes_file(command: Command) -> bool:
    """Whether ``command`` uses a file sent with it (the catalogue says which: ``/admin addstyle``)."""
    if command.name != catalogue.ADMIN.name or not command.args:
        return False
    spec = catalogue.admin_command(command.args[0].casefold())
    return spec is not None and spec.takes_file


def button_event(query: CallbackQuery) -> tuple[ButtonPressed, str | None] | None:
    """The press, and the group the button acts for (None: wherever it is pressed)."""
    if not query.data:
        return None
    action, value, community = Button.parse(query.data)
    return ButtonPressed(action=action, value=value), community
