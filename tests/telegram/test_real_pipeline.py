"""The chat journey on the real GPU stages (tiny SD model, CPU): real face detection drops a photo
that is not a face, training runs for real, and real portraits come back as a media group."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.pipeline.tiny import tiny_model_dir  # noqa: F401  (the tiny SD model, built once per session)
from tests.telegram.conftest import Harness
from tests.telegram.media import face_photos, not_a_face
from tests.telegram.users import TgUser

pytestmark = pytest.mark.real_gpu


async def test_a_photo_that_is_not_a_face_is_dropped_then_portraits_arrive(bot: Harness, alice: TgUser) -> None:
    await alice.send_training_photos([*face_photos(2), not_a_face()], "Got 3 photos (3 of 10)", as_documents=True)
    await alice.answer_subject()

    told = await alice.expect("I could only use 2 photos", within=60)
    assert "Photo 3: no face found" in told.shown, told.shown

    alice.send_photos(face_photos(1, start=2))
    await alice.expect("Got 1 photo (3 of 10)")
    await alice.answer_subject()
    progress = await alice.expect("Training queued")
    await alice.expect_edit(progress, "Training done.", within=120)
    await alice.expect("Your face model is ready!")

    alice.say("/generate watercolor 2")
    making = await alice.expect("Making 2 portraits in watercolor")
    await alice.expect_edit(making, "Done.", within=120)
    await alice.wait_buttons(["More of this style", "Another style"])
    portraits = [m for m in alice.replies if m.photo]
    assert len(portraits) == 2 and portraits[0].media_group_id == portraits[1].media_group_id
    for message in portraits:
        assert message.photo is not None
        with Image.open(io.BytesIO(message.photo)) as image:
            assert image.size[0] >= 64
