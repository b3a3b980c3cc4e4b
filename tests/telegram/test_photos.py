"""Photos for training: albums, documents, and files refused at once with their reason."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest

from tests.telegram.conftest import Harness
from tests.telegram.fake_bot_api import FakeBotApi
from tests.telegram.media import face_photos
from tests.telegram.users import TgUser


async def test_an_album_of_five_is_answered_once(bot: Harness, api: FakeBotApi, alice: TgUser) -> None:
    alice.say("/train")
    await alice.expect("Send me")
    before = len(alice.replies)
    alice.send_photos(face_photos(5))
    await alice.expect("Got 5 photos (5 of 10)")
    alice.say("/status")
    await alice.expect("Photo set: 5 of 10")
    assert [m.shown for m in alice.replies[before:]] == [
        alice.replies[before].shown,
        alice.replies[before + 1].shown,
    ], "one answer for the album, then /status"
    fetched = {c.params["file_id"] for c in api.calls_of("getFile")}
    assert len(fetched) == 5, "the largest size of each photo, never its thumbnail"
    assert all(api.files[f].size > 1000 for f in fetched)


async def test_an_album_then_done_at_once_keeps_their_order(bot: Harness, alice: TgUser) -> None:
    alice.say("/train")
    await alice.expect("Send me")
    photos = face_photos(3)
    alice.send_photos(photos, as_documents=True)
    alice.say("/done")  # arrives while the album is still being gathered
    # expect() reads on from the last match: the album's answer comes before /done's question.
    await alice.expect("Got 3 photos (3 of 10)")
    await alice.expect("Who is in these photos?")
    assert not any("Send 3 more" in m.shown or "I need at least" in m.shown for m in alice.replies)
    # The set keeps the album's order (messages name photos by their number in it).
    with sqlite3.connect(bot.settings.database_path) as db:
        stored = [row[0] for row in db.execute("SELECT sha256 FROM photos ORDER BY id")]
    assert stored == [hashlib.sha256(p).hexdigest() for p in photos]


async def test_photos_without_train_start_a_set(bot: Harness, alice: TgUser) -> None:
    alice.send_photos(face_photos(2), as_documents=True)
    saved = await alice.expect("Got 2 photos (2 of 10)")
    assert "Send 1 more" in saved.shown


async def test_refused_files_get_their_reason_at_once(bot: Harness, api: FakeBotApi, alice: TgUser) -> None:
    alice.say("/train")
    await alice.expect("Send me")
    face = face_photos(1)[0]

    alice.send_document(b"shopping list: eggs, milk", "notes.txt", "text/plain")
    await alice.expect("not a JPEG, PNG or WebP image")

    alice.send_document(b"\xff\xd8\xff\xe0 definitely not a jpeg body", "broken.jpg", "image/jpeg")
    await alice.expect("not an image I can read")

    alice.send_document(b"x", "huge.jpg", "image/jpeg", size=25 * 1024 * 1024)
    await alice.expect("too large (the limit is 20 MB)")

    alice.send_photos([face])
    await alice.expect("Got 1 photo (1 of 10)")
    alice.send_photos([face], as_documents=True)
    await alice.expect("the same as another photo")

    alice.send_document(b"\x00" * 64, "IMG_0001.HEIC", "image/heic")
    await alice.expect("HEIC isn't supported")


async def test_a_sticker_gets_a_hint_in_private_and_nothing_in_a_group(
    bot: Harness, api: FakeBotApi, alice: TgUser
) -> None:
    alice.say("/train")
    await alice.expect("Send me")
    api.push_sticker(alice.chat_id, alice.user_id)
    await alice.expect("I'm waiting for photos (0 of 10 so far)")
    api.add_group(-100_500, "Portrait Club")
    group_alice = alice.in_chat(-100_500)
    api.push_sticker(-100_500, alice.user_id)
    group_alice.say("/help")
    await group_alice.expect("What I can do:")
    assert len(group_alice.replies) == 1, "a sticker in a group is chatter"


@pytest.mark.bot_settings(max_photo_mb=50)
async def test_getfiles_too_big_answer_becomes_too_large(bot: Harness, api: FakeBotApi, alice: TgUser) -> None:
    # A self-hosted server (any FACECHAIN_TELEGRAM_API_URL) gets no client-side limit: the server says.
    alice.say("/train")
    await alice.expect("Send me")
    big = alice.send_document(b"x", "big.jpg", "image/jpeg", size=21 * 1024 * 1024)
    refused = await alice.expect("too large (the limit is 20 MB)")  # what Telegram hands over, not the 50 MB set
    assert "Got" not in refused.shown or "No new photos saved" in refused.shown
    file_id = big.json["document"]["file_id"]
    assert [c for c in api.calls_of("getFile") if c.params.get("file_id") == file_id]
