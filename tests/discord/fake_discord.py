"""A fake Discord for the adapter's tests: REST, CDN and gateway on one aiohttp server on 127.0.0.1.

The real discord.py client talks to it over HTTP and a websocket, as it talks to Discord:

- REST under ``/api/v10``: ``GET /gateway/bot``, ``/users/@me``, ``/oauth2/applications/@me``; command
  sync (``PUT /applications/{app}/commands`` and the guild variant); interaction callbacks; webhook
  follow-ups and ``@original`` edits; channel messages and their edits (JSON or multipart with files);
  ``POST /users/@me/channels`` (open a DM); ``GET /guilds/{guild}/members/{user}``. Every JSON body
  goes out with Content-Type exactly ``application/json``, which discord.py insists on. The bot token
  is checked where Discord checks it.
- ``/cdn/attachments/...``: the bytes of files users "uploaded".
- ``/gateway``: HELLO, IDENTIFY → READY + GUILD_CREATE, heartbeats, RESUME refused (a fresh IDENTIFY
  follows), and dispatch of INTERACTION_CREATE and MESSAGE_CREATE; plain JSON text frames, no
  compression (discord.py asks for zlib-stream in the query but reads text frames as they are).

Discord's rules the adapter must live with are enforced: an interaction is acknowledged once, within
3 seconds, or the callback gets 404 Unknown interaction; the first follow-up after a "thinking" defer
replaces the thinking message and keeps its ephemeral flag. Everything the bot sends is recorded per
channel, with timestamps, for the tests to look at.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

from tests.waiting import eventually

API = "/api/v10"
TOKEN = "fake-bot-token.Zm9vYmFy.c2VjcmV0LXRva2VuLXZhbHVl"
#: Discord's limit for answering an interaction.
ANSWER_DEADLINE_S = 3.0
EPHEMERAL = 1 << 6
LOADING = 1 << 7

PERM_VIEW = 1 << 10
PERM_SEND = 1 << 11
PERM_ATTACH = 1 << 15
PERM_HISTORY = 1 << 16
PERM_USE_COMMANDS = 1 << 31
PERM_MANAGE_GUILD = 1 << 5
MEMBER_PERMISSIONS = PERM_VIEW | PERM_SEND | PERM_ATTACH | PERM_HISTORY | PERM_USE_COMMANDS

_ids = itertools.count(1_200_000_000_000_000_000)


def snowflake() -> int:
    return next(_ids)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON body with Content-Type exactly ``application/json`` (no charset), as Discord sends it."""
    return web.Response(
        body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json", **(headers or {})}
    )


def error(status: int, code: int, message: str) -> web.Response:
    return json_response({"code": code, "message": message}, status)


# ------------------------------------------------------------------------------------------ records
@dataclass
class User:
    id: int
    username: str
    #: Manage Server in the fake guild.
    admin: bool = False

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.username,
            "global_name": self.username.title(),
            "discriminator": "0",
            "avatar": None,
            "bot": False,
        }


@dataclass
class Upload:
    """A file a user attached (served from the fake CDN)."""

    id: int
    filename: str
    data: bytes
    content_type: str | None

    def payload(self, base: str) -> dict[str, Any]:
        url = f"{base}/cdn/attachments/{self.id}/{self.filename}"
        data: dict[str, Any] = {
            "id": str(self.id),
            "filename": self.filename,
            "size": len(self.data),
            "url": url,
            "proxy_url": url,
        }
        if self.content_type:
            data["content_type"] = self.content_type
        return data


@dataclass
class SentFile:
    filename: str
    content_type: str | None
    data: bytes


@dataclass
class Message:
    """A message the bot made: in a channel with its token, or as an interaction response/follow-up."""

    id: int
    channel_id: int
    content: str
    components: list[Any]
    files: list[SentFile]
    flags: int
    #: "bot" (bot token), "response", "followup".
    via: str
    guild_id: int | None = None
    interaction: Interaction | None = None
    reference: int | None = None
    deleted: bool = False
    created: float = field(default_factory=time.monotonic)
    #: (monotonic time, content) of every edit.
    edits: list[tuple[float, str]] = field(default_factory=list)
    #: The content it was created with (``content`` is the latest).
    original: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self.original = self.content

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def loading(self) -> bool:
        return bool(self.flags & LOADING)

    def visible_to(self, user: User) -> bool:
        if self.deleted:
            return False
        if not self.ephemeral:
            return True
        return self.interaction is not None and self.interaction.user.id == user.id

    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for row in self.components for c in row.get("components", []) if "custom_id" in c]

    def labels(self) -> dict[str, str]:
        """Button label → custom_id."""
        return {
            c.get("label", ""): c["custom_id"]
            for row in self.components
            for c in row.get("components", [])
            if "custom_id" in c
        }

    def payload(self, fake: FakeDiscord) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "channel_id": str(self.channel_id),
            "author": fake.bot_payload(),
            "content": self.content,
            "timestamp": _now_iso(),
            "edited_timestamp": _now_iso() if self.edits else None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [
                {
                    "id": str(snowflake()),
                    "filename": f.filename,
                    "size": len(f.data),
                    "url": f"{fake.base_url}/cdn/sent/{self.id}/{f.filename}",
                    "proxy_url": f"{fake.base_url}/cdn/sent/{self.id}/{f.filename}",
                    **({"content_type": f.content_type} if f.content_type else {}),
                }
                for f in self.files
            ],
            "embeds": [],
            "pinned": False,
            "type": 19 if self.reference else 0,
            "flags": self.flags,
            "components": self.components,
        }
        if self.guild_id is not None:
            data["guild_id"] = str(self.guild_id)
        if self.via != "bot":
            data["webhook_id"] = str(fake.app_id)
            data["application_id"] = str(fake.app_id)
        if self.reference is not None:
            data["message_reference"] = {"message_id": str(self.reference), "channel_id": str(self.channel_id)}
        return data


@dataclass
class Interaction:
    id: int
    token: str
    type: int
    user: User
    channel_id: int
    guild_id: int | None
    data: dict[str, Any]
    dispatched: float = field(default_factory=time.monotonic)
    callback_type: int | None = None
    callback_at: float | None = None
    callback_data: dict[str, Any] | None = None
    original: Message | None = None
    followups: list[Message] = field(default_factory=list)

    @property
    def answered_in(self) -> float | None:
        return None if self.callback_at is None else self.callback_at - self.dispatched

    def messages(self) -> list[Message]:
        """What the user saw as the answer (the response, then follow-ups), deleted ones left out."""
        found = [self.original] if self.original is not None else []
        return [m for m in [*found, *self.followups] if not m.deleted and not m.loading]

    def texts(self) -> list[str]:
        return [m.content for m in self.messages()]

    @property
    def choices(self) -> list[dict[str, Any]]:
        return list((self.callback_data or {}).get("choices", []))

    @property
    def modal(self) -> dict[str, Any] | None:
        return self.callback_data if self.callback_type == 9 else None


# ------------------------------------------------------------------------------------------- server
class FakeDiscord:
    """One fake guild with two text channels (one age-restricted), users, DMs and the bot."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.app_id = snowflake()
        self.bot_id = self.app_id
        self.guild_id = snowflake()
        self.general = snowflake()
        self.adult = snowflake()
        self.upload_limit = 10 * 1024 * 1024
        #: Seconds the CDN takes to serve an attachment (a slow download makes the bot defer).
        self.cdn_delay = 0.0
        self.users: dict[int, User] = {}
        self.uploads: dict[int, Upload] = {}
        self.dm_channels: dict[int, int] = {}  # user id → channel id
        self.messages: dict[int, list[Message]] = {}
        self.interactions: dict[int, Interaction] = {}
        self.by_token: dict[str, Interaction] = {}
        self.commands: dict[str, list[dict[str, Any]]] = {}
        self.command_puts: list[tuple[str, float]] = []
        self.identifies: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self.unauthorized: list[str] = []
        self.rate_limits: list[tuple[str, str, float]] = []
        self.echoes: list[tuple[str, str, int]] = []
        #: Users who do not take direct messages from the server's members (the bot's DMs are refused).
        self.closed_dms: set[int] = set()
        #: Server channels where the bot may not post (no Send Messages there): its posts get 403 50013.
        self.closed_channels: set[int] = set()
        #: Users who left the server (or were removed): the member lookup answers 404 10007 for them.
        self.left: set[int] = set()
        self.rate_limited: list[tuple[str, float]] = []
        self._ws: web.WebSocketResponse | None = None
        self._seq = 0
        self._ready = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ----------------------------------------------------------------------------- lifecycle
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return self.base_url + API

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/cdn/attachments/{aid}/{name}", self._cdn)
        app.router.add_route("*", API + "/{path:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def ready(self) -> bool:
        """A client is connected, identified and got READY."""
        return self._ready.is_set()

    async def connected(self, wait_s: float = 20.0) -> None:
        """Wait until a client has identified and got READY."""
        await asyncio.wait_for(self._ready.wait(), wait_s)

    def bot_payload(self) -> dict[str, Any]:
        return {"id": str(self.bot_id), "username": "FaceChain", "discriminator": "0", "avatar": None, "bot": True}

    # ------------------------------------------------------------------------------ the world
    def user(self, name: str, *, admin: bool = False) -> User:
        user = User(snowflake(), name, admin)
        self.users[user.id] = user
        return user

    def dm_channel(self, user: User) -> int:
        return self.dm_channels.setdefault(user.id, snowflake())

    def upload(self, filename: str, data: bytes, content_type: str | None) -> Upload:
        item = Upload(snowflake(), filename, data, content_type)
        self.uploads[item.id] = item
        return item

    def channel_messages(self, channel_id: int) -> list[Message]:
        return [m for m in self.messages.get(channel_id, []) if not m.deleted]

    def seen_by(self, user: User, channel_id: int) -> list[Message]:
        """Messages in a channel as ``user`` sees them (others' ephemeral ones and "thinking" left out)."""
        return [m for m in self.messages.get(channel_id, []) if m.visible_to(user) and not m.loading]

    def find(self, user: User, channel_id: int, needle: str) -> Message | None:
        """The latest message visible to ``user`` in the channel whose content contains ``needle``, now or
        before an edit (a progress message may be edited before a poll sees its first text)."""
        for message in reversed(self.seen_by(user, channel_id)):
            shown = [message.content, message.original, *(text for _, text in message.edits)]
            if any(needle in text for text in shown):
                return message
        return None

    async def wait_for(self, predicate: Callable[[], Any], wait_s: float = 20.0, what: str = "") -> Any:
        """Poll until ``predicate()`` is truthy; return its value."""
        return await eventually(predicate, wait_s, what, every=0.02)

    async def wait_message(self, user: User, channel_id: int, needle: str, wait_s: float = 20.0) -> Message:
        found: Message = await self.wait_for(
            lambda: self.find(user, channel_id, needle), wait_s, f"{needle!r} in channel {channel_id}"
        )
        return found

    def rate_limit_next(self, method: str, path_contains: str, retry_after: float) -> None:
        """Answer the next matching request with 429 (discord.py must wait and retry)."""
        self.rate_limits.append((method, path_contains, retry_after))

    def echo_next(self, method: str, path_contains: str, status: int) -> None:
        """Fail the next matching request with ``status``, as an echoing proxy does: the error's message
        quotes the request line, its Authorization header (the bot token) and its body."""
        self.echoes.append((method, path_contains, status))

    # --------------------------------------------------------------------------------- gateway
    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._ready.clear()
        self._ws = ws
        self._seq = 0
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41_250}, "s": None, "t": None}))
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            payload = json.loads(msg.data)
            op = payload.get("op")
            if op == 1:
                await ws.send_str(json.dumps({"op": 11, "d": None, "s": None, "t": None}))
            elif op == 2:
                await self._identify(ws, payload["d"])
            elif op == 6:
                # No resume here: discord.py answers an invalid session with a fresh IDENTIFY.
                await ws.send_str(json.dumps({"op": 9, "d": False, "s": None, "t": None}))
        if self._ws is ws:
            self._ws = None
            self._ready.clear()
        return ws

    async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> None:
        self.identifies.append(data)
        if data.get("token") != self.token:
            await ws.close(code=4004, message=b"Authentication failed.")
            return
        ready = {
            "v": 10,
            "user": {**self.bot_payload(), "verified": True, "mfa_enabled": False, "flags": 0},
            "guilds": [{"id": str(self.guild_id), "unavailable": True}],
            "session_id": f"session-{snowflake()}",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.app_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
        }
        await self._send(ws, "READY", ready)
        await self._send(ws, "GUILD_CREATE", self._guild_payload())
        self._ready.set()

    async def _send(self, ws: web.WebSocketResponse, event: str, data: dict[str, Any]) -> None:
        async with self._send_lock:
            self._seq += 1
            await ws.send_str(json.dumps({"op": 0, "t": event, "s": self._seq, "d": data}))

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None:
            raise AssertionError("no client connected to the fake gateway")
        await self._send(ws, event, data)

    def _channel_payload(self, channel_id: int) -> dict[str, Any]:
        return {
            "id": str(channel_id),
            "type": 0,
            "guild_id": str(self.guild_id),
            "name": "general" if channel_id == self.general else "after-dark",
            "position": 0 if channel_id == self.general else 1,
            "permission_overwrites": [],
            "nsfw": channel_id == self.adult,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
        }

    def _guild_payload(self) -> dict[str, Any]:
        return {
            "id": str(self.guild_id),
            "name": "Portrait Club",
            "icon": None,
            "owner_id": str(snowflake()),
            "roles": [
                {
                    "id": str(self.guild_id),
                    "name": "@everyone",
                    "permissions": str(MEMBER_PERMISSIONS),
                    "position": 0,
                    "color": 0,
                    "hoist": False,
                    "managed": False,
                    "mentionable": False,
                    "flags": 0,
                }
            ],
            "channels": [self._channel_payload(self.general), self._channel_payload(self.adult)],
            "threads": [],
            "members": [],
            "member_count": 3,
            "emojis": [],
            "stickers": [],
            "features": [],
            "unavailable": False,
            "large": False,
            "premium_tier": 0,
            "preferred_locale": "en-US",
            "joined_at": _now_iso(),
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "system_channel_flags": 0,
        }

    # ------------------------------------------------------------------------ user actions
    def _member_payload(self, user: User) -> dict[str, Any]:
        permissions = MEMBER_PERMISSIONS | (PERM_MANAGE_GUILD if user.admin else 0)
        return {
            "user": user.payload(),
            "roles": [],
            "joined_at": _now_iso(),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "permissions": str(permissions),
        }

    async def _interact(
        self, user: User, kind: int, data: dict[str, Any], channel_id: int | None, message: Message | None = None
    ) -> Interaction:
        in_dm = channel_id is None or channel_id in self.dm_channels.values()
        channel = self.dm_channel(user) if channel_id is None else channel_id
        interaction = Interaction(
            snowflake(), f"itoken-{snowflake()}", kind, user, channel, None if in_dm else self.guild_id, data
        )
        payload: dict[str, Any] = {
            "id": str(interaction.id),
            "application_id": str(self.app_id),
            "type": kind,
            "token": interaction.token,
            "version": 1,
            "data": data,
            "channel_id": str(channel),
            "locale": "en-US",
            "app_permissions": str(MEMBER_PERMISSIONS & ~(PERM_SEND if channel in self.closed_channels else 0)),
            "attachment_size_limit": self.upload_limit,
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(self.guild_id)} if not in_dm else {"0": "0"},
        }
        if in_dm:
            payload["user"] = user.payload()
            payload["context"] = 1
            payload["channel"] = {"id": str(channel), "type": 1, "recipients": [user.payload()], "flags": 0}
        else:
            payload["guild_id"] = str(self.guild_id)
            payload["guild"] = {"id": str(self.guild_id), "locale": "en-US", "features": []}
            payload["guild_locale"] = "en-US"
            payload["member"] = self._member_payload(user)
            payload["context"] = 0
            payload["channel"] = self._channel_payload(channel)
        if message is not None:
            payload["message"] = message.payload(self)
        self.interactions[interaction.id] = interaction
        self.by_token[interaction.token] = interaction
        interaction.dispatched = time.monotonic()
        await self.dispatch("INTERACTION_CREATE", payload)
        return interaction

    def _options(
        self, options: dict[str, Any], resolved: dict[str, Any], focused: str | None = None
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for name, value in options.items():
            option: dict[str, Any] = {"name": name}
            if isinstance(value, Upload):
                option.update(type=11, value=str(value.id))
                resolved.setdefault("attachments", {})[str(value.id)] = value.payload(self.base_url)
            elif isinstance(value, bool):
                option.update(type=5, value=value)
            elif isinstance(value, int):
                option.update(type=4, value=value)
            else:
                option.update(type=3, value=str(value))
            if name == focused:
                option["focused"] = True
            out.append(option)
        return out

    def _command_data(
        self, name: str, sub: str | None, options: dict[str, Any], focused: str | None = None
    ) -> dict[str, Any]:
        resolved: dict[str, Any] = {}
        opts = self._options(options, resolved, focused)
        if sub is not None:
            opts = [{"type": 1, "name": sub, "options": opts}]
        known = {c["name"]: c for scope in self.commands.values() for c in scope}
        data: dict[str, Any] = {
            "id": known.get(name, {}).get("id", str(snowflake())),
            "name": name,
            "type": 1,
            "options": opts,
        }
        if resolved:
            data["resolved"] = resolved
        return data

    async def slash(
        self, user: User, name: str, channel: int | None = None, /, *, sub: str | None = None, **options: Any
    ) -> Interaction:
        """``user`` runs ``/name [sub] option:value ...`` in ``channel`` (None: in a DM with the bot)."""
        return await self._interact(user, 2, self._command_data(name, sub, options), channel)

    async def autocomplete(
        self,
        user: User,
        name: str,
        focused: str,
        channel: int | None = None,
        /,
        *,
        sub: str | None = None,
        **options: Any,
    ) -> list[dict[str, Any]]:
        """The choices the bot offers while ``user`` types option ``focused``."""
        data = self._command_data(name, sub, options, focused)
        interaction = await self._interact(user, 4, data, channel)
        await self.wait_for(lambda: interaction.callback_type == 8, 5.0, "autocomplete choices")
        return interaction.choices

    async def press(self, user: User, message: Message, label: str) -> Interaction:
        """``user`` presses the button labelled ``label`` under ``message``."""
        custom_id = message.labels()[label]
        data = {"custom_id": custom_id, "component_type": 2}
        channel = None if message.guild_id is None else message.channel_id
        if message.guild_id is None and message.channel_id != self.dm_channels.get(user.id):
            raise AssertionError("a DM button is pressed by the DM's user")
        return await self._interact(user, 3, data, channel, message)

    async def submit_modal(self, interaction: Interaction, files: list[Upload], *, field: bool = True) -> Interaction:
        """The user fills the modal the bot opened for ``interaction`` with ``files`` and submits it
        (``field=False``: a submission that leaves its file field out, as no client of Discord's sends)."""
        modal = interaction.modal
        assert modal is not None, "the bot answered without a modal"
        upload_ids = [
            row["component"]["custom_id"]
            for row in modal["components"]
            if row.get("type") == 18 and row["component"].get("type") == 19
        ]
        assert upload_ids, f"no file upload component in {modal}"
        data = {
            "custom_id": modal["custom_id"],
            "components": [
                {
                    "type": 18,
                    "id": 1,
                    "component": {
                        "type": 19,
                        "id": 2,
                        "custom_id": upload_ids[0],
                        "values": [str(f.id) for f in files],
                    },
                }
            ]
            if field
            else [],
            "resolved": {"attachments": {str(f.id): f.payload(self.base_url) for f in files}},
        }
        channel = None if interaction.guild_id is None else interaction.channel_id
        return await self._interact(interaction.user, 5, data, channel)

    async def dm(self, user: User, content: str = "", files: Sequence[Upload] = ()) -> None:
        """``user`` sends the bot a DM (MESSAGE_CREATE; only with the DM_MESSAGES intent)."""
        channel = self.dm_channel(user)
        intents = int(self.identifies[-1].get("intents", 0)) if self.identifies else 0
        if not intents & (1 << 12):
            return  # Discord sends nothing the bot did not ask for
        await self.dispatch(
            "MESSAGE_CREATE",
            {
                "id": str(snowflake()),
                "channel_id": str(channel),
                "author": user.payload(),
                "content": content,
                "timestamp": _now_iso(),
                "edited_timestamp": None,
                "tts": False,
                "mention_everyone": False,
                "mentions": [],
                "mention_roles": [],
                "attachments": [f.payload(self.base_url) for f in files],
                "embeds": [],
                "pinned": False,
                "type": 0,
                "flags": 0,
            },
        )

    # -------------------------------------------------------------------------------- REST
    async def _cdn(self, request: web.Request) -> web.Response:
        upload = self.uploads.get(int(request.match_info["aid"]))
        await asyncio.sleep(self.cdn_delay)
        if upload is None:
            return web.Response(status=404, text="not found")
        return web.Response(body=upload.data, content_type=upload.content_type or "application/octet-stream")

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"]
        self.requests.append((request.method, path))
        for index, (method, needle, retry_after) in enumerate(self.rate_limits):
            if method == request.method and needle in path:
                del self.rate_limits[index]
                self.rate_limited.append((path, time.monotonic()))
                headers = {
                    "Via": "1.1 google",
                    "X-RateLimit-Limit": "5",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset-After": str(retry_after),
                    "X-RateLimit-Bucket": "fake-bucket",
                    "Retry-After": str(retry_after),
                }
                body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": False}
                return json_response(body, 429, headers)
        for index, (method, needle, status) in enumerate(self.echoes):
            if method == request.method and needle in path:
                del self.echoes[index]
                body = (await request.read()).decode(errors="replace")[:2000]
                auth = request.headers.get("Authorization", "")
                quoted = f"{request.method} {request.raw_path} Authorization: {auth} body: {body}"
                return error(status, 0, f"{status}: upstream refused the request: {quoted}")
        routes: list[tuple[str, str, Callable[..., Any], bool]] = [
            ("GET", r"/gateway/bot", self._gateway_bot, True),
            ("GET", r"/users/@me", self._me, True),
            ("GET", r"/oauth2/applications/@me", self._application, True),
            ("PUT", r"/applications/(\d+)/commands", self._put_commands, True),
            ("PUT", r"/applications/(\d+)/guilds/(\d+)/commands", self._put_guild_commands, True),
            ("POST", r"/interactions/(\d+)/([^/]+)/callback", self._callback, False),
            ("POST", r"/webhooks/(\d+)/([^/]+)", self._followup, False),
            ("GET", r"/webhooks/(\d+)/([^/]+)/messages/([^/]+)", self._get_webhook_message, False),
            ("PATCH", r"/webhooks/(\d+)/([^/]+)/messages/([^/]+)", self._edit_webhook_message, False),
            ("DELETE", r"/webhooks/(\d+)/([^/]+)/messages/([^/]+)", self._delete_webhook_message, False),
            ("POST", r"/channels/(\d+)/messages", self._post_message, True),
            ("PATCH", r"/channels/(\d+)/messages/(\d+)", self._edit_message, True),
            ("POST", r"/users/@me/channels", self._open_dm, True),
            ("GET", r"/guilds/(\d+)/members/(\d+)", self._get_member, True),
        ]
        for method, pattern, handler, needs_token in routes:
            match = re.fullmatch(pattern, path)
            if match is None or method != request.method:
                continue
            if needs_token and request.headers.get("Authorization") != f"Bot {self.token}":
                self.unauthorized.append(path)
                return error(401, 0, "401: Unauthorized")
            result: web.Response = await handler(request, *match.groups())
            return result
        return error(404, 0, f"404: Not Found ({request.method} {path})")

    async def _body(self, request: web.Request) -> tuple[dict[str, Any], list[SentFile]]:
        if request.content_type.startswith("multipart/"):
            payload: dict[str, Any] = {}
            files: list[SentFile] = []
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if part.name == "payload_json":
                    payload = json.loads(await part.text())  # type: ignore[union-attr]
                else:
                    data = await part.read()  # type: ignore[union-attr]
                    files.append(SentFile(part.filename or "file", part.headers.get("Content-Type"), bytes(data)))
            return payload, files
        if request.can_read_body:
            return await request.json(), []
        return {}, []

    async def _get_member(self, request: web.Request, guild_id: str, user_id: str) -> web.Response:
        user = self.users.get(int(user_id))
        if int(guild_id) != self.guild_id or user is None or user.id in self.left:
            return error(404, 10007, "Unknown Member")
        return json_response(self._member_payload(user))

    async def _gateway_bot(self, request: web.Request) -> web.Response:
        return json_response(
            {
                "url": self.gateway_url,
                "shards": 1,
                "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1},
            }
        )

    async def _me(self, request: web.Request) -> web.Response:
        return json_response({**self.bot_payload(), "verified": True, "mfa_enabled": False, "flags": 0})

    async def _application(self, request: web.Request) -> web.Response:
        return json_response(
            {
                "id": str(self.app_id),
                "name": "FaceChain",
                "icon": None,
                "description": "",
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": {"id": str(snowflake()), "username": "owner", "discriminator": "0", "avatar": None},
                "verify_key": "00",
                "flags": 0,
                "interactions_endpoint_url": None,
                "team": None,
            }
        )

    async def _store_commands(self, scope: str, request: web.Request) -> web.Response:
        payload, _ = await self._body(request)
        assert isinstance(payload, list)
        stored = [
            {**c, "id": str(snowflake()), "application_id": str(self.app_id), "version": str(snowflake())}
            for c in payload
        ]
        self.commands[scope] = stored
        self.command_puts.append((scope, time.monotonic()))
        return json_response(stored)

    async def _put_commands(self, request: web.Request, app_id: str) -> web.Response:
        return await self._store_commands("global", request)

    async def _put_guild_commands(self, request: web.Request, app_id: str, guild_id: str) -> web.Response:
        return await self._store_commands(f"guild:{guild_id}", request)

    def _new_message(
        self,
        channel_id: int,
        body: dict[str, Any],
        files: list[SentFile],
        via: str,
        interaction: Interaction | None = None,
        extra_flags: int = 0,
    ) -> Message:
        guild_id = None if channel_id in self.dm_channels.values() else self.guild_id
        reference = body.get("message_reference") or None
        message = Message(
            id=snowflake(),
            channel_id=channel_id,
            content=body.get("content") or "",
            components=body.get("components") or [],
            files=files,
            flags=int(body.get("flags") or 0) | extra_flags,
            via=via,
            guild_id=guild_id,
            interaction=interaction,
            reference=int(reference["message_id"]) if reference else None,
        )
        self.messages.setdefault(channel_id, []).append(message)
        return message

    def _apply_edit(self, message: Message, body: dict[str, Any], files: list[SentFile]) -> None:
        if "content" in body:
            message.content = body["content"] or ""
        if "components" in body:
            message.components = body["components"] or []
        if files:
            message.files = files
        message.flags &= ~LOADING
        message.edits.append((time.monotonic(), message.content))

    async def _callback(self, request: web.Request, interaction_id: str, token: str) -> web.Response:
        interaction = self.interactions.get(int(interaction_id))
        body, files = await self._body(request)
        if interaction is None or interaction.token != token:
            return error(404, 10062, "Unknown interaction")
        if time.monotonic() - interaction.dispatched > ANSWER_DEADLINE_S:
            return error(404, 10062, "Unknown interaction")
        if interaction.callback_type is not None:
            return error(400, 40060, "Interaction has already been acknowledged.")
        kind = int(body["type"])
        data = body.get("data") or {}
        interaction.callback_type = kind
        interaction.callback_at = time.monotonic()
        interaction.callback_data = data
        message: Message | None = None
        if kind == 4:
            message = self._new_message(interaction.channel_id, data, files, "response", interaction)
        elif kind == 5:
            loading = {"content": "", "flags": int(data.get("flags") or 0)}
            message = self._new_message(interaction.channel_id, loading, [], "response", interaction, LOADING)
        if message is not None:
            interaction.original = message
        result: dict[str, Any] = {
            "interaction": {
                "id": str(interaction.id),
                "type": interaction.type,
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool(message and message.ephemeral),
            },
            "resource": {"type": kind},
        }
        if message is not None:
            result["interaction"]["response_message_id"] = str(message.id)
            result["resource"]["message"] = message.payload(self)
        return json_response(result)

    def _interaction_for(self, app_id: str, token: str) -> Interaction | None:
        interaction = self.by_token.get(token)
        if interaction is None or app_id != str(self.app_id) or interaction.callback_type is None:
            return None
        return interaction

    async def _followup(self, request: web.Request, app_id: str, token: str) -> web.Response:
        interaction = self._interaction_for(app_id, token)
        body, files = await self._body(request)
        if interaction is None:
            return error(404, 10015, "Unknown Webhook")
        original = interaction.original
        if original is not None and original.loading:
            # The first follow-up after a "thinking" defer replaces it, ephemeral or not as the defer was.
            self._apply_edit(original, body, files)
            return json_response(original.payload(self))
        message = self._new_message(interaction.channel_id, body, files, "followup", interaction)
        interaction.followups.append(message)
        return json_response(message.payload(self))

    def _webhook_message(self, interaction: Interaction, message_id: str) -> Message | None:
        if message_id == "@original":
            return interaction.original
        return next((m for m in interaction.followups if str(m.id) == message_id), None)

    async def _get_webhook_message(self, request: web.Request, app_id: str, token: str, mid: str) -> web.Response:
        interaction = self._interaction_for(app_id, token)
        message = self._webhook_message(interaction, mid) if interaction else None
        if message is None or message.deleted:
            return error(404, 10008, "Unknown Message")
        return json_response(message.payload(self))

    async def _edit_webhook_message(self, request: web.Request, app_id: str, token: str, mid: str) -> web.Response:
        interaction = self._interaction_for(app_id, token)
        body, files = await self._body(request)
        message = self._webhook_message(interaction, mid) if interaction else None
        if message is None or message.deleted:
            return error(404, 10008, "Unknown Message")
        self._apply_edit(message, body, files)
        return json_response(message.payload(self))

    async def _delete_webhook_message(self, request: web.Request, app_id: str, token: str, mid: str) -> web.Response:
        interaction = self._interaction_for(app_id, token)
        message = self._webhook_message(interaction, mid) if interaction else None
        if message is None or message.deleted:
            return error(404, 10008, "Unknown Message")
        message.deleted = True
        return web.Response(status=204)

    def _known_channel(self, channel_id: int) -> bool:
        return channel_id in (self.general, self.adult) or channel_id in self.dm_channels.values()

    async def _post_message(self, request: web.Request, channel_id: str) -> web.Response:
        body, files = await self._body(request)
        if not self._known_channel(int(channel_id)):
            return error(404, 10003, "Unknown Channel")
        if any(self.dm_channels.get(user_id) == int(channel_id) for user_id in self.closed_dms):
            return error(403, 50007, "Cannot send messages to this user")
        if int(channel_id) in self.closed_channels:
            return error(403, 50013, "Missing Permissions")
        for sent in files:
            if len(sent.data) > self.upload_limit:
                return error(413, 40005, "Request entity too large")
        if len(files) > 10:
            return error(400, 50035, "Invalid Form Body (more than 10 files)")
        message = self._new_message(int(channel_id), body, files, "bot")
        return json_response(message.payload(self))

    async def _edit_message(self, request: web.Request, channel_id: str, message_id: str) -> web.Response:
        body, files = await self._body(request)
        message = next((m for m in self.messages.get(int(channel_id), []) if m.id == int(message_id)), None)
        if message is None or message.deleted:
            return error(404, 10008, "Unknown Message")
        if message.via != "bot":
            return error(403, 50005, "Cannot edit a message authored by another user")
        self._apply_edit(message, body, files)
        return json_response(message.payload(self))

    async def _open_dm(self, request: web.Request) -> web.Response:
        body, _ = await self._body(request)
        user = self.users.get(int(body["recipient_id"]))
        if user is None:
            return error(400, 50007, "Cannot send messages to this user")
        channel = self.dm_channel(user)
        return json_response(
            {"id": str(channel), "type": 1, "recipients": [user.payload()], "last_message_id": None, "flags": 0}
        )
