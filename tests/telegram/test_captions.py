"""Photos whose caption is a command: the photo joins the set and the command runs too, in the order
that makes sense (``/train`` opens the set first, ``/done`` counts the photo it came with)."""

from __future__ import annotations

import hashlib
import sqlite3

from tests.telegram.conftest import Harness
from tests.telegram.fake_bot_api import FakeBotApi
from tests.telegram.media import face_photos
from tests.telegram.users import TgUser


def _stored(bot: Harness) -> list[str]:
    with sqlite3.connect(bot.settings.database_path) as db:
        return [row[0] for row in db.execute("SELECT sha256 FROM photos ORDER BY id")]


def _digests(photos: list[bytes]) -> list[str]:
    return [hashlib.sha256(p).hexdigest() for p in photos]


async def test_files_captioned_train_and_done_make_the_whole_set(bot: Harness, alice: TgUser) -> None:
    photos = face_photos(3)
    alice.send_document(photos[0], "IMG_0001.jpg", "image/jpeg", caption="/train")
    await alice.expect("Send me")
    await alice.expect("Got 1 photo (1 of 10)")
    alice.send_document(photos[1], "IMG_0002.jpg", "image/jpeg")
    await alice.expect("Got 1 photo (2 of 10)")
    alice.send_document(photos[2], "IMG_0003.jpg", "image/jpeg", caption="/done")
    await alice.expect("Got 1 photo (3 of 10)")
    await alice.expect("Who is in these photos?")
    assert _stored(bot) == _digests(photos)


async def test_a_compressed_photo_captioned_done_joins_the_set_before_it_closes(
    bot: Harness, api: FakeBotApi, alice: TgUser
) -> None:
    photos = face_photos(3)
    await alice.send_training_photos(photos[:2], "Got 2 photos (2 of 10)", as_documents=True)
    api.push_photo(alice.chat_id, alice.user_id, photos[2], caption="/done")
    await alice.expect("Got 1 photo (3 of 10)")
    await alice.expect("Who is in these photos?")
    assert not any(m.shown.startswith("You have") for m in alice.replies), "/done saw the photo it came with"
    assert len(_stored(bot)) == 3


async def test_an_album_captioned_train_and_done_is_one_set(bot: Harness, api: FakeBotApi, alice: TgUser) -> None:
    photos = face_photos(3)
    album = api.new_album_id()
    for index, (photo, caption) in enumerate(zip(photos, ("/train", None, "/done"), strict=True), start=1):
        api.push_document(
            alice.chat_id, alice.user_id, photo, f"IMG_{index:04d}.jpg", "image/jpeg",
            media_group_id=album, caption=caption,
        )  # fmt: skip
    await alice.expect("Send me")
    await alice.expect("Got 3 photos (3 of 10)")
    await alice.expect("Who is in these photos?")
    assert _stored(bot) == _digests(photos)
