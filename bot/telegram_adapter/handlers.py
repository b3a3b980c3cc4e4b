"""Updates → the conversation service → replies. Decides nothing about the conversation: it builds the
origin and the event, calls :meth:`ConversationService.handle`, and shows what comes back."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from telegram import Bot, CallbackQuery, ChatMemberRestricted, Message, Update
from telegram.constants import ChatMemberStatus
from telegram.error import ChatMigrated, TelegramError

from bot.core import texts
from bot.core.events import Command, Event
from bot.core.replies import Reply, Text
from bot.service import ConversationService, Downloader, Origin
from bot.telegram_adapter import translate
from bot.telegram_adapter.retry import with_retries
from bot.telegram_adapter.sender import TelegramSender
from storage.models import Platform

log = logging.getLogger("facechain.telegram")

#: Longest text an answerCallbackQuery alert shows.
MAX_ALERT = 200
_ADMIN_STATUSES = frozenset({ChatMemberStatus.OWNER, ChatMemberStatus.ADMINISTRATOR})
#: Members of a group (a restricted one is, too, while ``is_member`` says so).
_MEMBER_STATUSES = _ADMIN_STATUSES | {ChatMemberStatus.MEMBER}


class UpdateRouter:
    """Handles one update (or one album) of one chat; :class:`ChatLanes` calls it in order per chat."""

    def __init__(self, bot: Bot, service: ConversationService, sender: TelegramSender, download: Downloader) -> None:
        self._bot = bot
        self._service = service
        self._sender = sender
        self._download = download

    async def handle(self, update: Update) -> None:
        if update.callback_query is not None:
            await self._button(update.callback_query)
        elif update.message is not None:
            await self._message(update.message)

    async def handle_album(self, updates: list[Update]) -> None:
        messages = [u.message for u in updates if u.message is not None]
        if not messages:
            return
        first = min(messages, key=lambda m: m.message_id)
        await self._events(first, translate.file_events(messages, self._bot.username))

    # ------------------------------------------------------------------------------------ kinds
    async def _message(self, message: Message) -> None:
        if message.is_automatic_forward or message.migrate_to_chat_id is not None:
            return
        if message.migrate_from_chat_id is not None:
            # The first message of a supergroup that was a group: the group's settings move with it.
            await self._service.chat_moved(Platform.TELEGRAM, str(message.migrate_from_chat_id), str(message.chat.id))
            return
        await self._events(message, translate.message_events(message, self._bot.username))

    async def _events(self, message: Message, events: Sequence[Event]) -> None:
        """Hand the events of ``message`` (or of the album it opens) to the core, one after another."""
        who = translate.sender_key(message)
        if who is None or not events:
            return
        is_admin = False
        if any(isinstance(e, Command) for e in events) and not translate.is_private(message.chat):
            is_admin = await self._is_admin(message)
        origin = translate.origin(*who, message.chat, is_admin=is_admin, direct_chat_id=_direct_chat(message))
        for event in events:
            await self._run(origin, event, message)

    async def _button(self, query: CallbackQuery) -> None:
        tried = False
        try:
            pressed = translate.button_event(query)
            message = query.message
            if pressed is None or message is None:
                return
            event, community = pressed
            user = query.from_user
            origin = translate.origin(
                str(user.id), translate.display_name(user), message.chat, direct_chat_id=str(user.id)
            )
            if community is not None and origin.private:
                origin = await self._acting_for(origin, community, user.id)
            replies = await self._service.answer(origin, event, self._download)
            alert, rest = (None, replies) if origin.private else _take_alert(replies)
            tried = True
            if await self._answer(query, alert):
                replies = rest
            elif alert is not None:
                # Telegram refused the answer (a press handled late is "too old"): the alert is posted under
                # the pressed message instead, naming the presser (everyone in the group sees it).
                replies = [Text(texts.for_member(origin.display_name, alert)), *rest]
            reply_to = None if origin.private else message.message_id
            await self._show(message.chat.id, replies, reply_to)
        finally:
            if not tried:
                await self._answer(query, None)

    # ---------------------------------------------------------------------------------- helpers
    async def _run(self, origin: Origin, event: Event, message: Message) -> None:
        replies = await self._service.answer(origin, event, self._download)
        # In a group, answers are threaded under the message they answer: that shows whom they are for.
        reply_to = None if origin.private else message.message_id
        await self._show(message.chat.id, replies, reply_to)

    async def _show(self, chat_id: int, replies: Sequence[Reply], reply_to: int | None) -> None:
        sent = await self._sender.send(chat_id, replies, reply_to=reply_to)
        for run_id, message_id in sent.items():
            await self._service.note_progress_message(run_id, message_id)

    async def _is_admin(self, message: Message) -> bool:
        """Ask Telegram whether the sender administers the group; an anonymous admin is the group."""
        if translate.sent_as_chat(message):
            return True
        if message.sender_chat is not None or message.from_user is None:
            return False
        chat_id, user_id = message.chat.id, message.from_user.id
        try:
            member = await with_retries(lambda: self._bot.get_chat_member(chat_id, user_id), "getChatMember")
        except TelegramError as exc:
            log.warning("getChatMember failed in chat %s (%s): treating the sender as no admin", chat_id, exc)
            return False
        return member.status in _ADMIN_STATUSES

    async def _acting_for(self, origin: Origin, group: str, user_id: int) -> Origin:
        """A press in private of a group's button (portraits sent privately) acts for that group while
        the presser is still a member of it; otherwise it is a press in the private chat alone."""
        try:
            chat_id = int(group)
            try:
                member = await with_retries(lambda: self._bot.get_chat_member(chat_id, user_id), "getChatMember")
            except ChatMigrated as moved:
                # The group became a supergroup since the button was sent: its settings moved there.
                group, chat_id = str(moved.new_chat_id), int(moved.new_chat_id)
                member = await with_retries(lambda: self._bot.get_chat_member(chat_id, user_id), "getChatMember")
        except (ValueError, TelegramError) as exc:
            log.info("getChatMember failed for group %s (%s): the press acts for the private chat", group, exc)
            return origin
        if member.status in _MEMBER_STATUSES or (isinstance(member, ChatMemberRestricted) and member.is_member):
            return origin.acting_for(group)
        log.info("user %s pressed a button of group %s they are no longer in", user_id, group)
        return origin

    async def _answer(self, query: CallbackQuery, alert: str | None) -> bool:
        """Answer the press (with ``alert`` as a pop-up); False when Telegram refused the answer."""
        try:
            await with_retries(lambda: query.answer(text=alert, show_alert=alert is not None), "answerCallbackQuery")
        except TelegramError as exc:
            # Telegram accepts an answer for about 15 minutes after the press, and only once.
            log.debug("answerCallbackQuery failed: %s", type(exc).__name__)
            return False
        return True


def _take_alert(replies: Sequence[Reply]) -> tuple[str | None, list[Reply]]:
    """In a group, the first short personal text becomes a pop-up only the presser sees."""
    rest = list(replies)
    for index, reply in enumerate(rest):
        if isinstance(reply, Text) and reply.private and not reply.buttons and len(reply.text) <= MAX_ALERT:
            del rest[index]
            return reply.text, rest
    return None, rest


def _direct_chat(message: Message) -> str | None:
    """A user's private chat with the bot has the user's id (the bot can write there once started)."""
    if message.sender_chat is not None or message.from_user is None:
        return None
    return str(message.from_user.id)
