"""Core replies → Bot API calls, and the notifier that delivers a worker's progress and results.

- Text → sendMessage (plain text: the core's texts carry no markup), buttons as an inline keyboard.
- Photos → sendPhoto (one, buttons under it) or sendMediaGroup (2-10, caption on the first); a
  media group cannot carry a keyboard, so the buttons follow in a short message.
- ProgressMessage → sendMessage; its message id is remembered (and returned) for later edits.
- EditProgress → editMessageText through :class:`EditThrottle`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, InputMediaPhoto, Message, ReplyParameters
from telegram.error import BadRequest, ChatMigrated, Forbidden, TelegramError

from bot.chat_progress import EDIT_INTERVAL_S, EditThrottle, ProgressMessages
from bot.core.formatting import split_message
from bot.core.replies import Button, EditProgress, Photos, ProgressMessage, Reply, Text
from bot.service import DeliveryRefused
from bot.telegram_adapter.retry import with_retries
from storage.blobs import BlobNotFound, BlobStore
from storage.models import Delivery

log = logging.getLogger("facechain.telegram")

T = TypeVar("T")

#: Telegram's limits: message text, photo caption, items of a media group.
MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_GROUP = 10
#: Buttons per keyboard row, and the label characters a row holds before wrapping.
ROW_BUTTONS = 3
ROW_CHARS = 30


def keyboard(buttons: Sequence[Button]) -> InlineKeyboardMarkup | None:
    """Buttons in rows: up to three short ones side by side, a long label on a row of its own."""
    if not buttons:
        return None
    rows: list[list[InlineKeyboardButton]] = []
    row: list[InlineKeyboardButton] = []
    used = 0
    for button in buttons:
        width = len(button.label)
        if row and (len(row) >= ROW_BUTTONS or used + width > ROW_CHARS):
            rows.append(row)
            row, used = [], 0
        row.append(InlineKeyboardButton(button.label, callback_data=button.data))
        used += width
    rows.append(row)
    return InlineKeyboardMarkup(rows)


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """Text in pieces Telegram accepts, cut at line breaks where possible."""
    return split_message(text, limit, empty=" ")


@dataclass(frozen=True, slots=True)
class _ProgressTarget:
    chat_id: int
    message_id: int
    markup: InlineKeyboardMarkup | None = None


@dataclass(frozen=True, slots=True)
class _EditContent:
    text: str
    markup: InlineKeyboardMarkup | None


class TelegramSender:
    """Shows core replies in a Telegram chat. One per bot; safe for any number of chats at once."""

    def __init__(self, bot: Bot, blobs: BlobStore, *, edit_interval: float = EDIT_INTERVAL_S) -> None:
        self._bot = bot
        self._blobs = blobs
        self._throttle: EditThrottle[_EditContent] = EditThrottle(self._edit, edit_interval)
        #: Runs' progress messages in memory (the database keeps their ids for good).
        self._progress: ProgressMessages[_ProgressTarget] = ProgressMessages()

    async def send(
        self,
        chat_id: int,
        replies: Sequence[Reply],
        *,
        reply_to: int | None = None,
        must_deliver: bool = False,
    ) -> dict[str, str]:
        """Show ``replies`` in order; return run_id → message id of each progress message sent.

        ``reply_to`` threads the replies under the user's message (in groups: whose answer it is).
        A progress edit goes to the message this sender remembers, else to where the run stored it
        (``EditProgress.stored_at``: after a restart). A reply the server rejects is logged and skipped.
        A chat that blocked the bot ends the batch, and a reply that still fails after retries is
        skipped; with ``must_deliver`` (a worker's result) they raise instead: :class:`DeliveryRefused`,
        or the error, to be tried later.
        """
        sent: dict[str, str] = {}
        for reply in replies:
            try:
                try:
                    await self._one(chat_id, reply, reply_to, sent)
                except ChatMigrated as moved:
                    # The group became a supergroup (a new chat id): it and the rest of the batch go there.
                    log.info("chat %s is now supergroup %s", chat_id, moved.new_chat_id)
                    chat_id, reply_to = int(moved.new_chat_id), None
                    await self._one(chat_id, reply, reply_to, sent)
            except Forbidden as exc:
                log.info("chat %s does not accept messages from the bot (%s)", chat_id, exc.message)
                if must_deliver:
                    raise DeliveryRefused(f"chat {chat_id}: {exc.message}") from exc
                break
            except BadRequest as exc:
                log.warning("a %s reply to chat %s was refused: %s", type(reply).__name__, chat_id, exc.message)
            except TelegramError as exc:
                log.warning("a %s reply to chat %s failed: %s", type(reply).__name__, chat_id, exc.message)
                if must_deliver:
                    raise
        return sent

    async def aclose(self) -> None:
        await self._throttle.aclose()

    async def _one(
        self,
        chat_id: int,
        reply: Reply,
        reply_to: int | None,
        sent: dict[str, str],
    ) -> None:
        match reply:
            case Text():
                await self._text(chat_id, reply.text, keyboard(reply.buttons), reply_to)
            case Photos():
                await self._photos(chat_id, reply, reply_to)
            case ProgressMessage():
                message_id = await self._progress_message(chat_id, reply, reply_to)
                if message_id is not None:
                    sent[reply.run_id] = str(message_id)
            case EditProgress():
                await self._edit_progress(chat_id, reply)

    # ------------------------------------------------------------------------------- replies
    async def _text(
        self, chat_id: int, text: str, markup: InlineKeyboardMarkup | None, reply_to: int | None
    ) -> Message:
        pieces = split_text(text)
        message: Message | None = None
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            message = await self._call(
                "sendMessage",
                self._bot.send_message,
                chat_id,
                piece,
                reply_markup=markup if last else None,
                reply_parameters=_thread(reply_to),
            )
        assert message is not None
        return message

    async def _photos(self, chat_id: int, reply: Photos, reply_to: int | None) -> None:
        images: list[tuple[str, bytes]] = []
        for key in reply.keys:
            try:
                images.append((key, await asyncio.to_thread(self._blobs.get_bytes, key)))
            except BlobNotFound:
                log.warning("portrait %s is missing from the blob store", key)
        if not images:
            return
        caption = reply.caption[:MAX_CAPTION] or None
        markup = keyboard(reply.buttons)
        batches = [images[i : i + MAX_GROUP] for i in range(0, len(images), MAX_GROUP)]
        for index, batch in enumerate(batches):
            first_caption = caption if index == 0 else None
            if len(batch) == 1:
                keep = markup if index == len(batches) - 1 else None
                _, data = batch[0]
                await self._call(
                    "sendPhoto",
                    self._bot.send_photo,
                    chat_id,
                    data,
                    caption=first_caption,
                    reply_markup=keep,
                    reply_parameters=_thread(reply_to),
                )
                if keep is not None:
                    markup = None
                continue
            media = [
                InputMediaPhoto(data, caption=first_caption if i == 0 else None, filename=_file_name(key))
                for i, (key, data) in enumerate(batch)
            ]
            await self._call(
                "sendMediaGroup", self._bot.send_media_group, chat_id, media, reply_parameters=_thread(reply_to)
            )
        if markup is not None:
            await self._text(chat_id, caption or reply.caption or "…", markup, None)

    async def _progress_message(self, chat_id: int, reply: ProgressMessage, reply_to: int | None) -> int | None:
        markup = keyboard(reply.buttons)

        async def send() -> _ProgressTarget:
            message = await self._text(chat_id, reply.text, markup, reply_to)
            return _ProgressTarget(chat_id, message.message_id, markup)

        return (await self._progress.sending(reply.run_id, send)).message_id

    async def _edit_progress(self, chat_id: int, reply: EditProgress) -> None:
        target = await self._progress.find(reply.run_id, final=reply.final) or _stored_target(reply)
        if target is None:
            if reply.final:
                # The run finished before its progress message was known (a burst of load): the
                # final state must still reach the user, so say it in a message of its own.
                log.info("no progress message known for run %s; sending its final state", reply.run_id)
                await self._text(chat_id, reply.text, None, None)
                return
            log.debug("no progress message known for run %s; edit skipped", reply.run_id)
            return
        # A finished run's message loses its buttons; an intermediate edit keeps them.
        content = _EditContent(reply.text, None if reply.final else target.markup)
        await self._throttle.submit(target.chat_id, target.message_id, content, final=reply.final)

    async def _edit(self, chat_id: int, message_id: int, content: _EditContent, final: bool) -> None:
        try:
            await self._call(
                "editMessageText",
                self._bot.edit_message_text,
                content.text[:MAX_TEXT],
                chat_id=chat_id,
                message_id=message_id,
                reply_markup=content.markup,
            )
        except BadRequest as exc:
            if "not modified" in exc.message.lower():
                return
            log.info("progress message %s in chat %s not edited: %s", message_id, chat_id, exc.message)

    # ------------------------------------------------------------------------------- helpers
    async def _call(self, what: str, method: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        return await with_retries(lambda: method(*args, **kwargs), what)


class TelegramNotifier:
    """:class:`bot.service.Notifier` for Telegram: a worker's progress and results, outside any update."""

    def __init__(self, sender: TelegramSender) -> None:
        self._sender = sender

    async def deliver(self, delivery: Delivery, replies: Sequence[Reply]) -> Mapping[str, str]:
        """Show the replies in the run's chat; return run_id → message id of progress messages sent.
        Raises as :class:`bot.service.Notifier` says."""
        try:
            chat_id = int(delivery.chat_id)
        except ValueError:
            log.warning("a delivery to a malformed Telegram chat id %r was dropped", delivery.chat_id)
            return {}
        return await self._sender.send(chat_id, replies, must_deliver=True)


def _stored_target(reply: EditProgress) -> _ProgressTarget | None:
    """The progress message where the service says it is stored (see EditProgress.stored_at)."""
    if reply.stored_at is None:
        return None
    chat, message = reply.stored_at
    try:
        return _ProgressTarget(int(chat), int(message))
    except ValueError:
        return None


def _thread(reply_to: int | None) -> ReplyParameters | None:
    if reply_to is None:
        return None
    return ReplyParameters(message_id=reply_to, allow_sending_without_reply=True)


def _file_name(key: str) -> str:
    return key.rsplit("/", 1)[-1]
