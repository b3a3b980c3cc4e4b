"""The adapter over real HTTP and websocket against the fake Discord, with the real service stack and
an arq GPU worker whose stages are scripted (these tests are about the chat side)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import discord
import pytest

from bot.app import configured_adapters, run_bot
from bot.core import catalogue, texts
from bot.core.replies import Button, Photos
from bot.discord_adapter import FacechainClient, intents
from bot.discord_adapter.app import run_sync_command
from bot.discord_adapter.sender import discord_idiom
from pipeline.jobs import ErrorCode
from storage.blobs import LocalBlobStore
from tests.discord.fake_discord import ANSWER_DEADLINE_S, TOKEN, FakeDiscord, Interaction, Message, User
from tests.discord.harness import Stack, bot_settings, jpeg, scripted_stack
from tests.style_files import write_style_with_preview


def _answered_in_time(fake: FakeDiscord) -> None:
    late = [
        (i.type, i.answered_in) for i in fake.interactions.values() if not (i.answered_in or 99) < ANSWER_DEADLINE_S
    ]
    assert not late, f"interactions answered late or never: {late}"


async def _reply(fake: FakeDiscord, interaction: Interaction, wait_s: float = 5.0) -> Message:
    message: Message = await fake.wait_for(lambda: next(iter(interaction.messages()), None), wait_s, "a reply")
    return message


async def _trained(stack: Stack, user: User, seed: int = 0) -> None:
    uploads = [stack.fake.upload(f"p{i}.jpg", jpeg(seed * 10 + i), "image/jpeg") for i in range(3)]
    await stack.train_in_dm(user, uploads)


async def _trained_user(stack: Stack, name: str) -> User:
    """A new member of the server, with a face model."""
    user = stack.fake.user(name)
    await _trained(stack, user)
    return user


async def test_an_upload_that_is_not_an_image_is_refused_and_nothing_is_trained(scripted: Stack) -> None:
    fake = scripted.fake
    ann = fake.user("ann")
    dm = fake.dm_channel(ann)
    notes = fake.upload("notes.txt", b"just some text", "text/plain")
    fake_jpeg = fake.upload("holiday.jpg", b"\x00definitely not a JPEG" * 20, "image/jpeg")
    await fake.dm(ann, files=[notes, fake_jpeg])

    refused = await fake.wait_message(ann, dm, "I can't use this file")
    assert "Photo 1 (notes.txt): not a JPEG, PNG or WebP image" in refused.content
    unreadable = await fake.wait_message(ann, dm, "No new photos saved")
    assert "not an image I can read" in unreadable.content

    done = await fake.slash(ann, "done")
    answer = await _reply(fake, done)
    assert answer.content == texts.need_more_photos(0, 3)
    assert scripted.runner.calls == []
    assert not [m for m in fake.channel_messages(dm) if m.files], "no file is ever posted back"
    _answered_in_time(fake)


async def test_an_admin_enables_a_style_then_a_member_uses_it(scripted: Stack) -> None:
    fake = scripted.fake
    admin = fake.user("olga", admin=True)
    member = await _trained_user(scripted, "mia")

    before = await fake.autocomplete(member, "generate", "style", fake.general, style="super")
    assert before == [], "superhero is off by default"
    offered = await fake.autocomplete(admin, "facechain-admin", "style", fake.general, sub="enable", style="super")
    assert [c["value"] for c in offered] == ["superhero"]

    enable = await fake.slash(admin, "facechain-admin", fake.general, sub="enable", style="superhero")
    confirmation = await _reply(fake, enable)
    assert confirmation.content == texts.style_switched("superhero", True)
    assert confirmation.ephemeral and not confirmation.visible_to(member)

    after = await fake.autocomplete(member, "generate", "style", fake.general, style="super")
    assert [c["value"] for c in after] == ["superhero"]
    _, posted = await scripted.generate_in(member, fake.general, "superhero", 3)
    assert len(posted.files) == 3
    assert not posted.ephemeral, "results go to the channel where they were asked"
    _answered_in_time(fake)


async def test_a_member_without_manage_server_is_refused(scripted: Stack) -> None:
    fake = scripted.fake
    member = fake.user("max")
    attempt = await fake.slash(member, "facechain-admin", fake.general, sub="enable", style="superhero")
    refusal = await _reply(fake, attempt)
    assert refusal.content == discord_idiom(texts.admin_only())
    assert "/facechain-admin" in refusal.content
    assert refusal.ephemeral, "only the member sees the refusal"
    styles = await fake.slash(member, "styles", fake.general)
    listing = await _reply(fake, styles)
    assert "superhero" not in listing.content

    # The menu is hidden from members (default_permissions) and offered in servers only.
    [admin_group] = [c for c in fake.commands["global"] if c["name"] == "facechain-admin"]
    assert int(admin_group["default_member_permissions"]) == 1 << 5
    assert admin_group["contexts"] == [0]
    _answered_in_time(fake)


async def test_a_style_name_of_several_words_is_refused_and_nothing_is_stored(scripted: Stack) -> None:
    fake = scripted.fake
    admin = fake.user("olga", admin=True)
    add = await fake.slash(
        admin, "facechain-admin", fake.general, sub="add", name="Film Noir", prompt="black and white photo"
    )
    refusal = await _reply(fake, add)
    assert refusal.content == discord_idiom(texts.style_bad_name()), "the name's rules, as for any bad name"
    assert refusal.ephemeral
    listing = await _reply(fake, await fake.slash(admin, "facechain-admin", fake.general, sub="styles"))
    assert "added here" not in listing.content, "no style was stored"
    _answered_in_time(fake)


async def test_remove_offers_only_the_styles_added_here(scripted: Stack) -> None:
    fake = scripted.fake
    admin = fake.user("olga", admin=True)
    none_yet = await fake.autocomplete(admin, "facechain-admin", "name", fake.general, sub="remove", name="")
    assert none_yet == [], "built-in styles can't be removed: none is offered"
    add = await fake.slash(admin, "facechain-admin", fake.general, sub="add", name="film_noir", prompt="noir photo")
    assert (await _reply(fake, add)).content == texts.style_added("film_noir")

    offered = await fake.autocomplete(admin, "facechain-admin", "name", fake.general, sub="remove", name="")
    assert [c["value"] for c in offered] == ["film_noir"]
    switchable = await fake.autocomplete(admin, "facechain-admin", "style", fake.general, sub="disable", style="")
    assert {"watercolor", "film_noir"} <= {c["value"] for c in switchable}, "built-in ones can be switched off"


async def test_a_button_pressed_after_a_restart_still_works(scripted: Stack) -> None:
    fake = scripted.fake
    fake.upload_limit = 120_000
    scripted.runner.portrait_format = "png"  # noise PNGs of ~200 kB: over this channel's limit
    kim = await _trained_user(scripted, "kim")
    _, posted = await scripted.generate_in(kim, fake.general, "watercolor", 2)
    assert [f.filename for f in posted.files] == ["portrait_0.jpg", "portrait_1.jpg"], "re-encoded to JPEG"
    assert all(len(f.data) <= fake.upload_limit and f.data[:3] == b"\xff\xd8\xff" for f in posted.files)
    syncs = len(fake.command_puts)

    await scripted.stop_bot()
    await scripted.start_bot()
    assert len(fake.command_puts) == syncs, "unchanged commands are not uploaded again"

    before = {m.id for m in fake.channel_messages(fake.general)}
    pressed = await fake.press(kim, posted, texts.more_label())
    more = await fake.wait_for(
        lambda: next(
            (m for m in fake.channel_messages(fake.general) if m.id not in before and m.files),
            None,
        ),
        10.0,
        "more portraits",
    )
    assert "watercolor" in more.content
    assert pressed.callback_type == 6, "the press was acknowledged silently; the channel shows the progress"
    _answered_in_time(fake)


async def test_photos_chosen_in_the_upload_window_arrive_after_a_restart(scripted: Stack) -> None:
    """The window stays open on the member's screen as long as they like; the bot that opened it may be
    gone (a restart, or well past 15 minutes) when they submit it."""
    fake = scripted.fake
    uma, ivo = fake.user("uma"), fake.user("ivo")
    windows = [await fake.slash(uma, "train"), await fake.slash(ivo, "train")]
    await fake.wait_for(lambda: all(w.modal for w in windows), 5.0, "the upload windows")

    await scripted.stop_bot()
    await scripted.start_bot()

    for seed, window in enumerate(windows):
        photos = [fake.upload(f"p{i}.jpg", jpeg(seed * 10 + i), "image/jpeg") for i in range(3)]
        submitted = await fake.submit_modal(window, photos)
        await fake.wait_for(lambda s=submitted: any("Got 3 photos" in t for t in s.texts()), 10.0, "photos saved")
    for user in (uma, ivo):
        status = await _reply(fake, await fake.slash(user, "status"))
        assert "Photo set: 3 of 10" in status.content, "each member's own three photos"
    _answered_in_time(fake)


async def test_train_while_a_model_trains_says_so_instead_of_opening_the_upload_window(scripted: Stack) -> None:
    fake = scripted.fake
    ann = fake.user("ann")
    await scripted.stop_worker()  # the training stays queued
    await scripted.ask_to_train_in_dm(ann, [fake.upload(f"p{i}.jpg", jpeg(i), "image/jpeg") for i in range(3)])
    await fake.wait_message(ann, fake.dm_channel(ann), "Training queued")

    again = await fake.slash(ann, "train")
    answer = await _reply(fake, again)
    assert answer.content == texts.training_in_progress() and again.modal is None, "no window for refused photos"
    _answered_in_time(fake)


async def test_an_upload_window_never_hands_on_photos_of_another_member(scripted: Stack) -> None:
    """One upload window serves every member: a submission without its file field offers nothing, not
    the files the previous member sent."""
    fake = scripted.fake
    ivo, uma = fake.user("ivo"), fake.user("uma")
    windows = [await fake.slash(ivo, "train"), await fake.slash(uma, "train")]
    await fake.wait_for(lambda: all(w.modal for w in windows), 5.0, "the upload windows")
    photos = [fake.upload(f"p{i}.jpg", jpeg(i), "image/jpeg") for i in range(3)]
    sent = await fake.submit_modal(windows[0], photos)
    await fake.wait_for(lambda: any("Got 3 photos" in t for t in sent.texts()), 10.0, "ivo's photos saved")

    empty = await fake.submit_modal(windows[1], [], field=False)
    answer = await _reply(fake, empty)
    assert answer.content == texts.train_tips(3, 10) and len(empty.texts()) == 1
    status = await _reply(fake, await fake.slash(uma, "status"))
    assert "Photo set: 0 of 10" in status.content


async def test_results_go_to_dms_when_the_server_says_so(scripted: Stack) -> None:
    fake = scripted.fake
    admin = fake.user("ada", admin=True)
    lea = await _trained_user(scripted, "lea")
    switched = await fake.slash(admin, "facechain-admin", fake.general, sub="results", where="direct")
    await _reply(fake, switched)

    await fake.slash(lea, "generate", fake.general, style="watercolor")
    dm = fake.dm_channel(lea)
    posted = await fake.wait_for(lambda: next((m for m in fake.channel_messages(dm) if m.files), None), 10.0, "DM")
    assert "watercolor" in posted.content
    assert not [m for m in fake.channel_messages(fake.general) if m.files], "nothing posted in the server"
    progress = await fake.wait_message(lea, fake.general, texts.generate_done_edit())
    assert progress.via == "bot", "progress is edited in the channel where it was asked"


async def test_buttons_under_portraits_sent_to_dms_keep_the_servers_styles_while_a_member(scripted: Stack) -> None:
    fake = scripted.fake
    admin = fake.user("ada", admin=True)
    lea = await _trained_user(scripted, "lea")
    await _reply(fake, await fake.slash(admin, "facechain-admin", fake.general, sub="results", where="direct"))
    add = await fake.slash(admin, "facechain-admin", fake.general, sub="add", name="film_noir", prompt="noir photo")
    assert (await _reply(fake, add)).content == texts.style_added("film_noir")
    styles: list[str] = []
    original = scripted.runner.generate

    def spy(request, control):  # type: ignore[no-untyped-def]
        styles.append(request.style.prompt)
        return original(request, control)

    scripted.runner.generate = spy  # type: ignore[method-assign]
    await fake.slash(lea, "generate", fake.general, style="film_noir", count=1)
    dm = fake.dm_channel(lea)

    def portraits() -> list[Message]:
        return [m for m in fake.channel_messages(dm) if m.files]

    first = await fake.wait_for(lambda: next(iter(portraits()), None), 10.0, "portraits in the DM")
    await fake.press(lea, first, texts.more_label())
    making = await fake.wait_message(lea, dm, "portraits in film_noir")
    assert not making.ephemeral
    await fake.wait_for(lambda: len(portraits()) == 2, 20.0, "more portraits in the DM")
    assert styles == ["noir photo", "noir photo"], "the server's own style, from its member's DM"

    fake.left.add(lea.id)
    await fake.press(lea, first, texts.more_label())
    await fake.wait_message(lea, dm, 'I don\'t know the style "film_noir"')  # out of the server, out of its styles
    assert len(styles) == 2
    _answered_in_time(fake)


async def test_results_for_a_member_with_closed_dms_are_posted_where_they_asked(scripted: Stack) -> None:
    fake = scripted.fake
    admin = fake.user("ada", admin=True)
    lea = await _trained_user(scripted, "lea")
    await _reply(fake, await fake.slash(admin, "facechain-admin", fake.general, sub="results", where="direct"))
    fake.closed_dms.add(lea.id)

    await fake.slash(lea, "generate", fake.general, style="watercolor")
    note = await fake.wait_message(lea, fake.general, "couldn't send your portraits to your private chat")
    assert note.content.startswith("Lea, I couldn't"), "named by the display name the server shows"
    posted = await fake.wait_for(
        lambda: next((m for m in fake.channel_messages(fake.general) if m.files), None), 10.0, "portraits"
    )
    assert "watercolor" in posted.content and not posted.ephemeral
    assert not [m for m in fake.channel_messages(fake.dm_channel(lea)) if m.files]


async def test_portraits_refused_by_a_discord_server_error_are_posted_when_it_answers_again(scripted: Stack) -> None:
    fake = scripted.fake
    lea = await _trained_user(scripted, "lea")
    await scripted.stop_worker()
    await fake.slash(lea, "generate", fake.general, style="watercolor")
    await fake.wait_message(lea, fake.general, "Making")
    # The next post to the channel is the portraits: Discord answers it 503 (discord.py does not retry that).
    fake.echo_next("POST", f"/channels/{fake.general}/messages", 503)
    await scripted.start_worker()
    posted = await fake.wait_for(
        lambda: [m for m in fake.channel_messages(fake.general) if m.files], 20.0, "portraits after the retry"
    )
    assert len(posted) == 1 and "watercolor" in posted[0].content, "posted once, by the outcome's next try"
    assert not fake.echoes, "the 503 was answered"


async def test_members_asking_at_once_cannot_pass_the_servers_daily_limit(scripted: Stack) -> None:
    fake = scripted.fake
    admin = fake.user("olga", admin=True)
    members = [await _trained_user(scripted, f"m{i}") for i in range(4)]
    await _reply(fake, await fake.slash(admin, "facechain-admin", fake.general, sub="quota", scope="group", limit="1"))
    await scripted.stop_worker()  # the runs stay queued: each counts against the limit while it waits

    await asyncio.gather(*(fake.slash(m, "generate", fake.general, style="watercolor", count=1) for m in members))
    refused = discord_idiom(texts.quota_community(1))
    await fake.wait_for(
        lambda: sum(1 for m in members if fake.find(m, fake.general, refused)) == 3, 15.0, "three members refused"
    )
    making = [m for m in fake.channel_messages(fake.general) if m.content.startswith("Making")]
    assert len(making) == 1, [m.content for m in making]


async def test_nsfw_is_honoured_only_in_age_restricted_channels(scripted: Stack) -> None:
    fake = scripted.fake
    admin = fake.user("nora", admin=True)
    await _trained(scripted, admin)
    switched = await fake.slash(admin, "facechain-admin", fake.general, sub="nsfw", value="on")
    await _reply(fake, switched)
    requests: list[bool] = []
    original = scripted.runner.generate

    def spy(request, control):  # type: ignore[no-untyped-def]
        requests.append(request.allow_nsfw)
        return original(request, control)

    scripted.runner.generate = spy  # type: ignore[method-assign]
    await scripted.generate_in(admin, fake.general, "watercolor", 1)
    await scripted.generate_in(admin, fake.adult, "watercolor", 1)
    assert requests == [False, True]


async def test_forget_asks_with_buttons_and_deletes_after_yes(scripted: Stack) -> None:
    fake = scripted.fake
    zoe = await _trained_user(scripted, "zoe")
    forget = await fake.slash(zoe, "forget", fake.general)
    question = await _reply(fake, forget)
    assert question.ephemeral
    pressed = await fake.press(zoe, question, texts.forget_yes_label())
    gone = await _reply(fake, pressed)
    assert gone.content == texts.forgotten()
    status = await fake.slash(zoe, "generate", fake.general, style="watercolor")
    assert (await _reply(fake, status)).content == texts.no_model()


async def test_fifty_users_at_once(scripted: Stack) -> None:
    fake = scripted.fake
    # Five GPUs' worth of workers: each serves one job at a time, as in production.
    await scripted.start_worker(copies=4)
    users = [fake.user(f"user{i}") for i in range(50)]

    await asyncio.gather(*(_trained(scripted, user, seed=i) for i, user in enumerate(users)))
    asked = await asyncio.gather(*(fake.slash(u, "generate", fake.general, style="oil_painting") for u in users))

    def portraits() -> list[Message]:
        return [m for m in fake.channel_messages(fake.general) if m.files]

    await fake.wait_for(lambda: len(portraits()) == 50, 60.0, "50 portrait messages")
    progress = {m.id: m for m in fake.channel_messages(fake.general) if m.via == "bot" and not m.files}
    assert len(progress) == 50
    assert {m.reference for m in portraits()} == set(progress), "every user's portraits answer their progress"
    assert all(m.content == texts.generate_done_edit() for m in progress.values())
    for user in users:
        dm = fake.dm_channel(user)
        assert [m.content for m in fake.seen_by(user, dm)].count(texts.train_done_edit()) == 1
    assert len(asked) == 50
    _answered_in_time(fake)


async def test_discord_rate_limits_are_waited_out(scripted: Stack) -> None:
    fake = scripted.fake
    rae = fake.user("rae")
    fake.rate_limit_next("POST", "/channels/", retry_after=0.4)
    asked = time.monotonic()
    await fake.dm(rae, content="hello")
    answer = await fake.wait_message(rae, fake.dm_channel(rae), texts.idle_hint(has_model=False))
    assert len(fake.rate_limited) == 1
    assert answer.created - asked >= 0.4, "discord.py waited for the bucket to reset, then sent"


async def test_the_bot_asks_for_no_privileged_intent_and_reads_dm_commands(scripted: Stack) -> None:
    fake = scripted.fake
    assert fake.identifies[-1]["intents"] == intents().value == (1 << 0) | (1 << 12)
    tom = fake.user("tom")
    await fake.dm(tom, content="/status")
    await fake.wait_message(tom, fake.dm_channel(tom), "Face model:")


async def test_photos_with_done_typed_beside_them_are_saved_then_done_asks_who_it_is(scripted: Stack) -> None:
    fake = scripted.fake
    ann = fake.user("ann")
    dm = fake.dm_channel(ann)
    await fake.dm(ann, content="/train")
    await fake.wait_message(ann, dm, "Send me")
    await fake.dm(ann, content="/done", files=[fake.upload(f"p{i}.jpg", jpeg(i), "image/jpeg") for i in range(3)])
    await fake.wait_message(ann, dm, "Got 3 photos")
    question = await fake.wait_message(ann, dm, "Who is in these photos?")
    assert question.components, "the subject buttons: /done ran after the photos were counted"


async def test_a_sticker_in_a_dm_gets_a_hint(scripted: Stack) -> None:
    fake = scripted.fake
    una = fake.user("una")
    await fake.dm(una, content="")  # a sticker: no text, no attachment
    await fake.wait_message(una, fake.dm_channel(una), texts.idle_hint(has_model=False))


async def test_a_failure_inside_the_bot_is_answered_not_left_to_time_out(scripted: Stack) -> None:
    fake = scripted.fake
    with sqlite3.connect(scripted.settings.database_path) as broken:
        broken.execute("DROP TABLE conversations")  # every event now fails to read the user's state
    una = fake.user("una")
    asked = await fake.slash(una, "status", fake.general)
    assert (await _reply(fake, asked)).content == texts.error_reason(ErrorCode.INTERNAL)
    await fake.dm(una, content="hello")
    await fake.wait_message(una, fake.dm_channel(una), texts.error_reason(ErrorCode.INTERNAL))
    _answered_in_time(fake)


async def test_the_configured_endpoints_leave_discord_py_untouched(scripted: Stack) -> None:
    """The fake's addresses are this client's own: discord.py's class attributes still name Discord,
    so another client in the process would reach Discord itself."""
    fake = scripted.fake
    member = fake.user("ines")
    await _reply(fake, await fake.slash(member, "status", fake.general))  # an interaction response reached the fake
    assert fake.identifies, "the gateway connection reached the fake"
    assert discord.http.Route.BASE == "https://discord.com/api/v10"
    assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == "wss://gateway.discord.gg/"


async def test_an_admin_browsing_styles_sees_their_pictures(fake: FakeDiscord, tmp_path: Path, redis_url: str) -> None:
    write_style_with_preview(tmp_path / "styles", "noir_film", (20, 20, 20))
    stack = scripted_stack(fake, bot_settings(fake, tmp_path, redis_url, styles_dir=tmp_path / "styles"))
    await stack.start_bot()
    try:
        admin, member = fake.user("olga", admin=True), fake.user("mo")
        asked = await fake.slash(admin, "facechain-admin", fake.general, sub="styles")
        listing = await _reply(fake, asked)
        assert "noir_film: on" in listing.content and listing.ephemeral
        posted = await fake.wait_for(lambda: next((m for m in asked.messages() if m.files), None), 10.0, "pictures")
        assert posted.content == texts.style_previews(["noir_film"])
        assert [f.filename for f in posted.files] == ["noir_film.jpg"], "the file is named after its style"
        assert b"SecretCam" not in posted.files[0].data
        assert posted.ephemeral and not posted.visible_to(member), "an admin's answer stays private, pictures too"
        assert not [m for m in fake.seen_by(member, fake.general) if m.files]

        # A member's /styles answers the channel: its pictures are for everyone there.
        await fake.slash(member, "styles", fake.general)
        public = await fake.wait_for(
            lambda: next((m for m in fake.seen_by(member, fake.general) if m.files), None), 10.0, "the pictures"
        )
        assert public.content == texts.style_previews(["noir_film"]) and not public.ephemeral
    finally:
        await stack.close()


async def test_the_token_never_reaches_the_logs(
    fake: FakeDiscord, scripted: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await scripted.stop_bot()
    await scripted.start_bot()
    user = await _trained_user(scripted, "lou")
    await scripted.generate_in(user, fake.general, "watercolor", 1)
    assert caplog.records
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "")
        assert TOKEN not in text, f"token in a log record of {record.name}"
        assert TOKEN.split(".")[0] not in text


async def test_discord_sync_uploads_the_commands_and_prints_the_invite(
    scripted: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = scripted.fake
    before = len(fake.command_puts)
    assert await run_sync_command(scripted.settings, force=True) == 0
    assert await run_sync_command(scripted.settings, force=False) == 0
    assert await run_sync_command(scripted.settings, force=False, guild_id=fake.guild_id) == 0
    scopes = [scope for scope, _ in fake.command_puts[before:]]
    assert scopes == ["global", f"guild:{fake.guild_id}"], "forced, then unchanged, then a new scope"
    out = capsys.readouterr().out
    assert f"client_id={fake.app_id}" in out and "applications.commands" in out
    # What Discord received is the catalogue: names, descriptions, options and the admin group's subcommands.
    assert [_shape(c) for c in fake.commands["global"]] == [
        *(_spec_shape(c) for c in catalogue.COMMANDS),
        (catalogue.ADMIN.slash_name, catalogue.ADMIN.help, [_spec_shape(c) for c in catalogue.ADMIN_COMMANDS]),
    ]


def _shape(command: dict[str, Any]) -> tuple[str, str, list[Any]]:
    """A synced command (or subcommand, or option) as (name, description, its options)."""
    return command["name"], command["description"], [_shape(o) for o in command.get("options", [])]


def _spec_shape(spec: catalogue.CommandSpec) -> tuple[str, str, list[Any]]:
    return spec.slash_name, spec.help, [(a.name, a.help, []) for a in spec.arguments]


async def test_the_bot_process_runs_the_discord_adapter(fake: FakeDiscord, tmp_path: Path, redis_url: str) -> None:
    settings = bot_settings(fake, tmp_path, redis_url)
    assert list(configured_adapters(settings)) == ["discord"]
    bot = asyncio.create_task(run_bot(settings))
    try:
        await fake.connected()
        ivy = fake.user("ivy")
        start = await fake.slash(ivy, "start", fake.general)
        welcome = await _reply(fake, start)
        assert "selfies" in welcome.content and not welcome.ephemeral
    finally:
        bot.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await bot


async def test_a_run_in_flight_across_a_restart_finishes_in_its_progress_message(scripted: Stack) -> None:
    fake = scripted.fake
    pat = await _trained_user(scripted, "pat")
    await scripted.stop_worker()  # the GPUs are busy elsewhere: the run waits in the queue
    await fake.slash(pat, "generate", fake.general, style="cyberpunk", count=1)
    queued = await fake.wait_message(pat, fake.general, "Making 1 portrait in cyberpunk")

    await scripted.stop_bot()
    await scripted.start_bot()
    await scripted.start_worker()

    posted = await fake.wait_for(
        lambda: next((m for m in fake.channel_messages(fake.general) if m.files), None), 10.0, "portraits"
    )
    assert posted.reference == queued.id
    await fake.wait_for(lambda: queued.content == texts.generate_done_edit(), 5.0, "the old message edited")


async def test_more_than_ten_portraits_go_out_in_messages_of_ten(
    fake: FakeDiscord, tmp_path: Path, redis_url: str
) -> None:
    settings = bot_settings(fake, tmp_path, redis_url)
    blobs = LocalBlobStore(settings.blob_dir)
    keys = []
    for i in range(12):
        keys.append(f"runs/g1/portrait_{i}.jpg")
        blobs.put_bytes(keys[-1], jpeg(i))
    client = FacechainClient(settings, None, blobs=blobs)  # HTTP only, like `facechain-bot discord-sync`
    await client.login(TOKEN)
    try:
        buttons = (Button(texts.more_label(), "more", "watercolor"),)
        await client.channels.photos(fake.general, Photos(tuple(keys), "watercolor", buttons))
    finally:
        await client.close()
    first, second = fake.channel_messages(fake.general)
    assert (len(first.files), len(second.files)) == (10, 2)
    assert (first.content, second.content) == ("watercolor", "")
    assert (first.custom_ids(), second.custom_ids()) == ([], ["fc:more:watercolor"])
