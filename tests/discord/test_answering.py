"""Answering interactions in time when the core is slow: defer, then show the replies where they belong."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save

from bot.core import texts
from bot.service import ConversationService
from tests.discord.fake_discord import ANSWER_DEADLINE_S, LOADING
from tests.discord.harness import Stack, jpeg


def _tiny_lora() -> bytes:
    base = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    return save(
        {
            f"{base}.lora_down.weight": np.zeros((2, 8), dtype=np.float32),
            f"{base}.lora_up.weight": np.zeros((8, 2), dtype=np.float32),
            f"{base}.alpha": np.array(2.0, dtype=np.float32),
        }
    )


async def test_a_slow_download_in_a_dm_is_deferred_then_answered(scripted: Stack) -> None:
    fake = scripted.fake
    fake.cdn_delay = 0.8  # three photos, one after another: over the 1.5 s the adapter waits
    uma = fake.user("uma")
    train = await fake.slash(uma, "train")
    await fake.wait_for(lambda: train.modal, 5.0, "the modal")
    photos = [fake.upload(f"p{i}.jpg", jpeg(i), "image/jpeg") for i in range(3)]
    submitted = await fake.submit_modal(train, photos)
    await fake.wait_for(lambda: any("Got 3 photos" in t for t in submitted.texts()), 10.0, "photos saved")
    assert submitted.callback_type == 5 and submitted.answered_in is not None
    assert submitted.answered_in < ANSWER_DEADLINE_S
    assert submitted.original is not None and not submitted.original.ephemeral, "DM answers stay visible"
    assert [t.split("\n")[0] for t in submitted.texts()] == [
        texts.train_tips(3, 10).split("\n")[0],
        "Got 3 photos (3 of 10).",
    ]


async def test_an_admin_adds_a_style_with_a_lora_through_a_slow_download(scripted: Stack) -> None:
    fake = scripted.fake
    fake.cdn_delay = 2.0
    admin = fake.user("ines", admin=True)
    lora = fake.upload("noir.safetensors", _tiny_lora(), "application/octet-stream")
    add = await fake.slash(
        admin, "facechain-admin", fake.general, sub="add", name="film_noir",
        prompt="black and white photo,  film noir, dramatic light", lora=lora,
    )  # fmt: skip
    await fake.wait_for(lambda: add.texts(), 10.0, "the answer")
    assert add.callback_type == 5 and (add.answered_in or 9) < ANSWER_DEADLINE_S
    assert add.texts() == [texts.style_added("film_noir")]
    assert add.original is not None and add.original.ephemeral and not add.original.flags & LOADING
    member = fake.user("mo")
    choices = await fake.autocomplete(member, "generate", "style", fake.general, style="noir")
    assert [c["value"] for c in choices] == ["film_noir"]
    assert "film noir" in choices[0]["name"], "the choice shows the start of the prompt"


async def test_a_public_answer_after_a_defer_goes_to_the_channel(
    scripted: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = scripted.fake
    handle = ConversationService.handle

    async def slow(self: ConversationService, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(2.0)
        return await handle(self, *args, **kwargs)

    monkeypatch.setattr(ConversationService, "handle", slow)
    vic = fake.user("vic")
    asked = await fake.slash(vic, "styles", fake.general)
    listing = await fake.wait_message(vic, fake.general, "watercolor", wait_s=10.0)
    assert listing.via == "bot" and not listing.ephemeral, "the style list is for everyone in the channel"
    assert asked.callback_type == 5 and (asked.answered_in or 9) < ANSWER_DEADLINE_S
    await fake.wait_for(lambda: asked.original is not None and asked.original.deleted, 5.0, "thinking removed")


async def test_a_member_asking_where_the_bot_may_not_post_is_told_privately(scripted: Stack) -> None:
    fake = scripted.fake
    lea = fake.user("lea")
    await scripted.train_in_dm(lea, [fake.upload(f"p{i}.jpg", jpeg(i), "image/jpeg") for i in range(3)])
    fake.closed_channels.add(fake.general)  # the server took Send Messages from the bot here

    asked = await fake.slash(lea, "generate", fake.general, style="watercolor", count=1)
    await fake.wait_for(lambda: asked.texts(), 10.0, "an answer")
    [notice] = asked.messages()
    assert notice.content == texts.cannot_post_here(run_started=True)
    assert "Send Messages" in notice.content and "I stopped what you just asked for" in notice.content
    assert notice.ephemeral and notice.visible_to(lea)
    assert (asked.answered_in or 9) < ANSWER_DEADLINE_S

    def statuses() -> list[str]:
        with sqlite3.connect(scripted.settings.database_path) as db:
            return [row[0] for row in db.execute("SELECT status FROM runs WHERE kind = 'generate'")]

    await fake.wait_for(lambda: statuses() == ["cancelled"], 10.0, "the run stopped: nothing of it can be shown")
    assert asked.messages() == [notice], "the answer stays"
