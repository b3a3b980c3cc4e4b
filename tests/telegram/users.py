"""Simulated Telegram users: they write, send photos and press buttons through the fake server, and
wait for what the bot shows in their chat."""

from __future__ import annotations

from tests.telegram.fake_bot_api import JSON, ChatMessage, FakeBotApi
from tests.telegram.media import face_photos


class TgUser:
    """A user in one chat (their private chat by default; :meth:`in_chat` for a group)."""

    def __init__(self, api: FakeBotApi, user_id: int, name: str, chat_id: int | None = None) -> None:
        self.api = api
        self.user_id = user_id
        self.name = name
        self.chat_id = user_id if chat_id is None else chat_id
        self._cursor = 0
        if user_id not in api.users:
            api.add_user(user_id, name)

    def in_chat(self, chat_id: int) -> TgUser:
        return TgUser(self.api, self.user_id, self.name, chat_id)

    # ------------------------------------------------------------------------------------ acting
    def say(self, text: str, *, as_chat: bool = False, as_channel: int | None = None) -> ChatMessage:
        """Write ``text``: as the group itself (an anonymous admin), or on behalf of one's channel."""
        return self.api.push_text(self.chat_id, self.user_id, text, as_chat=as_chat, as_channel=as_channel)

    def send_photos(self, datas: list[bytes], *, album: bool = True, as_documents: bool = False) -> list[ChatMessage]:
        """Photos as one album (2-10) or as separate messages; compressed photos or image documents."""
        group = self.api.new_album_id() if album and len(datas) > 1 else None
        sent = []
        for index, data in enumerate(datas, start=1):
            if as_documents:
                sent.append(
                    self.api.push_document(
                        self.chat_id, self.user_id, data, f"IMG_{index:04d}.jpg", "image/jpeg", media_group_id=group
                    )
                )
            else:
                sent.append(self.api.push_photo(self.chat_id, self.user_id, data, media_group_id=group))
        return sent

    def send_document(
        self, data: bytes, name: str, mime: str | None, *, size: int | None = None, caption: str | None = None
    ) -> ChatMessage:
        return self.api.push_document(self.chat_id, self.user_id, data, name, mime, size=size, caption=caption)

    def press(self, label: str, message: ChatMessage | None = None) -> str:
        """Press the button labelled ``label`` under ``message`` (default: the latest bot message that has it)."""
        if message is None:
            message = next(m for m in reversed(self.replies) if label in m.labels)
        button = next(b for b in message.buttons if b["text"] == label)
        return self.api.push_callback(self.chat_id, self.user_id, message, button["callback_data"])

    async def send_training_photos(
        self, photos: list[bytes], got: str = "Got ", *, as_documents: bool = False
    ) -> ChatMessage:
        """/train, then ``photos`` as one album; the bot's answer to them (it shows ``got``)."""
        self.say("/train")
        await self.expect("Send me")
        self.send_photos(photos, as_documents=as_documents)
        return await self.expect(got)

    async def answer_subject(self, subject: str = "A woman") -> None:
        """/done, then the ``subject`` button under the bot's question who is in the photos."""
        self.say("/done")
        await self.expect("Who is in these photos?")
        self.press(subject)

    async def ask_to_train(
        self, photos: list[bytes] | None = None, subject: str = "A woman", got: str = "Got "
    ) -> None:
        """Photos (three faces by default), /done, the subject button: the training is asked for (and
        queued, or refused while the queue is down); ``got``: what the answer to the photos shows."""
        await self.send_training_photos(photos or face_photos(3), got)
        await self.answer_subject(subject)

    async def generate(self, args: str, making: str) -> ChatMessage:
        """``/generate args``; wait for the progress message (showing ``making``) to say "Done." and the
        result's buttons; return the progress message."""
        self.say(f"/generate {args}")
        progress = await self.expect(making)
        await self.expect_edit(progress, "Done.", within=20)
        return progress

    def webhook_update(self, command: str) -> JSON:
        """The update Telegram posts to a webhook when this user writes ``command`` in their private chat
        (not queued for getUpdates; the fake server counts the user as having started the bot)."""
        self.api.started.add(self.user_id)
        entity = {"type": "bot_command", "offset": 0, "length": len(command.split()[0])}
        message = {
            "message_id": 1, "date": 0, "text": command, "chat": self.api.chats[self.user_id],
            "from": self.api.users[self.user_id], "entities": [entity],
        }  # fmt: skip
        return {"update_id": 1, "message": message}

    # ----------------------------------------------------------------------------------- looking
    @property
    def replies(self) -> list[ChatMessage]:
        """Everything the bot sent in this chat, in order."""
        return self.api.bot_messages(self.chat_id)

    async def expect(self, fragment: str, within: float = 10.0) -> ChatMessage:
        """The next bot message (after the last one expected) that shows or showed ``fragment``."""

        def find() -> ChatMessage | None:
            for index, message in enumerate(self.replies[self._cursor :], start=self._cursor):
                if any(fragment in text for text in message.history):
                    self._cursor = index + 1
                    return message
            return None

        found: ChatMessage = await self.api.wait_for(find, within, f"{fragment!r} in chat {self.chat_id}")
        return found

    async def expect_edit(self, message: ChatMessage, fragment: str, within: float = 10.0) -> None:
        """Wait until ``message`` was edited to show ``fragment``."""
        await self.api.wait_for(
            lambda: any(fragment in text for _, text in message.edits), within, f"edit {fragment!r}"
        )

    async def wait_buttons(self, labels: list[str], within: float = 10.0) -> ChatMessage:
        """The latest bot message whose buttons are exactly ``labels``."""

        def find() -> ChatMessage | None:
            return next((m for m in reversed(self.replies) if m.labels == labels), None)

        found: ChatMessage = await self.api.wait_for(find, within, f"buttons {labels}")
        return found

    def texts(self) -> list[str]:
        return [m.shown for m in self.replies]
