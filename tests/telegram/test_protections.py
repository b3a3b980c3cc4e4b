"""What protects users, each held by a journey through the fake Bot API with the real bot process and
a real arq worker. Every test here was checked to fail under a deliberate bug in the protection it
names (see the docstrings): whose button press it is, who is an admin, /forget stopping work on your
photos, quotas counting what is queued and stopping at the limit, a finished job never done twice.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from bot.queue import ArqJobQueue, create_redis
from tests.telegram.conftest import Harness
from tests.telegram.fake_bot_api import FakeBotApi
from tests.telegram.gpu import ScriptedGpu
from tests.telegram.media import face_photos, not_a_face
from tests.telegram.users import TgUser

GROUP = -100_600
BOBS_CHANNEL = -100_777


def _gpu(bot: Harness) -> ScriptedGpu:
    assert isinstance(bot.gpu, ScriptedGpu)
    return bot.gpu


async def _queue_training(user: TgUser, photos: list[bytes] | None = None) -> None:
    """/train, photos, /done, "A woman": the training is queued (not waited for)."""
    await user.ask_to_train(photos)
    await user.expect("Training queued")


async def _forget(user: TgUser) -> None:
    user.say("/forget")
    await user.expect("Delete it all?")
    user.press("Yes, delete everything")
    await user.expect("Done: everything I had about you is deleted.")


async def _group_with_a_quota_of_two(bot: Harness, alice: TgUser) -> TgUser:
    """Alice and Carol (returned) with face models, and a group whose creator set its daily limit to 2 runs."""
    carol = bot.user(1003, "Carol")
    await bot.train(alice)
    await bot.train(carol)
    bot.api.add_group(GROUP, "Portrait Club")
    ann = TgUser(bot.api, 2001, "Ann").in_chat(GROUP)
    bot.api.set_member(GROUP, ann.user_id, "creator")
    ann.say("/admin quota group 2")
    await ann.expect("Daily limit for the whole group: 2 portrait runs.")
    return carol


# ------------------------------------------------------------------------------------- who is who
async def test_a_button_press_in_a_group_is_the_pressers_not_the_replied_to_users(
    bot: Harness, api: FakeBotApi, alice: TgUser
) -> None:
    """Bug it catches: the press attributed to the author of the message the bot's reply is threaded
    under (``query.message.reply_to_message.from_user``) instead of the presser (``query.from_user``)."""
    await bot.train(alice)
    api.add_group(GROUP, "Portrait Club")
    group_alice = alice.in_chat(GROUP)
    bob = TgUser(api, 2002, "Bob").in_chat(GROUP)

    asked = group_alice.say("/generate")
    picker = await group_alice.expect("Pick a style")
    replied = picker.json["reply_to_message"]
    assert replied["message_id"] == asked.message_id and replied["from"]["id"] == alice.user_id, "as Telegram sends"

    # Bob, who has no face model, presses a style under the picker the bot gave Alice.
    bob.press("cyberpunk", picker)
    alerts = await api.wait_for(lambda: [a for a in api.callback_answers if a["show_alert"]], 10, "Bob's pop-up")
    assert "You need a face model first" in alerts[-1]["text"], "Bob is treated as Bob"

    group_alice.press("cyberpunk", picker)
    making = await group_alice.expect("Making 4 portraits in cyberpunk")
    await group_alice.expect_edit(making, "Done.", within=20)
    assert len([c for c in _gpu(bot).calls if c.startswith("generate:")]) == 1, "only Alice's own press made portraits"


async def test_a_member_posting_as_their_channel_is_not_the_group_or_an_admin(
    bot: Harness, api: FakeBotApi, alice: TgUser
) -> None:
    """Bug it catches: any ``sender_chat`` taken for the group itself (an anonymous admin); only
    ``sender_chat`` == the group is one, a member's own channel is not."""
    api.add_group(GROUP, "Portrait Club")
    api.add_channel(BOBS_CHANNEL, "Bob's Channel")
    bob = TgUser(api, 2002, "Bob").in_chat(GROUP)
    ann = TgUser(api, 2001, "Ann").in_chat(GROUP)
    api.set_member(GROUP, ann.user_id, "administrator")

    bob.say("/admin disable watercolor", as_channel=BOBS_CHANNEL)
    await bob.expect("Only admins of this group can use /admin.")
    ann.say("/admin disable watercolor", as_chat=True)
    await ann.expect("watercolor is now off here.")
    bob.say("/admin enable watercolor", as_channel=BOBS_CHANNEL)
    await bob.expect("Only admins of this group can use /admin.")

    alice.in_chat(GROUP).say("/styles")
    styles = await alice.in_chat(GROUP).expect("Styles you can use")
    assert "watercolor" not in styles.shown, "the real admin's choice stands"


# ------------------------------------------------------------------------------------------ /forget
async def test_forget_stops_the_users_running_and_queued_trainings(
    bot: Harness, api: FakeBotApi, alice: TgUser
) -> None:
    """Bug it catches: /forget deleting the user's data without cancelling their runs: the GPU would
    go on training on (or start on) the photos of a user who asked to be forgotten."""
    gpu = _gpu(bot)
    gpu.hold = threading.Event()
    bob = bot.user(1002, "Bob")
    carol = bot.user(1003, "Carol")
    await _queue_training(alice)
    assert await asyncio.to_thread(gpu.started.wait, 15), "Alice's training is running"
    await _queue_training(bob)  # queued behind Alice's

    await _forget(bob)
    await _forget(alice)
    stopped = await api.wait_for(lambda: gpu.stopped, 15, "Alice's running training to stop")
    assert stopped == [gpu.calls[0]], "the stage running on Alice's photos was stopped"

    gpu.hold.set()
    await bot.train(carol)
    trained = [c for c in gpu.calls if c.startswith("train:")]
    assert len(trained) == 2, f"Alice's (stopped) and Carol's; Bob's queued training never reached the GPU: {trained}"


# ------------------------------------------------------------------------------------------- quotas
@pytest.mark.bot_settings(daily_generations=2)
async def test_queued_generations_count_against_the_daily_quota(bot: Harness, alice: TgUser) -> None:
    """Bug it catches: only finished runs counted, so a user can queue any number of /generate runs
    while the GPU is busy."""
    gpu = _gpu(bot)
    await bot.train(alice)
    gpu.hold_generate = threading.Event()
    alice.say("/generate watercolor 1")
    first = await alice.expect("Making 1 portrait in watercolor")
    alice.say("/generate oil_painting 1")
    second = await alice.expect("Making 1 portrait in oil_painting")
    alice.say("/generate cyberpunk 1")
    await alice.expect("You've used your 2 portrait runs for today.")

    gpu.hold_generate.set()
    await alice.expect_edit(first, "Done.", within=20)
    await alice.expect_edit(second, "Done.", within=20)
    alice.say("/generate cyberpunk 1")
    await alice.expect("You've used your 2 portrait runs for today.")
    assert len([c for c in gpu.calls if c.startswith("generate:")]) == 2


async def test_queued_generations_count_against_the_groups_quota(bot: Harness, alice: TgUser) -> None:
    """Bug it catches: a group's count made of finished runs only: members could together queue past
    the group's daily limit while the GPU is busy."""
    gpu = _gpu(bot)
    carol = await _group_with_a_quota_of_two(bot, alice)

    gpu.hold_generate = threading.Event()
    group_alice, group_carol = alice.in_chat(GROUP), carol.in_chat(GROUP)
    group_alice.say("/generate watercolor 1")
    await group_alice.expect("Making 1 portrait in watercolor")
    group_carol.say("/generate oil_painting 1")
    await group_carol.expect("Making 1 portrait in oil_painting")
    group_alice.say("/generate cyberpunk 1")
    await group_alice.expect("This group has used its 2 portrait runs for today.")
    gpu.hold_generate.set()


async def test_a_group_quota_stops_at_exactly_its_limit(bot: Harness, alice: TgUser) -> None:
    """Bug it catches: the group's count compared with > instead of >= (one run more than the limit)."""
    carol = await _group_with_a_quota_of_two(bot, alice)

    group_alice = alice.in_chat(GROUP)
    for member, style in ((group_alice, "watercolor"), (carol.in_chat(GROUP), "oil_painting")):
        member.say(f"/generate {style} 1")
        making = await member.expect(f"Making 1 portrait in {style}")
        await member.expect_edit(making, "Done.", within=20)
    group_alice.say("/generate cyberpunk 1")
    await group_alice.expect("This group has used its 2 portrait runs for today.")
    assert len([c for c in _gpu(bot).calls if c.startswith("generate:")]) == 2


# --------------------------------------------------------------------------------- the done marker
async def test_a_failed_job_run_again_resends_its_outcome_and_does_no_work(
    bot: Harness, alice: TgUser, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Bug it catches: a job whose run already failed started from scratch when it is executed again
    (arq runs a job at least once) instead of finding its done marker (``runs/{run_id}/outcome.json``)
    and sending the stored outcome again."""
    caplog.set_level(logging.INFO, logger="facechain")
    gpu = _gpu(bot)
    await _queue_training(alice, [*face_photos(2), not_a_face()])
    await alice.expect("I could only use 2 photos; I need at least 3.", within=20)
    (call,) = gpu.calls
    (request,) = gpu.requests
    shown = len(alice.replies)

    # The same job once more, as arq does after a lost acknowledgement or a worker restart.
    redis = await create_redis(redis_url)
    try:
        await ArqJobQueue(redis).submit(request, attempt=2)
    finally:
        await redis.aclose()
    resent = f"outcome for run {request.run_id} already delivered"
    await bot.api.wait_for(lambda: resent in caplog.text, 20, "the stored outcome to reach the bot again")
    assert gpu.calls == [call], "the stage did not run a second time"
    alice.say("/status")
    await alice.expect("Face model:")
    assert len(alice.replies) == shown + 1, "the user was not told twice"
