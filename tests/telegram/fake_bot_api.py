"""A fake Telegram Bot API server: aiohttp on 127.0.0.1, speaking the real wire format.

The bot under test talks to it over HTTP exactly as it would to api.telegram.org (methods at
``{root}/bot{token}/{method}``, files at ``{root}/file/bot{token}/{path}``). It keeps an in-memory
model: users, chats and their members, every message with its id and edit history, the files users
sent (served with their bytes), the command menus. Tests act as users (:meth:`FakeBotApi.push_text`
and friends queue updates that ``getUpdates`` hands out with Telegram's offset semantics) and read
what the bot did per chat. :meth:`FakeBotApi.fail_next` throws a 429 with ``retry_after`` or a 5xx
at the next call of a method.

It checks what Telegram checks where a bot could get it wrong: text and caption lengths, callback
data ≤ 64 bytes, media groups of 2-10 items, "message is not modified", getFile's 20 MB limit, and a
bot may not start a private conversation with a user who never wrote to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from tests.waiting import eventually

BOT_ID = 7_000_001
BOT_USERNAME = "facechain_test_bot"
ANONYMOUS_ADMIN_ID = 1_087_968_824
#: The placeholder ``from`` of messages a user posts in a group on behalf of their channel.
CHANNEL_BOT_ID = 136_817_688
#: getFile's limit on the cloud Bot API.
DOWNLOAD_LIMIT = 20 * 1024 * 1024
#: A long poll waits at most this long here (the bot asks for more; tests don't want to wait).
LONG_POLL_CAP_S = 1.0

JSON = dict[str, Any]


#: How a fault quotes the request it fails, as some proxies and gateways do: not at all, in an HTML
#: error page (not JSON: PTB logs "Can not load invalid JSON data" with the page), or in the JSON
#: ``description`` (PTB makes it the exception's message).
Echo = Literal["html", "json"] | None


class ApiError(Exception):
    """An error answer: ``{"ok": false, "error_code": status, "description": ...}``."""

    def __init__(
        self,
        status: int,
        description: str,
        retry_after: int | None = None,
        echo: Echo = None,
        migrate_to_chat_id: int | None = None,
    ) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after
        self.echo = echo
        self.migrate_to_chat_id = migrate_to_chat_id

    def echoed(self, request: web.Request, body: bytes) -> web.Response:
        """The answer of an echoing proxy: it quotes the request line (with the token) and the body."""
        quoted = f"{request.method} {request.raw_path} body: {body.decode(errors='replace')}"
        if self.echo == "json":
            return web.json_response(
                {"ok": False, "error_code": self.status, "description": f"{self.description}: {quoted}"},
                status=self.status,
            )
        page = f"<html><body><h1>{self.status} {self.description}</h1><p>upstream failed: {quoted}</p></body></html>"
        return web.Response(status=self.status, text=page, content_type="text/html")

    def body(self) -> JSON:
        body: JSON = {"ok": False, "error_code": self.status, "description": self.description}
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        if self.migrate_to_chat_id is not None:
            body["parameters"] = {"migrate_to_chat_id": self.migrate_to_chat_id}
        return body


@dataclass
class ChatMessage:
    """A message in a chat, from the bot or from a user, as the fake keeps it."""

    chat_id: int
    message_id: int
    from_bot: bool
    sender_id: int
    text: str | None = None
    caption: str | None = None
    photo: bytes | None = None
    media_group_id: str | None = None
    reply_to: int | None = None
    keyboard: list[list[JSON]] = field(default_factory=list)
    #: (monotonic time, new text) of every edit, in order.
    edits: list[tuple[float, str]] = field(default_factory=list)
    sent_at: float = field(default_factory=time.monotonic)
    json: JSON = field(default_factory=dict)
    #: The text or caption it was sent with.
    original: str = ""

    def __post_init__(self) -> None:
        self.original = self.text if self.text is not None else (self.caption or "")

    @property
    def shown(self) -> str:
        """What the chat shows now: the text (after edits) or the caption."""
        return self.text if self.text is not None else (self.caption or "")

    @property
    def history(self) -> list[str]:
        """Every text the message has shown, the first one included."""
        return [self.original, *(text for _, text in self.edits)]

    @property
    def buttons(self) -> list[JSON]:
        return [button for row in self.keyboard for button in row]

    @property
    def labels(self) -> list[str]:
        return [b["text"] for b in self.buttons]


@dataclass
class StoredFile:
    file_id: str
    unique_id: str
    data: bytes
    size: int
    path: str


@dataclass
class Call:
    method: str
    params: JSON
    at: float


class Params:
    """A method's parameters as PTB sends them: JSON body, form fields (values JSON-encoded) or multipart."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self.values.get(name, default)
        return value if value is None or isinstance(value, str) else json.dumps(value)

    def integer(self, name: str, default: int | None = None) -> int | None:
        value = self.values.get(name)
        return default if value is None else int(value)

    def flag(self, name: str) -> bool:
        value = self.values.get(name)
        return value in (True, "true", "True", "1")

    def decoded(self, name: str) -> Any:
        value = self.values.get(name)
        if isinstance(value, str):
            return json.loads(value)
        return value

    def upload(self, name: str) -> bytes | None:
        value = self.values.get(name)
        return value if isinstance(value, bytes) else None


class FakeBotApi:
    """The fake server. ``async with FakeBotApi(token) as api:`` serves on ``api.root``."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.root = ""
        self.bot_user: JSON = {
            "id": BOT_ID, "is_bot": True, "first_name": "FaceChain", "username": BOT_USERNAME,
            "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False,
        }  # fmt: skip
        self.users: dict[int, JSON] = {}
        self.chats: dict[int, JSON] = {}
        #: (chat id, user id) → "creator" | "administrator" | "member" | "left".
        self.members: dict[tuple[int, int], str] = {}
        #: Users who wrote to the bot in private: the bot may message them.
        self.started: set[int] = set()
        #: Old group id → the supergroup it became (:meth:`migrate_group`).
        self.migrated: dict[int, int] = {}
        self.messages: dict[int, list[ChatMessage]] = defaultdict(list)
        self.files: dict[str, StoredFile] = {}
        self.calls: list[Call] = []
        self.callback_answers: list[JSON] = []
        self.commands: dict[str, list[JSON]] = {}
        self.webhook: JSON | None = None
        self._faults: dict[str, deque[ApiError]] = defaultdict(deque)
        self._updates: list[JSON] = []
        self._update_ids = itertools.count(1)
        self._message_ids: dict[int, itertools.count[int]] = defaultdict(lambda: itertools.count(1))
        self._file_ids = itertools.count(1)
        self._album_ids = itertools.count(1)
        self._query_ids = itertools.count(1)
        self._new_update = asyncio.Event()
        self._runner: web.AppRunner | None = None

    # -------------------------------------------------------------------------------- lifecycle
    async def __aenter__(self) -> FakeBotApi:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._method)
        app.router.add_get("/file/bot{token}/{path:.+}", self._file)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        site = web.SockSite(self._runner, sock)
        await site.start()
        self.root = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._new_update.set()
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------------- the user's side
    def add_user(self, user_id: int, first_name: str, username: str | None = None) -> JSON:
        user: JSON = {"id": user_id, "is_bot": False, "first_name": first_name}
        if username:
            user["username"] = username
        self.users[user_id] = user
        self.chats[user_id] = {"id": user_id, "type": "private", "first_name": first_name}
        return user

    def add_group(self, chat_id: int, title: str) -> JSON:
        self.chats[chat_id] = {"id": chat_id, "type": "supergroup", "title": title}
        return self.chats[chat_id]

    def add_channel(self, chat_id: int, title: str) -> JSON:
        """A channel (a user may post in groups on its behalf: :meth:`push_text` with ``as_channel``)."""
        self.chats[chat_id] = {"id": chat_id, "type": "channel", "title": title}
        return self.chats[chat_id]

    def migrate_group(self, old_chat_id: int, new_chat_id: int) -> None:
        """The group becomes a supergroup with a new id, as Telegram does when an admin turns on a
        supergroup feature: its members move, each chat gets a service message naming the other, and
        the bot's sends to the old id are refused with the new one."""
        title = self.chats[old_chat_id].get("title", "")
        self.chats[new_chat_id] = {"id": new_chat_id, "type": "supergroup", "title": title}
        for (chat_id, user_id), status in list(self.members.items()):
            if chat_id == old_chat_id:
                self.members[(new_chat_id, user_id)] = status
        self.migrated[old_chat_id] = new_chat_id
        someone = next(iter(self.users))
        self._push_message(old_chat_id, someone, {"migrate_to_chat_id": new_chat_id})
        self._push_message(new_chat_id, someone, {"migrate_from_chat_id": old_chat_id})

    def set_member(self, chat_id: int, user_id: int, status: str) -> None:
        self.members[(chat_id, user_id)] = status

    def add_file(self, data: bytes, *, size: int | None = None, folder: str = "photos", suffix: str = "jpg") -> str:
        """Store a file as if a user uploaded it; ``size`` overrides the size Telegram reports."""
        number = next(self._file_ids)
        file_id = f"FILE{number:06d}x{len(data)}"
        self.files[file_id] = StoredFile(
            file_id, f"U{number:06d}", data, len(data) if size is None else size, f"{folder}/file_{number}.{suffix}"
        )
        return file_id

    def push_text(
        self, chat_id: int, user_id: int, text: str, *, as_chat: bool = False, as_channel: int | None = None
    ) -> ChatMessage:
        """A user writes ``text``; ``as_chat``: an anonymous admin, sending on behalf of the group;
        ``as_channel``: a member posting on behalf of their own channel (that chat's id)."""
        extra: JSON = {"text": text}
        if text.startswith("/"):
            length = len(text.split()[0])
            extra["entities"] = [{"type": "bot_command", "offset": 0, "length": length}]
        return self._push_message(chat_id, user_id, extra, as_chat=as_chat, as_channel=as_channel)

    def push_photo(
        self, chat_id: int, user_id: int, data: bytes, *, media_group_id: str | None = None, caption: str | None = None
    ) -> ChatMessage:
        """A compressed photo: Telegram sends several sizes; the last is the largest."""
        big = self.add_file(data)
        thumb = self.add_file(data[: max(len(data) // 10, 1)])
        sizes = [
            {"file_id": thumb, "file_unique_id": self.files[thumb].unique_id, "width": 90, "height": 90,
             "file_size": self.files[thumb].size},
            {"file_id": big, "file_unique_id": self.files[big].unique_id, "width": 800, "height": 800,
             "file_size": self.files[big].size},
        ]  # fmt: skip
        extra: JSON = {"photo": sizes}
        if media_group_id:
            extra["media_group_id"] = media_group_id
        if caption:
            extra["caption"] = caption
        return self._push_message(chat_id, user_id, extra)

    def push_sticker(self, chat_id: int, user_id: int) -> ChatMessage:
        """A sticker: no text, no file the bot could use."""
        sticker = {"file_id": self.add_file(b"RIFF sticker", suffix="webp"), "type": "regular", "width": 512,
                   "height": 512, "is_animated": False, "is_video": False}  # fmt: skip
        sticker["file_unique_id"] = f"u{sticker['file_id']}"
        return self._push_message(chat_id, user_id, {"sticker": sticker})

    def push_document(
        self,
        chat_id: int,
        user_id: int,
        data: bytes,
        file_name: str,
        mime_type: str | None,
        *,
        size: int | None = None,
        media_group_id: str | None = None,
        caption: str | None = None,
    ) -> ChatMessage:
        suffix = file_name.rsplit(".", 1)[-1] if "." in file_name else "bin"
        file_id = self.add_file(data, size=size, folder="documents", suffix=suffix)
        stored = self.files[file_id]
        document: JSON = {
            "file_id": file_id, "file_unique_id": stored.unique_id, "file_name": file_name, "file_size": stored.size,
        }  # fmt: skip
        if mime_type:
            document["mime_type"] = mime_type
        extra: JSON = {"document": document}
        if media_group_id:
            extra["media_group_id"] = media_group_id
        if caption:
            extra["caption"] = caption
            if caption.startswith("/"):
                extra["caption_entities"] = [{"type": "bot_command", "offset": 0, "length": len(caption.split()[0])}]
        return self._push_message(chat_id, user_id, extra)

    def new_album_id(self) -> str:
        return f"album{next(self._album_ids)}"

    def push_callback(self, chat_id: int, user_id: int, message: ChatMessage, data: str) -> str:
        """A user presses a button with ``data`` under ``message``."""
        query_id = f"Q{next(self._query_ids)}"
        self._queue_update(
            {
                "callback_query": {
                    "id": query_id,
                    "from": self.users[user_id],
                    "chat_instance": f"ci{chat_id}",
                    "data": data,
                    "message": message.json,
                }
            }
        )
        return query_id

    def _push_message(
        self, chat_id: int, user_id: int, extra: JSON, *, as_chat: bool = False, as_channel: int | None = None
    ) -> ChatMessage:
        chat = self.chats[chat_id]
        message_id = next(self._message_ids[chat_id])
        body: JSON = {"message_id": message_id, "date": int(time.time()), "chat": chat, **extra}
        # As Telegram does: sender_chat is the group itself for an anonymous admin, the channel for a
        # post on a channel's behalf; ``from`` is then a placeholder account, the same for everybody.
        if as_chat:
            body["from"] = {"id": ANONYMOUS_ADMIN_ID, "is_bot": True, "first_name": "Group",
                            "username": "GroupAnonymousBot"}  # fmt: skip
            body["sender_chat"] = chat
        elif as_channel is not None:
            body["from"] = {"id": CHANNEL_BOT_ID, "is_bot": True, "first_name": "Channel", "username": "Channel_Bot"}
            body["sender_chat"] = self.chats[as_channel]
        else:
            body["from"] = self.users[user_id]
        if chat["type"] == "private":
            self.started.add(user_id)
        message = ChatMessage(
            chat_id, message_id, False, user_id, text=extra.get("text"), caption=extra.get("caption"),
            media_group_id=extra.get("media_group_id"), json=body,
        )  # fmt: skip
        self.messages[chat_id].append(message)
        self._queue_update({"message": body})
        return message

    def _queue_update(self, update: JSON) -> None:
        self._updates.append({"update_id": next(self._update_ids), **update})
        self._new_update.set()

    # -------------------------------------------------------------------------- the test's view
    def fail_next(self, method: str, status: int, *, retry_after: int | None = None, echo: Echo = None) -> None:
        """The next call of ``method`` fails: 429 with ``retry_after``, or another error status. With
        ``echo`` the answer quotes the request (path with the token, and body) as an echoing proxy's would."""
        descriptions = {429: f"Too Many Requests: retry after {retry_after or 0}", 400: "Bad Request",
                        502: "Bad Gateway", 503: "Service Unavailable"}  # fmt: skip
        description = descriptions.get(status, "Internal Server Error")
        self._faults[method].append(ApiError(status, description, retry_after, echo))

    def bot_messages(self, chat_id: int) -> list[ChatMessage]:
        return [m for m in self.messages[chat_id] if m.from_bot]

    def calls_of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    @property
    def pending_updates(self) -> int:
        return len(self._updates)

    async def wait_for(self, predicate: Callable[[], Any], within: float = 10.0, what: str = "") -> Any:
        """Poll ``predicate`` until it returns something truthy; fail the test after ``within`` s."""
        return await eventually(predicate, within, what, every=0.02)

    # ------------------------------------------------------------------------------ the server
    async def _method(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response({"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401)
        method = request.match_info["method"]
        faults = self._faults.get(method)
        if faults and faults[0].echo is not None:
            body = await request.read()  # read raw, as a proxy sees it (the method's parameters stay unparsed)
            self.calls.append(Call(method, {"echoed": True}, time.monotonic()))
            return faults.popleft().echoed(request, body)
        params = await _read_params(request)
        self.calls.append(Call(method, {k: v for k, v in params.values.items() if not isinstance(v, bytes)},
                               time.monotonic()))  # fmt: skip
        try:
            faults = self._faults.get(method)
            if faults:
                raise faults.popleft()
            handler = getattr(self, f"_api_{method}", None)
            if handler is None:
                raise ApiError(404, "Not Found: method not found")
            result = await handler(params)
        except ApiError as exc:
            return web.json_response(exc.body(), status=exc.status)
        return web.json_response({"ok": True, "result": result})

    async def _file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        path = request.match_info["path"]
        for stored in self.files.values():
            if stored.path == path:
                return web.Response(body=stored.data, content_type="application/octet-stream")
        return web.Response(status=404)

    # ---- methods
    async def _api_getMe(self, p: Params) -> JSON:
        return self.bot_user

    async def _api_deleteWebhook(self, p: Params) -> bool:
        self.webhook = None
        return True

    async def _api_setWebhook(self, p: Params) -> bool:
        self.webhook = {"url": p.text("url"), "secret_token": p.text("secret_token"),
                        "allowed_updates": p.decoded("allowed_updates")}  # fmt: skip
        return True

    async def _api_setMyCommands(self, p: Params) -> bool:
        commands = p.decoded("commands")
        scope = p.decoded("scope") or {"type": "default"}
        for command in commands:
            assert 1 <= len(command["command"]) <= 32 and command["command"] == command["command"].lower()
            assert 1 <= len(command["description"]) <= 256
        self.commands[scope["type"]] = commands
        return True

    async def _api_getUpdates(self, p: Params) -> list[JSON]:
        offset = p.integer("offset", 0) or 0
        limit = p.integer("limit", 100) or 100
        timeout = min(float(p.integer("timeout", 0) or 0), LONG_POLL_CAP_S)
        # Everything below the offset is confirmed: Telegram forgets it.
        self._updates = [u for u in self._updates if u["update_id"] >= offset]
        if not self._updates and timeout > 0:
            self._new_update.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_update.wait(), timeout)
        return self._updates[:limit]

    async def _api_sendMessage(self, p: Params) -> JSON:
        chat_id = self._writable_chat(p)
        text = p.text("text") or ""
        if not text.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if len(text) > 4096:
            raise ApiError(400, "Bad Request: message is too long")
        return self._bot_message(chat_id, p, {"text": text}).json

    async def _api_editMessageText(self, p: Params) -> JSON:
        chat_id = p.integer("chat_id")
        message_id = p.integer("message_id")
        text = p.text("text") or ""
        target = next((m for m in self.messages.get(chat_id or 0, []) if m.message_id == message_id), None)
        if target is None or not target.from_bot:
            raise ApiError(400, "Bad Request: message to edit not found")
        keyboard = _keyboard(p)
        if target.text == text and target.keyboard == keyboard:
            raise ApiError(
                400,
                "Bad Request: message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message",
            )
        target.text = text
        target.keyboard = keyboard
        target.edits.append((time.monotonic(), text))
        target.json = {**target.json, "text": text, "edit_date": int(time.time())}
        if keyboard:
            target.json["reply_markup"] = {"inline_keyboard": keyboard}
        else:
            target.json.pop("reply_markup", None)
        return target.json

    async def _api_sendPhoto(self, p: Params) -> JSON:
        chat_id = self._writable_chat(p)
        data = p.upload("photo")
        if data is None:
            raise ApiError(400, "Bad Request: there is no photo in the request")
        return self._photo_message(chat_id, p, data, p.text("caption"), None).json

    async def _api_sendMediaGroup(self, p: Params) -> list[JSON]:
        chat_id = self._writable_chat(p)
        media = p.decoded("media")
        if not 2 <= len(media) <= 10:
            raise ApiError(400, "Bad Request: wrong number of media in the group (must be 2-10)")
        group = f"out{next(self._album_ids)}"
        sent = []
        for item in media:
            ref = item["media"]
            if not ref.startswith("attach://"):
                raise ApiError(400, "Bad Request: the fake only takes uploaded media")
            data = p.upload(ref.removeprefix("attach://"))
            if data is None:
                raise ApiError(400, "Bad Request: a media file is missing")
            sent.append(self._photo_message(chat_id, p, data, item.get("caption"), group).json)
        return sent

    async def _api_answerCallbackQuery(self, p: Params) -> bool:
        self.callback_answers.append(
            {"id": p.text("callback_query_id"), "text": p.text("text"), "show_alert": p.flag("show_alert")}
        )
        return True

    async def _api_getFile(self, p: Params) -> JSON:
        stored = self.files.get(p.text("file_id") or "")
        if stored is None:
            raise ApiError(400, "Bad Request: invalid file_id")
        if stored.size > DOWNLOAD_LIMIT:
            raise ApiError(400, "Bad Request: file is too big")
        return {"file_id": stored.file_id, "file_unique_id": stored.unique_id, "file_size": stored.size,
                "file_path": stored.path}  # fmt: skip

    async def _api_getChatMember(self, p: Params) -> JSON:
        chat_id, user_id = p.integer("chat_id"), p.integer("user_id")
        if chat_id in self.migrated:
            raise ApiError(
                400, "Bad Request: group chat was upgraded to a supergroup chat",
                migrate_to_chat_id=self.migrated[chat_id],
            )  # fmt: skip
        if chat_id not in self.chats or user_id not in self.users:
            raise ApiError(400, "Bad Request: member not found")
        status = self.members.get((chat_id, user_id), "member")
        member: JSON = {"status": status, "user": self.users[user_id]}
        if status == "creator":
            member["is_anonymous"] = False
        elif status == "administrator":
            member.update(
                can_be_edited=False, is_anonymous=False, can_manage_chat=True, can_delete_messages=True,
                can_manage_video_chats=True, can_restrict_members=True, can_promote_members=False,
                can_change_info=True, can_invite_users=True, can_post_stories=False, can_edit_stories=False,
                can_delete_stories=False,
            )  # fmt: skip
        return member

    # ---- helpers
    def _writable_chat(self, p: Params) -> int:
        chat_id = p.integer("chat_id")
        if chat_id is None or chat_id not in self.chats:
            raise ApiError(400, "Bad Request: chat not found")
        if chat_id in self.migrated:
            raise ApiError(
                400, "Bad Request: group chat was upgraded to a supergroup chat",
                migrate_to_chat_id=self.migrated[chat_id],
            )  # fmt: skip
        if self.chats[chat_id]["type"] == "private" and chat_id not in self.started:
            raise ApiError(403, "Forbidden: bot can't initiate conversation with a user")
        return chat_id

    def _bot_message(self, chat_id: int, p: Params, content: JSON, group: str | None = None) -> ChatMessage:
        message_id = next(self._message_ids[chat_id])
        body: JSON = {"message_id": message_id, "date": int(time.time()), "chat": self.chats[chat_id],
                      "from": self.bot_user, **content}  # fmt: skip
        keyboard = _keyboard(p) if group is None else []
        if keyboard:
            body["reply_markup"] = {"inline_keyboard": keyboard}
        reply = p.decoded("reply_parameters")
        reply_to = reply.get("message_id") if isinstance(reply, dict) else None
        replied = next((m for m in self.messages[chat_id] if m.message_id == reply_to), None)
        if replied is not None:
            # Telegram puts the whole replied-to message in (one level deep): whoever pressed a button
            # under this message, its reply_to_message still names the user the bot answered.
            body["reply_to_message"] = {k: v for k, v in replied.json.items() if k != "reply_to_message"}
        if group:
            body["media_group_id"] = group
        message = ChatMessage(
            chat_id, message_id, True, BOT_ID, text=content.get("text"), caption=content.get("caption"),
            media_group_id=group, reply_to=reply_to, keyboard=keyboard, json=body,
        )  # fmt: skip
        self.messages[chat_id].append(message)
        return message

    def _photo_message(
        self, chat_id: int, p: Params, data: bytes, caption: str | None, group: str | None
    ) -> ChatMessage:
        if caption is not None and len(caption) > 1024:
            raise ApiError(400, "Bad Request: message caption is too long")
        file_id = self.add_file(data, folder="bot_photos")
        size = {"file_id": file_id, "file_unique_id": self.files[file_id].unique_id, "width": 512, "height": 512,
                "file_size": len(data)}  # fmt: skip
        content: JSON = {"photo": [size]}
        if caption:
            content["caption"] = caption
        message = self._bot_message(chat_id, p, content, group)
        message.photo = data
        return message


def _keyboard(p: Params) -> list[list[JSON]]:
    markup = p.decoded("reply_markup")
    if not markup:
        return []
    rows: list[list[JSON]] = markup.get("inline_keyboard", [])
    for row in rows:
        for button in row:
            data = button.get("callback_data", "")
            if len(data.encode()) > 64:
                raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
            if not button.get("text"):
                raise ApiError(400, "Bad Request: text buttons are unallowed in the inline keyboard")
    return rows


async def _read_params(request: web.Request) -> Params:
    values: dict[str, Any] = dict(request.query)
    if request.content_type == "application/json":
        values.update(await request.json())
    elif request.can_read_body:
        form = await request.post()
        for name, value in form.items():
            values[name] = value.file.read() if isinstance(value, web.FileField) else value
    return Params(values)
