"""Fifty users at once, each from /start to a queued training: every one is served, nothing is lost."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.telegram.conftest import Harness
from tests.telegram.fake_bot_api import FakeBotApi
from tests.telegram.media import face_photos
from tests.telegram.users import TgUser

USERS = 50


async def _journey(user: TgUser, photos: list[bytes]) -> None:
    user.say("/start")
    await user.expect("Hi!", within=30)
    user.say("/train")
    await user.expect("Send me", within=30)
    user.send_photos(photos)
    await user.expect("Got 3 photos (3 of 10)", within=30)
    user.say("/done")
    await user.expect("Who is in these photos?", within=30)
    user.press("Someone else")
    progress = await user.expect("Training queued", within=30)
    await user.expect_edit(progress, "Training done.", within=60)
    await user.expect("Your face model is ready!", within=30)


@pytest.mark.gpus(4)
async def test_fifty_users_at_once_are_all_served(bot: Harness, api: FakeBotApi) -> None:
    users = [TgUser(api, 10_000 + i, f"User {i}") for i in range(USERS)]
    photos = face_photos(3)
    started = time.monotonic()
    await asyncio.gather(*(_journey(user, photos) for user in users))
    elapsed = time.monotonic() - started
    print(f"\n{USERS} users from /start to a trained model: {elapsed:.1f} s ({len(api.calls)} Bot API calls)")

    for user in users:
        texts = user.texts()
        assert sum("Got 3 photos" in t for t in texts) == 1, (user.user_id, texts)
        assert sum("Who is in these photos?" in t for t in texts) == 1, (user.user_id, texts)
        progress = [m for m in user.replies if "Training queued" in m.history[0]]
        assert len(progress) == 1 and progress[0].shown == "Training done.", (user.user_id, texts)
        assert sum("Your face model is ready!" in t for t in texts) == 1, (user.user_id, texts)
    assert len(bot.gpu.calls) == USERS
