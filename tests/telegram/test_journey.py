"""The first-time journey, /start to portraits, through the real PTB Application over HTTP."""

from __future__ import annotations

import logging
import sqlite3

import pytest

from bot.core import catalogue, texts
from pipeline.jobs import ErrorCode
from tests.telegram.conftest import TOKEN, Harness
from tests.telegram.fake_bot_api import FakeBotApi
from tests.telegram.media import face_photos
from tests.telegram.users import TgUser


async def test_a_first_time_user_gets_from_start_to_portraits(bot: Harness, api: FakeBotApi, alice: TgUser) -> None:
    alice.say("/start")
    welcome = await alice.expect("Hi! I turn a few selfies into portraits")
    assert "/train" in welcome.shown and not welcome.buttons

    alice.say("/train")
    await alice.expect("Send me 3 to 10 photos of your face")
    for number, photo in enumerate(face_photos(3), start=1):
        alice.send_photos([photo])
        await alice.expect(f"Got 1 photo ({number} of 10)")

    alice.say("/done")
    question = await alice.expect("Who is in these photos?")
    assert question.labels == ["A man", "A woman", "A boy", "A girl", "Someone else"]
    assert len(question.keyboard) > 1, "five buttons are laid out in rows"

    alice.press("A woman")
    progress = await alice.expect("Training queued")
    await alice.expect_edit(progress, "Training done.", within=20)
    assert any("Preparing your photos" in text for text in progress.history), progress.history
    ready = await alice.expect("Your face model is ready!")
    assert "watercolor" in ready.labels

    alice.press("watercolor", ready)
    making = await alice.expect("Making 4 portraits in watercolor")
    await alice.expect_edit(making, "Done.", within=20)
    first = await alice.expect("watercolor")
    album = [m for m in alice.replies if m.media_group_id == first.media_group_id]
    assert first.media_group_id and len(album) == 4 and all(m.photo for m in album)
    assert album[0].caption and album[0].caption.startswith("watercolor")
    buttons = await alice.wait_buttons(["More of this style", "Another style"])
    assert buttons.message_id > album[-1].message_id, "the buttons follow the media group"

    alice.press("More of this style")
    again = await alice.expect("Making 4 portraits in watercolor")
    await alice.expect_edit(again, "Done.", within=20)

    alice.say("/generate business suit 1")
    single = await alice.expect("Making 1 portrait in business_suit")
    await alice.expect_edit(single, "Done.", within=20)
    photo = await api.wait_for(lambda: [m for m in alice.replies if m.photo and "business_suit" in (m.caption or "")])
    assert len(photo) == 1 and photo[0].media_group_id is None
    assert photo[0].labels == ["More of this style", "Another style"], "one photo carries its own buttons"

    alice.say("/status")
    await alice.expect("Face model: ready")
    alice.say("/styles")
    await alice.expect("Styles you can use")

    # The menus Telegram received are the catalogue's listed commands (+ /admin for administrators).
    menu = [{"command": c.name, "description": c.help} for c in catalogue.listed()]
    assert api.commands["default"] == menu
    admin = {"command": catalogue.ADMIN.name, "description": catalogue.ADMIN.help}
    assert api.commands["all_chat_administrators"] == [*menu, admin]
    assert not api.calls_of("getChatMember"), "no admin check in a private chat"


async def test_generate_without_a_model_says_how_to_get_one(bot: Harness, alice: TgUser) -> None:
    alice.say("/generate")
    await alice.expect("You need a face model first: send /train")


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


async def test_the_token_never_reaches_the_logs(
    debug_logs: pytest.LogCaptureFixture, bot: Harness, api: FakeBotApi, alice: TgUser
) -> None:
    alice.say("/start")
    await alice.expect("Hi!")
    await bot.train(alice)
    api.fail_next("sendMessage", 500)
    alice.say("/status")
    await alice.expect("Face model: ready")

    records = debug_logs.records
    assert any(r.levelno == logging.DEBUG and r.name.startswith("telegram") for r in records), "DEBUG was on"
    for record in records:
        text = logging.Formatter().format(record)
        assert TOKEN not in text, f"the token leaked through {record.name}"
        assert TOKEN.split(":")[1] not in text


async def test_a_failure_inside_the_bot_is_answered(bot: Harness, api: FakeBotApi, alice: TgUser) -> None:
    with sqlite3.connect(bot.settings.database_path) as broken:
        broken.execute("DROP TABLE conversations")  # every event now fails to read the user's state
    alice.say("/status")
    await alice.expect(texts.error_reason(ErrorCode.INTERNAL))
