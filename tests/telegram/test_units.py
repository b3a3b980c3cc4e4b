"""The adapter's small parts on their own: translation, keyboards, throttling, retries, downloads, and
button presses Telegram no longer lets the bot answer."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest
from telegram import Bot, CallbackQuery, Message, Update
from telegram.error import BadRequest, RetryAfter, TimedOut

from bot.core.events import ButtonPressed, Command, OfferedFile, PhotosOffered, TextMessage
from bot.core.replies import Button
from bot.service import DownloadError
from bot.telegram_adapter import translate
from bot.telegram_adapter.app import parse_listen
from bot.telegram_adapter.downloads import CLOUD_DOWNLOAD_LIMIT, make_downloader
from bot.telegram_adapter.lanes import ChatLanes
from bot.telegram_adapter.retry import with_retries
from bot.telegram_adapter.sender import keyboard, split_text
from tests.telegram.conftest import Harness
from tests.telegram.fake_bot_api import FakeBotApi
from tests.telegram.users import TgUser

pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

PRIVATE = {"id": 42, "type": "private", "first_name": "Alice"}
GROUP = {"id": -100_7, "type": "supergroup", "title": "Club"}
GROUP_ID = -100_500
ALICE = {"id": 42, "is_bot": False, "first_name": "Alice", "last_name": "Liddell"}


def _message(chat: dict[str, Any] = PRIVATE, **fields: Any) -> Message:
    data = {"message_id": 5, "date": 0, "chat": chat, "from": ALICE, **fields}
    message = Message.de_json(data, None)
    assert message is not None
    return message


# ------------------------------------------------------------------------------------- translate
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/start", Command("start")),
        ("/Generate watercolor 2", Command("generate", ("watercolor", "2"), "watercolor 2")),
        ("/generate@FaceChain_Test_Bot business suit", Command("generate", ("business", "suit"), "business suit")),
        ("/generate@other_bot watercolor", None),
        ("/admin addstyle noir  black, white", Command("admin", ("addstyle", "noir", "black,", "white"),
                                                       "addstyle noir  black, white")),
        ("/path/to/file", None),
        ("hello", None),
    ],
)  # fmt: skip
def test_parse_command(text: str, expected: Command | None) -> None:
    assert translate.parse_command(text, "facechain_test_bot") == expected


def test_a_photo_is_offered_at_its_largest_size() -> None:
    sizes = [
        {"file_id": "small", "file_unique_id": "s", "width": 90, "height": 90, "file_size": 900},
        {"file_id": "big", "file_unique_id": "b", "width": 1280, "height": 960, "file_size": 90_000},
        {"file_id": "mid", "file_unique_id": "m", "width": 320, "height": 240, "file_size": 9_000},
    ]
    events = translate.message_events(_message(photo=sizes), "bot")
    assert events == [PhotosOffered((OfferedFile("big", 90_000, "image/jpeg", compressed=True),))]


def test_a_document_is_offered_byte_exact_not_its_thumbnail() -> None:
    doc = {
        "file_id": "doc", "file_unique_id": "d", "file_name": "me.png", "mime_type": "image/png", "file_size": 5000,
        "thumbnail": {"file_id": "thumb", "file_unique_id": "t", "width": 90, "height": 90},
    }  # fmt: skip
    events = translate.message_events(_message(document=doc), "bot")
    assert events == [PhotosOffered((OfferedFile("doc", 5000, "image/png", "me.png", compressed=False),))]


def test_a_document_captioned_with_a_command_is_its_attachment() -> None:
    doc = {"file_id": "lora", "file_unique_id": "l", "file_name": "noir.safetensors", "file_size": 10}
    events = translate.message_events(_message(GROUP, document=doc, caption="/admin addstyle noir moody"), "bot")
    assert len(events) == 1, "the LoRA is the command's, not a photo on offer"
    event = events[0]
    assert isinstance(event, Command) and event.name == "admin" and event.args[:2] == ("addstyle", "noir")
    assert event.attachment == OfferedFile("lora", 10, None, "noir.safetensors")


def test_a_photo_captioned_with_another_command_is_offered_and_the_command_runs() -> None:
    doc = {"file_id": "me", "file_unique_id": "m", "file_name": "me.jpg", "mime_type": "image/jpeg", "file_size": 10}
    offered = PhotosOffered((OfferedFile("me", 10, "image/jpeg", "me.jpg"),))
    assert translate.message_events(_message(document=doc, caption="/train"), "bot") == [Command("train"), offered]
    assert translate.message_events(_message(document=doc, caption="/done"), "bot") == [offered, Command("done")]
    assert translate.message_events(_message(document=doc, caption="/done@other_bot"), "bot") == [offered]
    assert translate.message_events(_message(document=doc, caption="me at the beach"), "bot") == [offered]


def test_text_and_nothing() -> None:
    assert translate.message_events(_message(text="hi there"), "bot") == [TextMessage("hi there")]
    assert translate.message_events(_message(text="/status"), "bot") == [Command("status")]
    assert translate.message_events(_message(), "bot") == []


def test_an_album_is_one_event_in_the_users_order() -> None:
    parts = [
        _message(message_id=n, media_group_id="g", document={"file_id": f"f{n}", "file_unique_id": f"u{n}"})
        for n in (12, 10, 11)
    ]
    events = translate.file_events(parts, "bot")
    assert len(events) == 1 and isinstance(events[0], PhotosOffered)
    assert [f.ref for f in events[0].files] == ["f10", "f11", "f12"]


def test_an_albums_captions_run_around_its_photos() -> None:
    captions = {10: "/train", 11: None, 12: "/done"}
    parts = [
        _message(
            message_id=n, media_group_id="g", caption=caption, document={"file_id": f"f{n}", "file_unique_id": f"u{n}"}
        )
        for n, caption in captions.items()
    ]
    events = translate.file_events(reversed(parts), "bot")
    assert [type(e).__name__ for e in events] == ["Command", "PhotosOffered", "Command"]
    assert events[0] == Command("train") and events[2] == Command("done")


def test_origins_in_private_in_a_group_and_for_an_anonymous_admin() -> None:
    private = _message(text="/start")
    who = translate.sender_key(private)
    assert who == ("42", "Alice Liddell")
    origin = translate.origin(*who, private.chat, is_admin=True, direct_chat_id="42")
    assert origin.private and origin.community_id is None and not origin.is_admin and origin.chat_id == "42"

    group = _message(GROUP, text="/generate")
    origin = translate.origin("42", "Alice", group.chat, is_admin=True, direct_chat_id="42")
    assert not origin.private and origin.community_id == str(GROUP["id"]) and origin.is_admin

    anonymous = _message(GROUP, text="/admin styles", sender_chat=GROUP)
    assert translate.sent_as_chat(anonymous)
    assert translate.sender_key(anonymous) == (str(GROUP["id"]), "Club")


def test_button_data_round_trips_with_the_group_it_acts_for() -> None:
    group = "-1001234567890"
    for button, community in ((Button("Business suit", "style", "business_suit"), None),
                              (Button("Another style", "another", "", group), group)):  # fmt: skip
        cq = CallbackQuery.de_json({"id": "1", "from": ALICE, "chat_instance": "c", "data": button.data}, None)
        assert cq is not None
        assert translate.button_event(cq) == (ButtonPressed(button.action, button.value), community)


# -------------------------------------------------------------------------------- sender helpers
def test_keyboard_rows_hold_up_to_three_short_buttons() -> None:
    buttons = [Button(name, "style", name) for name in ("hanfu", "wedding", "cyberpunk", "watercolor", "superhero")]
    markup = keyboard(buttons)
    assert markup is not None
    assert [len(row) for row in markup.inline_keyboard] == [3, 2]
    long = keyboard([Button("Yes, delete everything", "forget", "yes"), Button("No, keep it", "forget", "no")])
    assert long is not None and [len(row) for row in long.inline_keyboard] == [1, 1]
    assert keyboard([]) is None


def test_long_text_is_split_at_lines() -> None:
    text = "\n".join(f"line {i} " + "x" * 90 for i in range(100))
    pieces = split_text(text)
    assert len(pieces) == 3 and all(len(p) <= 4096 for p in pieces)
    assert "\n".join(pieces) == text


def test_parse_listen() -> None:
    assert parse_listen("0.0.0.0:8443") == ("0.0.0.0", 8443)
    assert parse_listen("[::]:443") == ("::", 443)
    with pytest.raises(ValueError):
        parse_listen("8443")


# ---------------------------------------------------------------------------------------- retries
async def test_retry_after_is_honoured_and_bad_requests_are_not_retried() -> None:
    calls: list[str] = []

    async def flaky() -> str:
        calls.append("x")
        if len(calls) == 1:
            raise RetryAfter(0)
        if len(calls) == 2:
            raise TimedOut()
        return "ok"

    assert await with_retries(flaky, "test", backoff_s=0.01) == "ok" and len(calls) == 3

    async def bad() -> str:
        calls.append("bad")
        raise BadRequest("Chat not found")

    with pytest.raises(BadRequest):
        await with_retries(bad, "test", backoff_s=0.01)
    assert calls.count("bad") == 1


async def test_the_cloud_limit_refuses_before_get_file() -> None:
    class NoCalls:
        async def get_file(self, ref: str) -> None:
            raise AssertionError("getFile must not be called")

    download = make_downloader(cast(Bot, NoCalls()), CLOUD_DOWNLOAD_LIMIT)
    with pytest.raises(DownloadError) as refused:
        await download(OfferedFile("big", CLOUD_DOWNLOAD_LIMIT + 1, "image/jpeg"))
    assert (refused.value.reason, refused.value.limit) == ("too_large", CLOUD_DOWNLOAD_LIMIT)


async def test_a_final_edit_for_a_run_whose_message_is_unknown_is_sent_as_a_message(
    api: FakeBotApi, tmp_path: Path
) -> None:
    """Under load an outcome can arrive before its progress message was sent: the user still sees it."""
    from bot.core.replies import EditProgress
    from bot.telegram_adapter.sender import TelegramSender
    from storage.blobs import LocalBlobStore

    alice = TgUser(api, 4242, "Alice")
    alice.say("/start")  # Telegram only lets a bot write to users who wrote to it
    bot = Bot(api.token, base_url=f"{api.root}/bot", base_file_url=f"{api.root}/file/bot")
    async with bot:
        sender = TelegramSender(bot, LocalBlobStore(tmp_path / "blobs"), edit_interval=0.01)
        await sender.send(4242, [EditProgress(run_id="t-unknown-01", text="Training done.", final=True)])
        await sender.send(4242, [EditProgress(run_id="t-unknown-02", text="Training 50%", final=False)])
        await sender.aclose()
    assert [m.shown for m in alice.replies] == ["Training done."], "the final state arrives, intermediate ones don't"


async def test_replies_to_a_group_that_became_a_supergroup_go_to_the_supergroup(
    api: FakeBotApi, tmp_path: Path
) -> None:
    """Telegram refuses a send to the old id, naming the new one (before the bot saw the migration)."""
    from bot.core.replies import Text
    from bot.telegram_adapter.sender import TelegramSender
    from storage.blobs import LocalBlobStore

    TgUser(api, 4242, "Alice")
    api.add_group(-100_500, "Club")
    api.migrate_group(-100_500, -100_900)
    bot = Bot(api.token, base_url=f"{api.root}/bot", base_file_url=f"{api.root}/file/bot")
    async with bot:
        sender = TelegramSender(bot, LocalBlobStore(tmp_path / "blobs"), edit_interval=0.01)
        await sender.send(-100_500, [Text("one"), Text("two")], reply_to=1)
        await sender.aclose()
    assert [m.text for m in api.messages[-100_900] if m.from_bot] == ["one", "two"]


# ---------------------------------------------------------------------------------- button presses
async def test_a_pop_up_telegram_refuses_is_posted_under_the_pressed_message(
    bot: Harness, api: FakeBotApi, alice: TgUser
) -> None:
    """A press handled late (after a restart, behind a backlog) can no longer be answered: Telegram says
    400 "query is too old". The pop-up meant for the presser must not vanish with the answer."""
    await bot.train(alice)
    api.add_group(GROUP_ID, "Club")
    group_alice = alice.in_chat(GROUP_ID)
    bob = TgUser(api, 2002, "Bob").in_chat(GROUP_ID)
    group_alice.say("/generate")
    picker = await group_alice.expect("Pick a style")

    tries = len(api.calls_of("answerCallbackQuery"))
    api.fail_next("answerCallbackQuery", 400)
    bob.press("cyberpunk", picker)
    posted = await bob.expect("You need a face model first")
    assert posted.reply_to == picker.message_id, "threaded under the message whose button was pressed"
    assert posted.shown.startswith(f"{bob.name}: You need a face model first"), "it names whom it is for"
    assert len(api.calls_of("answerCallbackQuery")) == tries + 1, "a refused answer is not tried again"


# ----------------------------------------------------------------------------------------- lanes
async def test_stopping_lanes_past_their_grace_leaves_the_chats_later_updates_unhandled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A handler stuck in a Redis call may swallow the first cancel; shutdown must still stop its lane."""
    handled: list[int] = []

    async def handle(update: Any) -> None:
        handled.append(update.update_id)
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            if len(handled) == 1:
                return  # swallowed, as redis-py does mid-connect
            raise

    async def handle_album(updates: list[Any]) -> None:
        raise AssertionError("no album was sent")

    lanes = ChatLanes(handle, handle_album)
    for update_id in (1, 2, 3):
        lanes.submit(Update.de_json({"update_id": update_id, "message": _message().to_dict()}, None))
    await asyncio.sleep(0.05)
    await asyncio.wait_for(lanes.aclose(grace=0.1), timeout=5)
    assert handled == [1], "the chat's later updates were handled during shutdown"
    assert "2 queued update(s) in 1 chat(s) left unhandled" in caplog.text


STICKER = {"file_id": "st1", "file_unique_id": "u1", "type": "regular", "width": 512, "height": 512,
           "is_animated": False, "is_video": False}  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"sticker": STICKER}, [TextMessage("")]),
        ({"location": {"latitude": 1.0, "longitude": 2.0}}, [TextMessage("")]),
        ({"voice": {"file_id": "v", "file_unique_id": "v", "duration": 2}}, [TextMessage("")]),
        ({"pinned_message": {"message_id": 4, "date": 0, "chat": PRIVATE}}, []),
        ({"video_note": {"file_id": "n", "file_unique_id": "n", "length": 240, "duration": 3, "file_size": 9}},
         [PhotosOffered((OfferedFile("n", 9, "video/mp4"),))]),
    ],
)  # fmt: skip
def test_what_a_user_sends_besides_text_and_photos_is_answered_a_service_message_is_not(
    fields: dict[str, Any], expected: list[Any]
) -> None:
    assert translate.message_events(_message(**fields), "bot") == expected
