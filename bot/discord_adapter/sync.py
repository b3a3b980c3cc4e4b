"""Deliberate slash-command sync: Discord allows 200 command creates a day per guild, so the bot does
not upload its commands on every start. It keeps a fingerprint (SHA-256 of the exact payload) of the
last tree it uploaded, per application and scope, and uploads again only when the tree changed.
``facechain-bot discord-sync`` uploads unconditionally (``--force``) or into one server (``--guild``,
which shows up at once, for trying changes).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import discord
from discord import app_commands

from storage.files import make_private_dirs, write_atomically

log = logging.getLogger("facechain.discord")

#: The file (under the data dir) that remembers what was uploaded.
STATE_FILE = "discord-commands.json"

#: What the bot needs in a channel: see it, post, attach portraits, reply to its progress message
#: (a reply needs Read Message History), and the same in threads.
REQUIRED_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    attach_files=True,
    read_message_history=True,
)


def command_payload(tree: app_commands.CommandTree[Any], guild: discord.abc.Snowflake | None = None) -> list[Any]:
    """What a sync uploads: the tree's commands as Discord JSON, in a stable order."""
    commands = tree.get_commands(guild=guild)
    return sorted((command.to_dict(tree) for command in commands), key=lambda c: (c.get("type", 1), c["name"]))


def fingerprint(payload: list[Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _scope(application_id: int, guild_id: int | None) -> str:
    return f"{application_id}:{'global' if guild_id is None else f'guild:{guild_id}'}"


def _load(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _save(path: Path, state: dict[str, str]) -> None:
    make_private_dirs(path.parent)
    text = json.dumps(state, indent=2, sort_keys=True).encode()
    write_atomically(path, lambda f: f.write(text), temp_dir=path.parent, temp_prefix=f".{path.name}-")


async def sync_commands(
    tree: app_commands.CommandTree[Any],
    state_file: Path,
    *,
    guild_id: int | None = None,
    force: bool = False,
) -> bool:
    """Upload the tree if it differs from the last upload recorded in ``state_file`` (or if ``force``).

    Returns True when an upload happened.
    """
    application_id = tree.client.application_id
    if application_id is None:
        raise RuntimeError("the client must be logged in before commands are synced")
    guild = discord.Object(guild_id) if guild_id is not None else None
    digest = fingerprint(command_payload(tree, guild))
    scope = _scope(application_id, guild_id)
    state = _load(state_file)
    if not force and state.get(scope) == digest:
        log.info("slash commands unchanged (%s); not synced", scope)
        return False
    synced = await tree.sync(guild=guild)
    state[scope] = digest
    _save(state_file, state)
    log.info("synced %d slash commands (%s)", len(synced), scope)
    return True


def invite_url(application_id: int) -> str:
    """The link that adds the bot to a server with the permissions it needs and its slash commands."""
    return discord.utils.oauth_url(
        application_id, permissions=REQUIRED_PERMISSIONS, scopes=("bot", "applications.commands")
    )
