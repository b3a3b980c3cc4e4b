"""Journeys through the real stages: the real discord.py client against the fake Discord, the real
service stack, and a GPU worker running real preprocessing, training and generation on a tiny model
with real photos (one person's edited photos; a coffee cup and a cat for "no face")."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.core import texts
from storage.blobs import LocalBlobStore
from tests.discord.fake_discord import ANSWER_DEADLINE_S, FakeDiscord, Upload
from tests.discord.harness import OPTIONS, Stack, bot_settings
from tests.pipeline import photos
from tests.pipeline.tiny import tiny_model_dir, tiny_settings

pytestmark = pytest.mark.slow
__all__ = ["tiny_model_dir"]


@pytest.fixture(scope="module")
def pipeline_runner(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The real stages on the tiny model, loaded once for the module (loading takes seconds)."""
    from pipeline.runner import PipelineRunner

    home = tmp_path_factory.mktemp("runner")
    settings = tiny_settings(tiny_model_dir, home, rank_faces=False, nsfw_check=False, candidates=2)
    yield PipelineRunner(settings, LocalBlobStore(settings.blob_dir))


@pytest.fixture
async def real(
    fake: FakeDiscord, tmp_path: Path, redis_url: str, tiny_model_dir: Path, pipeline_runner: Any
) -> AsyncIterator[Stack]:
    """The bot and a GPU worker running the real stages (preprocessing, training, generation)."""
    settings = bot_settings(fake, tmp_path, redis_url)
    worker = tiny_settings(
        tiny_model_dir, tmp_path, redis_url=redis_url, rank_faces=False, nsfw_check=False, candidates=2
    )
    # The runner is loaded once per module; each test gives it its own blob store.
    pipeline_runner.blobs = LocalBlobStore(settings.blob_dir)
    async with Stack(fake, settings, worker, pipeline_runner, OPTIONS) as stack:
        yield stack


def _png(stack: Stack, name: str, image: object) -> Upload:
    return stack.fake.upload(name, photos.encode(image), "image/png")  # type: ignore[arg-type]


async def test_first_time_journey_to_portraits(real: Stack) -> None:
    fake = real.fake
    eileen = fake.user("eileen")
    dm = fake.dm_channel(eileen)

    start = await fake.slash(eileen, "start")
    await fake.wait_for(lambda: start.texts(), 5.0, "the welcome")
    assert "selfies" in start.texts()[0]

    # /train in a DM opens the upload modal; four photos come through it, one more as a DM attachment.
    train = await fake.slash(eileen, "train")
    await fake.wait_for(lambda: train.modal, 5.0, "the upload modal")
    same = photos.same_person_set(photos.astronaut())
    submitted = await fake.submit_modal(train, [_png(real, f"me{i}.png", img) for i, img in enumerate(same[:4])])
    await fake.wait_for(lambda: any("Got 4 photos" in t for t in submitted.texts()), 10.0, "4 photos saved")
    await fake.dm(eileen, files=[_png(real, "me4.png", same[4])])
    await fake.wait_message(eileen, dm, "Got 1 photo (5 of 10)")

    done = await fake.slash(eileen, "done")
    question = await fake.wait_for(lambda: next((m for m in done.messages() if m.components), None), 5.0, "subject")
    assert question.content == texts.ask_subject()
    await fake.press(eileen, question, "A woman")

    # One progress message, edited as the run goes, then the model is ready with style buttons.
    progress = await fake.wait_message(eileen, dm, "Training queued")
    ready = await fake.wait_message(eileen, dm, "Your face model is ready", wait_s=90.0)
    # The finished message names the pipeline stages that ran (no stage models are fetched here).
    trained = texts.train_done_edit(["detection", "alignment", "lora_training"])
    assert progress.content == trained == "Training done. Steps: face detection, alignment, face model training."
    assert progress.edits and progress.edits[-1][1] == trained
    assert "fc:style:watercolor" in ready.custom_ids()

    # In the server: the style autocompletes, and the portraits are posted as files in the channel.
    choices = await fake.autocomplete(eileen, "generate", "style", fake.general, style="water")
    assert [c["value"] for c in choices] == ["watercolor"]
    asked, posted = await real.generate_in(eileen, fake.general, "watercolor", 2, wait_s=90.0)
    assert len(posted.files) == 2
    assert all(f.data[:3] == b"\xff\xd8\xff" for f in posted.files), "portraits are JPEG files"
    assert all(len(f.data) <= fake.upload_limit for f in posted.files)
    assert set(posted.labels()) == {texts.more_label(), texts.another_label()}
    # The server's buttons name it: pressed in a DM they still act for it (its styles and limits).
    assert posted.custom_ids() == [f"fc:more:watercolor@{fake.guild_id}", f"fc:another:@{fake.guild_id}"]
    generating = next(m for m in fake.channel_messages(fake.general) if m.id == posted.reference)
    assert generating.content.startswith(texts.generate_done_edit()), "the portraits answer the progress message"
    assert "Steps: generation" in generating.content
    assert asked.messages() == [], "the command's own acknowledgement is gone; the channel has the progress"

    for interaction in fake.interactions.values():
        assert interaction.answered_in is not None and interaction.answered_in < ANSWER_DEADLINE_S
    # The training photos were never posted anywhere.
    sent_files = [f for ms in fake.messages.values() for m in ms for f in m.files]
    assert all(f.filename.startswith("portrait") for f in sent_files)


async def test_too_few_usable_photos_are_explained_and_training_can_resume(real: Stack) -> None:
    fake = real.fake
    sam = fake.user("sam")
    dm = fake.dm_channel(sam)
    face = photos.same_person_set(photos.astronaut())
    uploads = [
        _png(real, "me.png", face[0]),
        _png(real, "coffee.png", photos.coffee()),
        _png(real, "cat.png", photos.chelsea()),
    ]
    await fake.dm(sam, files=uploads)
    await fake.wait_message(sam, dm, "Got 3 photos (3 of 10)")
    done = await fake.slash(sam, "done")
    question = await fake.wait_for(lambda: next((m for m in done.messages() if m.components), None), 5.0, "subject")
    await fake.press(sam, question, "A woman")

    explained = await fake.wait_message(sam, dm, "I could only use 1 photo", wait_s=60.0)
    assert "Photo 2: no face found" in explained.content
    assert "Photo 3: no face found" in explained.content
    progress = await fake.wait_message(sam, dm, texts.train_failed_edit())
    assert progress.edits[-1][1] == texts.train_failed_edit()

    # The usable photo is kept: two more and /done asks again who it is.
    await fake.dm(sam, files=[_png(real, "me1.png", face[1]), _png(real, "me2.png", face[2])])
    await fake.wait_message(sam, dm, "(3 of 10)")
    again = await fake.slash(sam, "done")
    await fake.wait_for(lambda: any(texts.ask_subject() in t for t in again.texts()), 5.0, "the question again")
