"""Groups: /generate and /styles for users who trained in private, admin commands checked with
getChatMember (anonymous admins included), quotas, and no training photos in a group."""

from __future__ import annotations

import threading

import pytest

from pipeline.jobs import GenerateRequest
from storage.blobs import LocalBlobStore
from tests.telegram.conftest import Harness
from tests.telegram.fake_bot_api import ANONYMOUS_ADMIN_ID, FakeBotApi
from tests.telegram.gpu import ScriptedGpu
from tests.telegram.media import face_photos, tiny_lora
from tests.telegram.users import TgUser

GROUP = -100_500


async def test_a_group_with_an_admin_and_a_member(bot: Harness, api: FakeBotApi, alice: TgUser) -> None:
    await bot.train(alice)
    api.add_group(GROUP, "Portrait Club")
    ann = TgUser(api, 2001, "Ann").in_chat(GROUP)
    bob = TgUser(api, 2002, "Bob").in_chat(GROUP)
    api.set_member(GROUP, ann.user_id, "administrator")
    group_alice = alice.in_chat(GROUP)

    refused = bob.say("/admin disable watercolor")
    answer = await bob.expect("Only admins of this group can use /admin.")
    assert answer.reply_to == refused.message_id, "threaded under the message it answers"

    ann.say("/admin disable watercolor")
    await ann.expect("watercolor is now off here.")

    # An anonymous admin writes as the group itself: no getChatMember, and it is an admin.
    checks = len(api.calls_of("getChatMember"))
    ann.say("/admin quota user 1", as_chat=True)
    await ann.expect("Daily limit for each member: 1 portrait run.")
    asked = [c.params["user_id"] for c in api.calls_of("getChatMember")[checks:]]
    assert str(ANONYMOUS_ADMIN_ID) not in asked
    ann.say("/admin styles")
    listing = await ann.expect("Settings here:")
    assert "watercolor: off" in listing.shown and "- each member: 1 portrait run a day" in listing.shown

    group_alice.say("/styles")
    styles = await group_alice.expect("Styles you can use")
    assert "watercolor" not in styles.shown and "cyberpunk" in styles.shown

    group_alice.say("/generate")
    picker = await group_alice.expect("Pick a style")
    assert "watercolor" not in picker.labels
    group_alice.press("cyberpunk", picker)
    making = await group_alice.expect("Making 4 portraits in cyberpunk")
    await group_alice.expect_edit(making, "Done.", within=20)
    first = await group_alice.expect("cyberpunk")
    assert first.chat_id == GROUP and first.media_group_id, "the portraits are posted in the group"
    more = await group_alice.wait_buttons(["More of this style", "Another style"])

    group_alice.say("/generate cyberpunk")
    await group_alice.expect("You've used your 1 portrait run for today.")

    # Bob has no model: his press gets a pop-up only he sees, not a message in the group.
    before = len(bob.replies)
    bob.press("More of this style", more)
    alert = await api.wait_for(lambda: [a for a in api.callback_answers if a["show_alert"]])
    assert "You need a face model first" in alert[-1]["text"]
    assert len(bob.replies) == before

    group_alice.say("/train")
    await group_alice.expect("Photos are collected in a private chat")
    alice.say("/train")
    await alice.expect("Send me")
    group_alice.send_photos(face_photos(1))
    await group_alice.expect("Please send your photos to me in our private chat")


async def test_an_admin_adds_a_style_with_a_lora_file(bot: Harness, api: FakeBotApi, alice: TgUser) -> None:
    await bot.train(alice)
    api.add_group(GROUP, "Portrait Club")
    ann = TgUser(api, 2001, "Ann").in_chat(GROUP)
    api.set_member(GROUP, ann.user_id, "creator")

    ann.send_document(
        tiny_lora(), "noir.safetensors", None, caption="/admin addstyle noir black and white photo, dramatic light"
    )
    await ann.expect("Style noir added and switched on.")
    ann.send_document(b"PK\x03\x04 a zip", "bad.safetensors", None, caption="/admin addstyle broken some prompt")
    await ann.expect("I couldn't add broken")

    group_alice = alice.in_chat(GROUP)
    group_alice.say("/generate")
    picker = await group_alice.expect("Pick a style")
    assert picker.labels[0] == "noir", "the group's own style leads the picker's few buttons"
    await group_alice.generate("noir 2", "Making 2 portraits in noir")
    await group_alice.wait_buttons(["More of this style", "Another style"])
    # The worker got the admin's style: the prompt as written and the uploaded file, not a style file's LoRA.
    noir = bot.gpu.requests[-1].style
    assert (noir.name, noir.prompt, noir.lora) == ("noir", "black and white photo, dramatic light", None)
    assert noir.lora_key is not None and noir.lora_key.startswith("communities/")
    assert LocalBlobStore(bot.settings.blob_dir).get_bytes(noir.lora_key) == tiny_lora()


async def test_a_style_replaced_while_a_member_waits_still_makes_their_portraits(
    bot: Harness, api: FakeBotApi, alice: TgUser
) -> None:
    ann = await _trained_in_a_group_whose_admin_says(bot, api, alice, "quota user 5", "Daily limit for each member: 5")
    await _adds_noir(ann)
    gpu = bot.gpu
    assert isinstance(gpu, ScriptedGpu)
    gpu.hold_generate = threading.Event()
    group_alice = alice.in_chat(GROUP)
    group_alice.say("/generate noir 1")
    await group_alice.expect("Making 1 portrait in noir")
    asked = await api.wait_for(lambda: next((r for r in gpu.requests if isinstance(r, GenerateRequest)), None))
    old_file = asked.style.lora_key
    assert old_file is not None

    ann.say("/admin removestyle noir")
    await ann.expect("Style noir removed.")
    ann.send_document(tiny_lora(), "noir-v2.safetensors", None, caption="/admin addstyle noir a better noir")
    await ann.expect("Style noir added and switched on.")
    blobs = LocalBlobStore(bot.settings.blob_dir)
    assert blobs.exists(old_file), "kept while Alice's portraits wait for it"
    gpu.release()

    portraits = await group_alice.expect("noir ·")
    assert portraits.photo, "made with the style as it was when she asked"
    await api.wait_for(lambda: not blobs.exists(old_file))  # then nothing uses the old file
    assert len(blobs.list("communities/")) == 1, "the new file stays"


async def test_commands_for_another_bot_are_ignored(bot: Harness, api: FakeBotApi, alice: TgUser) -> None:
    api.add_group(GROUP, "Portrait Club")
    group_alice = alice.in_chat(GROUP)
    group_alice.say("/styles@some_other_bot")
    group_alice.say("/help@facechain_test_bot")
    helped = await group_alice.expect("What I can do:")
    assert all("Styles you can use" not in m.shown for m in group_alice.replies)
    assert helped.chat_id == GROUP


async def _trained_in_a_group_whose_admin_says(
    bot: Harness, api: FakeBotApi, member: TgUser, admin_command: str, answer: str
) -> TgUser:
    """``member`` trained in private, in GROUP with Ann, an admin who set ``/admin admin_command``; Ann."""
    await bot.train(member)
    api.add_group(GROUP, "Portrait Club")
    ann = TgUser(api, 2001, "Ann").in_chat(GROUP)
    api.set_member(GROUP, ann.user_id, "administrator")
    ann.say(f"/admin {admin_command}")
    await ann.expect(answer)
    return ann


async def _adds_noir(admin: TgUser) -> None:
    """``admin`` adds the group's own style noir, with a LoRA file."""
    admin.send_document(tiny_lora(), "noir.safetensors", None, caption="/admin addstyle noir black and white photo")
    await admin.expect("Style noir added and switched on.")


async def test_results_for_members_go_to_their_private_chat_or_to_the_group_when_it_is_closed(
    bot: Harness, api: FakeBotApi, alice: TgUser
) -> None:
    await _trained_in_a_group_whose_admin_says(bot, api, alice, "results direct", "sent to members privately")
    group_alice = alice.in_chat(GROUP)

    await group_alice.generate("cyberpunk 2", "Making 2 portraits in cyberpunk")
    await alice.wait_buttons(["More of this style", "Another style"])
    assert len([m for m in alice.replies if m.photo]) == 2, "in Alice's private chat"
    assert not [m for m in group_alice.replies if m.photo]

    # Alice stops the bot in private: the next portraits are posted in the group, saying why.
    api.started.discard(alice.user_id)
    await group_alice.generate("watercolor 2", "Making 2 portraits in watercolor")
    note = await group_alice.expect("couldn't send your portraits to your private chat, so here they are")
    assert note.shown.startswith(f"{alice.name}, I couldn't")
    await group_alice.wait_buttons(["More of this style", "Another style"])
    assert len([m for m in group_alice.replies if m.photo]) == 2
    assert len([m for m in alice.replies if m.photo]) == 2, "nothing more reached the closed chat"


async def test_a_private_press_of_a_button_of_a_group_that_became_a_supergroup_acts_for_the_supergroup(
    bot: Harness, api: FakeBotApi, alice: TgUser
) -> None:
    ann = await _trained_in_a_group_whose_admin_says(bot, api, alice, "results direct", "sent to members privately")
    ann.say("/admin quota user 1")
    await ann.expect("Daily limit for each member: 1 portrait run.")
    await alice.in_chat(GROUP).generate("cyberpunk 1", "Making 1 portrait in cyberpunk")
    results = await alice.wait_buttons(["More of this style", "Another style"])
    api.migrate_group(GROUP, -100_900)
    alice.in_chat(-100_900).say("/styles")  # the supergroup's first message from the bot's point of view
    await alice.in_chat(-100_900).expect("Styles you can use")

    alice.press("More of this style", results)
    await alice.expect("You've used your 1 portrait run for today.")  # the group's limit, not the bot's


async def test_buttons_under_portraits_sent_privately_keep_the_groups_styles_and_limits(
    bot: Harness, api: FakeBotApi, alice: TgUser
) -> None:
    ann = await _trained_in_a_group_whose_admin_says(bot, api, alice, "results direct", "sent to members privately")
    await _adds_noir(ann)
    ann.say("/admin quota user 2")
    await ann.expect("Daily limit for each member: 2 portrait runs.")
    await alice.in_chat(GROUP).generate("noir 1", "Making 1 portrait in noir")
    results = await alice.wait_buttons(["More of this style", "Another style"])

    alice.press("More of this style", results)
    progress = await alice.expect("portraits in noir")
    await alice.expect_edit(progress, "Done.", within=20)
    noir = bot.gpu.requests[-1].style
    assert noir.lora_key is not None and noir.lora_key.startswith("communities/"), "the group's own style"
    alice.press("Another style", await alice.wait_buttons(["More of this style", "Another style"]))
    await alice.expect("You've used your 2 portrait runs for today.")  # the group's limit for its members
    asked = len(bot.gpu.requests)

    api.set_member(GROUP, alice.user_id, "left")
    alice.press("More of this style", results)
    await alice.expect('I don\'t know the style "noir"')  # not a member any more: the group's styles are gone
    assert len(bot.gpu.requests) == asked


@pytest.mark.bot_settings(daily_generations=1)
async def test_the_bots_daily_limit_counts_a_persons_runs_everywhere_a_groups_own_counts_there(
    bot: Harness, api: FakeBotApi, alice: TgUser
) -> None:
    await bot.train(alice)
    api.add_group(GROUP, "Portrait Club")
    group_alice = alice.in_chat(GROUP)
    await group_alice.generate("cyberpunk 1", "Making 1 portrait in cyberpunk")

    alice.say("/generate watercolor 1")
    await alice.expect("You've used your 1 portrait run for today.")  # not a second one in private

    ann = TgUser(api, 2001, "Ann").in_chat(GROUP)
    api.set_member(GROUP, ann.user_id, "administrator")
    ann.say("/admin quota user 2")
    await ann.expect("Daily limit for each member: 2 portrait runs.")
    await group_alice.generate("watercolor 1", "Making 1 portrait in watercolor")  # the group's own limit
    group_alice.say("/status")
    status = await group_alice.expect("Portrait runs today")
    assert "Portrait runs today: 2 of 2" in status.shown, status.shown


async def test_a_group_that_becomes_a_supergroup_keeps_its_settings_and_gets_its_portraits(
    bot: Harness, api: FakeBotApi, alice: TgUser
) -> None:
    await _trained_in_a_group_whose_admin_says(bot, api, alice, "disable watercolor", "watercolor is now off here.")
    gpu = bot.gpu
    assert isinstance(gpu, ScriptedGpu)
    gpu.hold_generate = threading.Event()
    alice.in_chat(GROUP).say("/generate cyberpunk 1")
    await alice.in_chat(GROUP).expect("Making 1 portrait in cyberpunk")

    supergroup = -100_900
    api.migrate_group(GROUP, supergroup)  # an admin turned on a supergroup feature
    group_alice = alice.in_chat(supergroup)
    group_alice.say("/styles")
    styles = await group_alice.expect("Styles you can use")
    assert "watercolor" not in styles.shown and "cyberpunk" in styles.shown, "the group's settings moved"
    gpu.release()
    first = await group_alice.expect("cyberpunk")
    assert first.chat_id == supergroup and first.photo, "the portraits asked in the old group came here"
