"""An admin's style LoRA with NaN or infinite weights is refused in the chat, and nothing is stored."""

from __future__ import annotations

import numpy as np
from safetensors.numpy import save

from storage.blobs import LocalBlobStore
from tests.telegram.conftest import Harness
from tests.telegram.fake_bot_api import FakeBotApi
from tests.telegram.users import TgUser

GROUP = -100_700
BASE = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"


def kohya_lora(up_value: float) -> bytes:
    up = np.full((320, 4), 0.01, np.float16)
    up[100, 2] = up_value
    return save({f"{BASE}.lora_down.weight": np.full((4, 320), 0.01, np.float16), f"{BASE}.lora_up.weight": up})


async def test_a_lora_with_nan_weights_is_refused_with_the_reason(bot: Harness, api: FakeBotApi) -> None:
    api.add_group(GROUP, "Portrait Club")
    ann = TgUser(api, 2001, "Ann").in_chat(GROUP)
    api.set_member(GROUP, ann.user_id, "creator")

    ann.send_document(kohya_lora(np.nan), "nan.safetensors", None, caption="/admin addstyle glitch a glitch style")
    refused = await ann.expect("I couldn't add glitch")
    assert "NaN or infinite weights" in refused.shown, refused.shown
    ann.send_document(kohya_lora(np.inf), "inf.safetensors", None, caption="/admin addstyle glitch a glitch style")
    await ann.expect("the file holds NaN or infinite weights")

    ann.say("/styles")
    listed = await ann.expect("Styles you can use")
    assert "glitch" not in listed.shown
    assert LocalBlobStore(bot.settings.blob_dir).list("communities") == [], "nothing of the refused files is kept"

    ann.send_document(kohya_lora(0.02), "fine.safetensors", None, caption="/admin addstyle glitch a glitch style")
    await ann.expect("Style glitch added and switched on.")
