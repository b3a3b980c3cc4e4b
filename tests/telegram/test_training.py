"""Training from the chat: rejected photos, more photos and /done again, /cancel while it runs, /forget."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

from bot.app import run_bot
from pipeline.aio import cancel_all
from storage.blobs import LocalBlobStore
from tests.telegram.conftest import Harness
from tests.telegram.fake_bot_api import ChatMessage, FakeBotApi
from tests.telegram.gpu import ScriptedGpu
from tests.telegram.media import face_photos, not_a_face
from tests.telegram.users import TgUser


async def test_too_few_usable_photos_then_more_then_trained(bot: Harness, alice: TgUser) -> None:
    await alice.ask_to_train([*face_photos(2), not_a_face()], "A man", got="Got 3 photos (3 of 10)")
    progress = await alice.expect("Training queued")

    told = await alice.expect("I could only use 2 photos; I need at least 3.", within=20)
    assert "Photo 3: no face found" in told.shown, told.shown
    assert "Photo 1" not in told.shown and "Photo 2" not in told.shown
    await alice.expect_edit(progress, "Training stopped.")

    alice.send_photos(face_photos(1, start=5))
    added = await alice.expect("Got 1 photo (3 of 10)")
    assert "/done" in added.shown, "the two good photos were kept, the bad one dropped"
    await alice.answer_subject("A man")
    second = await alice.expect("Training queued")
    await alice.expect_edit(second, "Training done.", within=20)
    await alice.expect("Your face model is ready!")


async def test_cancel_while_training_stops_it_and_keeps_the_photos(bot: Harness, alice: TgUser) -> None:
    gpu = bot.gpu
    assert isinstance(gpu, ScriptedGpu)
    gpu.hold = threading.Event()
    await alice.ask_to_train(face_photos(4), got="Got 4 photos")
    progress = await alice.expect("Training queued")
    assert await asyncio.to_thread(gpu.started.wait, 15), "training started on the GPU"

    alice.say("/cancel")
    await alice.expect("Cancelling 1 job")
    await alice.expect("Training cancelled. Your photos are kept", within=20)
    # "Cancelling…" is an intermediate edit: within 3 s of the last one it waits, and the final edit wins.
    await alice.expect_edit(progress, "Training stopped.")
    assert progress.shown == "Training stopped."
    assert "Training done." not in progress.history

    alice.say("/status")
    status = await alice.expect("Face model:")
    assert "Photo set: 4 of 10" in status.shown, status.shown


async def test_forget_deletes_everything_after_a_confirmation(bot: Harness, api: FakeBotApi, alice: TgUser) -> None:
    await bot.train(alice)
    alice.say("/generate watercolor 2")
    making = await alice.expect("Making 2 portraits")
    await alice.expect_edit(making, "Done.", within=20)
    await alice.wait_buttons(["More of this style", "Another style"])
    blobs = LocalBlobStore(bot.settings.blob_dir)
    assert blobs.list("users") and blobs.list("runs")

    alice.say("/forget")
    question = await alice.expect("This deletes everything I keep about you")
    assert question.labels == ["Yes, delete everything", "No, keep it"]
    pressed = alice.press("Yes, delete everything")
    await alice.expect("Done: everything I had about you is deleted.")
    assert pressed in [a["id"] for a in api.callback_answers], "the button press was answered (no spinner left)"

    assert blobs.list("users") == [] and blobs.list("runs") == []
    with sqlite3.connect(bot.settings.database_path) as db:
        assert db.execute("SELECT count(*) FROM identities WHERE platform_user_id = '1001'").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM users").fetchone() == (0,)

    alice.say("/generate")
    await alice.expect("You need a face model first")


async def test_forget_declined_keeps_everything(bot: Harness, api: FakeBotApi, alice: TgUser) -> None:
    await bot.train(alice)
    alice.say("/train")
    await alice.expect("Send me")
    alice.send_photos(face_photos(2), as_documents=True)
    await alice.expect("Got 2 photos (2 of 10)")
    blobs = LocalBlobStore(bot.settings.blob_dir)
    kept = sorted(blobs.list("users"))
    rows = _counts(bot, "users", "photos", "face_models")
    assert all(rows), rows

    alice.say("/forget")
    await alice.expect("Delete it all?")
    pressed = alice.press("No, keep it")
    await alice.expect("Okay, nothing was deleted.")
    assert pressed in [a["id"] for a in api.callback_answers]

    assert sorted(blobs.list("users")) == kept
    with sqlite3.connect(bot.settings.database_path) as db:
        assert [
            db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("users", "photos", "face_models")
        ] == rows
    alice.say("/status")
    status = await alice.expect("Face model:")
    assert "Face model: ready" in status.shown and "Photo set: 2 of 10" in status.shown, status.shown


def _counts(bot: Harness, *tables: str) -> list[int]:
    with sqlite3.connect(bot.settings.database_path) as db:
        return [db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in tables]


async def test_a_refused_file_of_an_album_is_named_by_its_place_and_file_name(
    bot: Harness, api: FakeBotApi, alice: TgUser
) -> None:
    alice.say("/train")
    await alice.expect("Send me")
    good = face_photos(1)[0]
    album = api.new_album_id()
    api.push_document(alice.chat_id, alice.user_id, b"\x00" * 64, "IMG_0001.HEIC", "image/heic", media_group_id=album)
    api.push_document(alice.chat_id, alice.user_id, good, "IMG_0002.jpg", "image/jpeg", media_group_id=album)
    broken = b"\xff\xd8\xff\xe0 broken"
    api.push_document(alice.chat_id, alice.user_id, broken, "IMG_0003.jpg", "image/jpeg", media_group_id=album)
    await alice.expect("Photo 1 (IMG_0001.HEIC): HEIC")
    saved = await alice.expect("Got 1 photo")
    assert "Photo 3 (IMG_0003.jpg): not an image" in saved.shown
    assert "Photo 2" not in saved.shown, "the good photo is not blamed"


async def _training_held_on_the_gpu(bot: Harness, user: TgUser) -> ChatMessage:
    """The user's training, taken by the GPU and held there; its progress message."""
    gpu = bot.gpu
    assert isinstance(gpu, ScriptedGpu)
    gpu.hold = threading.Event()
    await user.ask_to_train()
    progress = await user.expect("Training queued")
    assert await asyncio.to_thread(gpu.started.wait, 15), "training started on the GPU"
    return progress


async def test_cancel_after_a_bot_restart_closes_the_progress_message(
    bot: Harness, api: FakeBotApi, alice: TgUser
) -> None:
    """The restarted bot no longer remembers the progress message: it edits it where the run stored it."""
    progress = await _training_held_on_the_gpu(bot, alice)

    await cancel_all([bot.bot_task])
    polls = len(api.calls_of("getUpdates"))
    restarted = asyncio.create_task(run_bot(bot.settings), name="bot again")
    try:
        await api.wait_for(lambda: len(api.calls_of("getUpdates")) > polls, 15, "the restarted bot to poll")
        alice.say("/cancel")
        await alice.expect("Training cancelled. Your photos are kept", within=20)
        await alice.expect_edit(progress, "Training stopped.")
        assert [m for m in alice.replies if m.shown == "Training stopped."] == [progress], "no new message for it"
    finally:
        await cancel_all([restarted])


async def test_forget_during_a_training_closes_its_progress_message(bot: Harness, alice: TgUser) -> None:
    progress = await _training_held_on_the_gpu(bot, alice)
    alice.say("/forget")
    await alice.expect("This deletes everything I keep about you")
    alice.press("Yes, delete everything")
    await alice.expect("Done: everything I had about you is deleted.")
    await alice.expect_edit(progress, "Training stopped.")
