"""The adapter's small parts on their own: edit throttling, fitting portraits under the upload limit,
typed DM commands, stored progress-message ids, message splitting, the command fingerprint."""

from __future__ import annotations

import ast
import inspect
import io
import re
from pathlib import Path

import pytest
from discord import app_commands
from PIL import Image

from bot.config import BotSettings
from bot.core import catalogue, texts
from bot.core.events import Command
from bot.discord_adapter import FacechainClient
from bot.discord_adapter.media import CannotFit, fit_upload
from bot.discord_adapter.sender import MAX_TEXT, MessageRef, discord_idiom, split_text
from bot.discord_adapter.sync import command_payload, fingerprint, invite_url
from bot.discord_adapter.translate import command_from_text, direct_chat_id, dm_user_id
from tests.discord.fake_discord import TOKEN
from tests.discord.harness import noisy_png


def test_a_portrait_under_the_limit_is_sent_as_it_is() -> None:
    data = noisy_png(64, 64)
    upload = fit_upload(data, "portrait_0.png", len(data))
    assert (upload.filename, upload.data) == ("portrait_0.png", data)


def test_a_png_over_the_limit_becomes_a_jpeg_that_fits() -> None:
    data = noisy_png(300, 300)
    upload = fit_upload(data, "portrait_0.png", 60_000)
    assert upload.filename == "portrait_0.jpg"
    assert len(upload.data) <= 60_000 and upload.data[:3] == b"\xff\xd8\xff"
    with Image.open(io.BytesIO(upload.data)) as image:
        assert min(image.size) >= 64


def test_what_cannot_fit_is_refused() -> None:
    with pytest.raises(CannotFit):
        fit_upload(noisy_png(300, 300), "portrait_0.png", 500)
    with pytest.raises(CannotFit):
        fit_upload(b"not an image at all" * 100, "portrait_0.png", 100)


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("/done", Command("done")),
        ("  /Generate water color 2 ", Command("generate", ("water", "color", "2"), "water color 2")),
        ("/facechain-admin styles", Command("facechain-admin", ("styles",), "styles")),
        ("hello /done", None),
        ("/", None),
        ("/ done", None),
        ("/???", None),
    ],
)
def test_a_command_typed_into_a_dm(typed: str, expected: Command | None) -> None:
    assert command_from_text(typed) == expected


def test_stored_progress_message_ids() -> None:
    ref = MessageRef(123, 456)
    assert MessageRef.parse(str(ref)) == ref
    assert MessageRef.parse("456", channel_id=123) == ref
    assert MessageRef.parse("456") is None
    assert MessageRef.parse("dm:1/2") is None
    assert MessageRef.parse(None) is None


def test_dm_chat_ids() -> None:
    assert dm_user_id(direct_chat_id(42)) == 42
    assert dm_user_id("42") is None
    assert dm_user_id("dm:x") is None


def test_long_texts_are_split_at_line_breaks() -> None:
    text = "\n".join(f"line {i} " + "x" * 90 for i in range(60))
    pieces = split_text(text)
    assert len(pieces) > 1 and all(len(p) <= MAX_TEXT for p in pieces)
    assert "\n".join(pieces) == text
    assert split_text("y" * 4500) == ["y" * 2000, "y" * 2000, "y" * 500]


async def test_the_command_fingerprint_changes_only_with_the_commands(tmp_path: Path) -> None:
    def payload(max_count: int) -> str:
        settings = BotSettings(_env_file=None, data_dir=tmp_path, discord_token=TOKEN, max_count=max_count)  # type: ignore[call-arg]
        return fingerprint(command_payload(FacechainClient(settings, None).tree))

    assert payload(4) == payload(4)
    assert payload(4) != payload(6)


def test_the_invite_link_asks_for_the_bot_and_its_commands() -> None:
    url = invite_url(1234)
    assert "client_id=1234" in url and "scope=bot+applications.commands" in url
    assert "permissions=" in url


def test_the_core_admin_command_is_shown_as_the_discord_command_group() -> None:
    [text] = split_text("Usage: /admin enable <style>; see /admin styles. Not /administer, not a/admin.")
    assert text == "Usage: /facechain-admin enable <style>; see /facechain-admin styles. Not /administer, not a/admin."
    [text] = split_text("Add one with /admin addstyle <name>, or /admin removestyle it. /admin is here.")
    assert text == "Add one with /facechain-admin add <name>, or /facechain-admin remove it. /facechain-admin is here."


def test_a_community_is_a_server_on_discord_but_the_quota_scope_keeps_its_name() -> None:
    assert discord_idiom(texts.quota_community(3)).startswith("This server has used its 3 portrait runs")
    assert discord_idiom(texts.quota_set("group", 3, 20)) == "Daily limit for the whole server: 3 portrait runs."
    assert "<user|group>" in discord_idiom(texts.admin_usage_for("quota")), "the option's value is still group"


def test_every_admin_command_the_texts_name_is_one_discord_has(tmp_path: Path) -> None:
    """What a Discord admin reads in any text (its literals, and the usage lines the catalogue makes)
    names subcommands of the real /facechain-admin group."""
    settings = BotSettings(_env_file=None, data_dir=tmp_path, discord_token=TOKEN)  # type: ignore[call-arg]
    [group] = [c for c in FacechainClient(settings, None).tree.get_commands() if c.name == catalogue.ADMIN.slash_name]
    assert isinstance(group, app_commands.Group)
    on_discord = {c.name for c in group.commands}
    any_name = on_discord | {c.name for c in catalogue.ADMIN_COMMANDS}

    literals = [n.value for n in ast.walk(ast.parse(inspect.getsource(texts))) if isinstance(n, ast.Constant)]
    made = [texts.admin_usage(), texts.help_text(admin_here=True)]
    made += [texts.admin_usage_for(c.name) for c in catalogue.ADMIN_COMMANDS]
    named = [
        (sub, text)
        for text in [*literals, *made]
        if isinstance(text, str)
        for sub in re.findall(rf"/{catalogue.ADMIN.slash_name} ([\w-]+)", discord_idiom(text))
        if sub in any_name
    ]
    assert [(sub, text) for sub, text in named if sub not in on_discord] == []
    assert {sub for sub, _ in named} == on_discord, "the usage lines name every subcommand"
