"""The conversation flow, as tables of state × event × facts → mode, effects and what the user reads."""

from __future__ import annotations

import copy
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest

from bot.core import effects as fx
from bot.core import events as ev
from bot.core.flow import ADMIN, BUTTONS, COMMANDS, MAX_STYLE_BUTTONS, Decision, decide
from bot.core.limits import Limits
from bot.core.replies import MAX_BUTTON_DATA, Button, EditProgress, Photos, ProgressMessage, Text
from bot.core.state import Facts, Mode, ModelState, RunInfo, StyleInfo, UserState
from pipeline.jobs import (
    ErrorCode,
    GenerateOutcome,
    PhotoRejection,
    Portrait,
    Progress,
    RejectReason,
    Stage,
    Subject,
    TrainOutcome,
)

RUN = "run_0001abcd"
GEN = "run_0002abcd"
STYLES = (
    StyleInfo("studio", "Clean studio portrait", builtin=True),
    StyleInfo("business_suit", "Suit and tie", builtin=True),
)
ALL_STYLES = (*STYLES, StyleInfo("vintage", "Old film", builtin=True), StyleInfo("noir", "Added here"))
#: Styles of a community whose names read like a count, or like another style and a count.
ODD_NAMES_STYLES = (*STYLES, StyleInfo("1920"), StyleInfo("noir"), StyleInfo("noir2"))
#: A ready user in a private chat with five photos in the open set (used when the mode collects).
BASE = Facts(
    private=True,
    model=ModelState.READY,
    has_ready_model=True,
    photo_count=5,
    styles=STYLES,
    all_styles=ALL_STYLES,
)
GROUP = replace(BASE, private=False, community="guild:1")
ODD_NAMES = replace(GROUP, styles=ODD_NAMES_STYLES, all_styles=ODD_NAMES_STYLES)
ADMIN_HERE = replace(GROUP, is_admin=True)
NO_MODEL = replace(BASE, model=ModelState.NONE, has_ready_model=False)
TRAINING = replace(NO_MODEL, model=ModelState.TRAINING, active_runs=(RunInfo(RUN, "train", "running", 0.45),))

IDLE = UserState()
COLLECTING = UserState(mode=Mode.COLLECTING)
ASKING = UserState(mode=Mode.ASKING_SUBJECT)
CONFIRMING = UserState(mode=Mode.CONFIRMING_FORGET, resume=Mode.COLLECTING)
STATES = {
    Mode.IDLE: IDLE,
    Mode.COLLECTING: COLLECTING,
    Mode.ASKING_SUBJECT: ASKING,
    Mode.CONFIRMING_FORGET: CONFIRMING,
}


def jpeg(ref: str = "f", size: int = 1000, name: str | None = "me.jpg") -> ev.OfferedFile:
    return ev.OfferedFile(ref, size, "image/jpeg", name)


def text_of(decision: Decision) -> str:
    """Everything the user reads, lower-cased, for phrase checks."""
    parts: list[str] = []
    for reply in decision.replies:
        match reply:
            case Text(text=text) | ProgressMessage(text=text) | EditProgress(text=text):
                parts.append(text)
            case Photos(caption=caption):
                parts.append(caption)
    return "\n".join(parts).casefold()


def buttons_of(decision: Decision) -> tuple[Button, ...]:
    found: list[Button] = []
    for reply in decision.replies:
        if isinstance(reply, Text | Photos | ProgressMessage):
            found.extend(reply.buttons)
    return tuple(found)


def matches(effects: tuple[fx.Effect, ...], expected: tuple[type[Any] | fx.Effect, ...]) -> bool:
    """Effects equal ``expected``, where a type in ``expected`` stands for any effect of that type."""
    if len(effects) != len(expected):
        return False
    return all(
        isinstance(e, want) if isinstance(want, type) else e == want for e, want in zip(effects, expected, strict=True)
    )


# ---------------------------------------------------------------------- every command in every mode
COMMAND_EVENTS: dict[str, ev.Command] = {
    "start": ev.Command("start"),
    "help": ev.Command("help"),
    "train": ev.Command("train"),
    "done": ev.Command("done"),
    "generate": ev.Command("generate", ("studio",)),
    "styles": ev.Command("styles"),
    "status": ev.Command("status"),
    "cancel": ev.Command("cancel"),
    "forget": ev.Command("forget"),
    "admin": ev.Command("admin", ("styles",)),
    "unknown": ev.Command("frobnicate"),
}

_I, _C, _A, _F = Mode.IDLE, Mode.COLLECTING, Mode.ASKING_SUBJECT, Mode.CONFIRMING_FORGET
_GEN: tuple[type[Any], ...] = (fx.StartGeneration,)

#: (command, mode before) → (mode after, effects, a phrase of the reply or None for no reply at all).
#: The CONFIRMING_FORGET rows start from resume=COLLECTING: another command drops the question.
PRIVATE_TABLE: dict[tuple[str, Mode], tuple[Mode, tuple[type[Any], ...], str | None]] = {
    ("start", _I): (_I, (), "selfies"),
    ("start", _C): (_C, (), "selfies"),
    ("start", _A): (_A, (), "selfies"),
    ("start", _F): (_C, (), "selfies"),
    ("help", _I): (_I, (), "/generate"),
    ("help", _C): (_C, (), "/generate"),
    ("help", _A): (_A, (), "/generate"),
    ("help", _F): (_F, (), "/generate"),
    ("train", _I): (_C, (fx.StartCollecting,), "tips"),
    ("train", _C): (_C, (), "already have a set open with 5"),
    ("train", _A): (_A, (), "who is in these photos"),
    ("train", _F): (_C, (), "already have a set open with 5"),
    ("done", _I): (_I, (), "no photo set"),
    ("done", _C): (_A, (), "who is in these photos"),
    ("done", _A): (_A, (), "who is in these photos"),
    ("done", _F): (_A, (), "who is in these photos"),
    ("generate", _I): (_I, _GEN, None),
    ("generate", _C): (_C, _GEN, None),
    ("generate", _A): (_A, _GEN, None),
    ("generate", _F): (_C, _GEN, None),
    ("styles", _I): (_I, (), "clean studio portrait"),
    ("styles", _C): (_C, (), "clean studio portrait"),
    ("styles", _A): (_A, (), "clean studio portrait"),
    ("styles", _F): (_C, (), "clean studio portrait"),
    ("status", _I): (_I, (), "face model: ready"),
    ("status", _C): (_C, (), "photo set: 5 of 10"),
    ("status", _A): (_A, (), "who is in the photos"),
    ("status", _F): (_C, (), "photo set: 5 of 10"),
    ("cancel", _I): (_I, (), "nothing to cancel"),
    ("cancel", _C): (_I, (fx.DiscardPhotos,), "threw away the 5 photos"),
    ("cancel", _A): (_C, (), "5 of 10 photos are kept"),
    ("cancel", _F): (_C, (), "nothing was deleted"),
    ("forget", _I): (_F, (), "can't be undone"),
    ("forget", _C): (_F, (), "can't be undone"),
    ("forget", _A): (_F, (), "can't be undone"),
    ("forget", _F): (_F, (), "can't be undone"),
    ("admin", _I): (_I, (), "group or server"),
    ("admin", _C): (_C, (), "group or server"),
    ("admin", _A): (_A, (), "group or server"),
    ("admin", _F): (_C, (), "group or server"),
    ("unknown", _I): (_I, (), "don't know /frobnicate"),
    ("unknown", _C): (_C, (), "don't know /frobnicate"),
    ("unknown", _A): (_A, (), "don't know /frobnicate"),
    ("unknown", _F): (_F, (), "don't know /frobnicate"),
}


def test_tables_cover_every_command_in_every_mode() -> None:
    assert set(COMMAND_EVENTS) == {*COMMANDS, "unknown"}
    assert set(PRIVATE_TABLE) == set(itertools.product(COMMAND_EVENTS, Mode))


@pytest.mark.parametrize(("command", "mode"), sorted(PRIVATE_TABLE), ids=lambda v: str(v))
def test_every_command_in_every_mode(command: str, mode: Mode) -> None:
    want_mode, want_effects, phrase = PRIVATE_TABLE[command, mode]
    decision = decide(STATES[mode], COMMAND_EVENTS[command], BASE)
    assert decision.state.mode is want_mode
    assert matches(decision.effects, want_effects), decision.effects
    if phrase is None:
        assert decision.replies == ()
    else:
        assert len(decision.replies) == 1
        assert phrase in text_of(decision)


@pytest.mark.parametrize("mode", list(Mode))
def test_forget_remembers_where_to_return(mode: Mode) -> None:
    state = STATES[mode]
    decision = decide(state, ev.Command("forget"), BASE)
    expected = state.resume if mode is Mode.CONFIRMING_FORGET else mode
    assert decision.state == UserState(mode=Mode.CONFIRMING_FORGET, resume=expected)
    assert {b.data for b in buttons_of(decision)} == {"forget:yes", "forget:no"}


@pytest.mark.parametrize(("command", "mode"), list(itertools.product(COMMAND_EVENTS, Mode)), ids=lambda v: str(v))
def test_group_commands_never_collect_photos(command: str, mode: Mode) -> None:
    state = STATES[mode]
    decision = decide(state, COMMAND_EVENTS[command], GROUP)
    assert not any(isinstance(e, fx.StartCollecting | fx.SavePhotos | fx.StartTraining) for e in decision.effects)
    if state.mode is Mode.IDLE:
        assert decision.state.mode in (Mode.IDLE, Mode.CONFIRMING_FORGET)
    if command == "unknown":
        assert decision.replies == ()
    # Personal answers in a group are shown only to the asker.
    if command in ("status", "forget", "train", "done", "admin"):
        assert all(r.private for r in decision.replies if isinstance(r, Text))


# ----------------------------------------------------------------------------- hand-written rows
@dataclass(frozen=True)
class Row:
    state: UserState
    event: ev.Event
    facts: Facts
    mode: Mode
    effects: tuple[type[Any] | fx.Effect, ...]
    #: A phrase of the replies (lower case); None: no reply at all.
    says: str | None
    replies: int | None = None
    not_says: str | None = None


RowTest = Callable[[Row], None]


def rows(**cases: Row) -> Callable[[RowTest], RowTest]:
    """Parametrize a test over named rows (the names become the test ids)."""
    mark = pytest.mark.parametrize("row", [pytest.param(r, id=name) for name, r in cases.items()])

    def apply(test: RowTest) -> RowTest:
        marked: RowTest = mark(test)
        return marked

    return apply


def check(row: Row) -> Decision:
    decision = decide(row.state, row.event, row.facts)
    assert decision.state.mode is row.mode
    assert matches(decision.effects, row.effects), decision.effects
    if row.says is None:
        assert decision.replies == ()
    else:
        assert row.says in text_of(decision), text_of(decision)
    if row.replies is not None:
        assert len(decision.replies) == row.replies
    if row.not_says is not None:
        assert row.not_says not in text_of(decision)
    return decision


HEIC = ev.OfferedFile("h", 1000, "image/heic", "IMG_0001.HEIC")
HUGE = ev.OfferedFile("x", 30 * 1024 * 1024, "image/jpeg", "big.jpg")
PDF = ev.OfferedFile("p", 1000, "application/pdf", "cv.pdf")
TELEGRAM_PHOTO = ev.OfferedFile("tg", 90_000, None, None, compressed=True)


@rows(
    photos_beside_a_ready_model_say_they_start_a_new_one=Row(
        IDLE,
        ev.PhotosOffered((jpeg(),)),
        BASE,
        _C,
        (fx.StartCollecting(), fx.SavePhotos((jpeg(),), (1,))),
        "these photos start a new face model",
        replies=1,
    ),
    first_photos_start_a_set=Row(
        IDLE, ev.PhotosOffered((jpeg(),)), NO_MODEL, _C, (fx.StartCollecting(), fx.SavePhotos((jpeg(),), (1,))), None
    ),
    photos_while_training=Row(IDLE, ev.PhotosOffered((jpeg(),)), TRAINING, _I, (), "training"),
    album_one_reply_for_refusals=Row(
        COLLECTING,
        ev.PhotosOffered((jpeg("a"), HEIC, HUGE, jpeg("b"))),
        BASE,
        _C,
        (fx.SavePhotos((jpeg("a"), jpeg("b")), (1, 4)),),
        "photo 2 (img_0001.heic): heic isn't supported",
        replies=1,
    ),
    album_all_refused_lists_reasons=Row(
        COLLECTING,
        ev.PhotosOffered((HEIC, PDF, HUGE)),
        BASE,
        _C,
        (),
        "too large (the limit is 20 mb)",
        replies=1,
    ),
    unsupported_type=Row(
        COLLECTING, ev.PhotosOffered((PDF,)), BASE, _C, (), "photo 1 (cv.pdf): not a jpeg, png or webp"
    ),
    all_refused_opens_no_set=Row(IDLE, ev.PhotosOffered((HEIC,)), NO_MODEL, _I, (), "send it as a photo"),
    # A video while no set is open: no "send 3 more" for a set that was never opened.
    a_video_while_idle_says_what_is_taken=Row(
        IDLE, ev.PhotosOffered((PDF,)), BASE, _I, (), "i only take photos", not_says="more"
    ),
    set_fills_up=Row(
        COLLECTING,
        ev.PhotosOffered((jpeg("a"), jpeg("b"), jpeg("c"))),
        replace(BASE, photo_count=9),
        _C,
        (fx.SavePhotos((jpeg("a"),), (1,)),),
        "photo 2 (me.jpg): the set is already full",
        replies=1,
    ),
    full_set_refuses_everything=Row(
        COLLECTING, ev.PhotosOffered((jpeg(),)), replace(BASE, photo_count=10), _C, (), "/done", replies=1
    ),
    compressed_photo_without_type_is_taken=Row(
        COLLECTING, ev.PhotosOffered((TELEGRAM_PHOTO,)), BASE, _C, (fx.SavePhotos((TELEGRAM_PHOTO,), (1,)),), None
    ),
    photos_while_asking_go_back_to_collecting=Row(
        ASKING, ev.PhotosOffered((jpeg(),)), BASE, _C, (fx.SavePhotos,), None
    ),
    photos_drop_the_forget_question=Row(CONFIRMING, ev.PhotosOffered((jpeg(),)), BASE, _C, (fx.SavePhotos,), None),
    empty_album=Row(IDLE, ev.PhotosOffered(()), BASE, _I, (), None),
    group_photos_ignored=Row(IDLE, ev.PhotosOffered((jpeg(),)), GROUP, _I, (), None),
    group_photos_while_collecting=Row(COLLECTING, ev.PhotosOffered((jpeg(),)), GROUP, _C, (), "private chat"),
)
def test_photos_offered(row: Row) -> None:
    check(row)


def saved(*results: ev.SavedPhoto, total: int) -> ev.PhotosSaved:
    return ev.PhotosSaved(results, total)


OK = ev.SavedPhoto("f", stored=True)


def _too_large(bot_mb: int, says: str) -> Row:
    """A file the platform would not hand over (20 MB at most), where the bot takes ``bot_mb``."""
    refused = saved(ev.SavedPhoto("x", False, "too_large", limit=20 * 2**20), total=1)
    return Row(COLLECTING, refused, replace(BASE, limits=Limits(max_photo_bytes=bot_mb * 2**20)), _C, (), says)


@rows(
    count_and_rejections=Row(
        COLLECTING,
        saved(OK, ev.SavedPhoto("d", False, RejectReason.DUPLICATE), OK, OK, total=4),
        BASE,
        _C,
        (),
        "got 3 photos (4 of 10)",
        replies=1,
    ),
    rejection_in_plain_words=Row(
        COLLECTING,
        saved(OK, ev.SavedPhoto("d", False, "duplicate"), total=4),
        BASE,
        _C,
        (),
        "photo 2: the same as",
    ),
    # An album of HEIC (refused before download), a good photo and a broken one: the broken one is photo 3.
    rejection_named_by_its_place_in_the_album=Row(
        COLLECTING,
        saved(
            ev.SavedPhoto("b", True, filename="IMG_0002.jpg", number=2),
            ev.SavedPhoto("c", False, "not_an_image", filename="IMG_0003.jpg", number=3),
            total=1,
        ),
        BASE,
        _C,
        (),
        "photo 3 (img_0003.jpg): not an image",
    ),
    rejection_named_by_file=Row(
        COLLECTING,
        saved(OK, ev.SavedPhoto("d", False, "not_an_image", filename="scan.png"), total=1),
        BASE,
        _C,
        (),
        "photo 2 (scan.png): not an image",
    ),
    bot_side_reason=Row(
        COLLECTING, saved(ev.SavedPhoto("x", False, "set_full"), total=10), BASE, _C, (), "already full"
    ),
    too_few_so_far=Row(COLLECTING, saved(OK, OK, total=2), BASE, _C, (), "send 1 more"),
    enough_says_done=Row(COLLECTING, saved(OK, total=3), BASE, _C, (), "/done"),
    full_says_done=Row(COLLECTING, saved(OK, total=10), BASE, _C, (), "the most i can use"),
    nothing_stored=Row(
        COLLECTING, saved(ev.SavedPhoto("x", False, "not_an_image"), total=1), BASE, _C, (), "no new photos"
    ),
    # The platform hands over 20 MB: the user hears the lower of that and the bot's own limit.
    too_large_for_the_platform=_too_large(bot_mb=50, says="too large (the limit is 20 mb)"),
    too_large_for_the_bot=_too_large(bot_mb=10, says="too large (the limit is 10 mb)"),
)
def test_photos_saved(row: Row) -> None:
    check(row)


@rows(
    done_with_too_few=Row(COLLECTING, ev.Command("done"), replace(BASE, photo_count=2), _C, (), "send 1 more"),
    done_while_training=Row(IDLE, ev.Command("done"), TRAINING, _I, (), "training"),
    done_in_group=Row(COLLECTING, ev.Command("done"), GROUP, _C, (), "private chat"),
    train_restarts_empty_set=Row(
        COLLECTING, ev.Command("train"), replace(BASE, photo_count=0), _C, (fx.StartCollecting,), "tips"
    ),
    train_while_training=Row(IDLE, ev.Command("train"), TRAINING, _I, (), "/cancel"),
    train_in_group=Row(IDLE, ev.Command("train"), GROUP, _I, (), "private chat"),
    subject_starts_training=Row(
        ASKING, ev.ButtonPressed("subject", "woman"), BASE, _I, (fx.StartTraining(Subject.WOMAN),), None
    ),
    bad_subject_asks_again=Row(ASKING, ev.ButtonPressed("subject", "cat"), BASE, _A, (), "who is in these photos"),
    subject_after_the_fact=Row(IDLE, ev.ButtonPressed("subject", "man"), BASE, _I, (), "expired"),
    subject_after_forget_question=Row(
        UserState(Mode.CONFIRMING_FORGET, resume=Mode.ASKING_SUBJECT),
        ev.ButtonPressed("subject", "man"),
        BASE,
        _I,
        (fx.StartTraining(Subject.MAN),),
        None,
    ),
    unknown_button=Row(IDLE, ev.ButtonPressed("frob", "x"), BASE, _I, (), "doesn't work any more"),
    forget_yes=Row(CONFIRMING, ev.ButtonPressed("forget", "yes"), BASE, _I, (fx.ForgetUser(),), "everything"),
    forget_no=Row(CONFIRMING, ev.ButtonPressed("forget", "no"), BASE, _C, (), "nothing was deleted"),
    forget_button_expired=Row(IDLE, ev.ButtonPressed("forget", "yes"), BASE, _I, (), "expired"),
    forget_text_asks_for_a_button=Row(CONFIRMING, ev.TextMessage("yes"), BASE, _F, (), "tap a button"),
    cancel_runs=Row(IDLE, ev.Command("cancel"), TRAINING, _I, (fx.CancelRuns(),), None),
    cancel_an_empty_set=Row(
        COLLECTING,
        ev.Command("cancel"),
        replace(BASE, photo_count=0),
        _I,
        (fx.DiscardPhotos(),),
        "stopped collecting photos",
        not_says="0 photos",
    ),
    # The photo set belongs to the private chat: /cancel in a group stops runs and keeps the set.
    cancel_in_a_group_keeps_the_private_set=Row(
        COLLECTING, ev.Command("cancel"), GROUP, _C, (), "photo set (5 photos) is in our private chat"
    ),
    cancel_in_a_group_stops_runs_only=Row(
        ASKING,
        ev.Command("cancel"),
        replace(GROUP, active_runs=(RunInfo(GEN, "generate", "queued"),)),
        _A,
        (fx.CancelRuns(),),
        None,
    ),
    cancel_collecting_keeps_runs=Row(
        COLLECTING,
        ev.Command("cancel"),
        replace(BASE, active_runs=(RunInfo(GEN, "generate", "queued"),)),
        _I,
        (fx.DiscardPhotos(),),
        "running jobs continue",
    ),
    # A double /cancel during training: the second comes before the user read that the photos are kept.
    cancel_right_after_a_cancelled_training_keeps_the_set=Row(
        UserState(Mode.COLLECTING, kept_after_cancel=True), ev.Command("cancel"), BASE, _C, (), "send /cancel again"
    ),
    runs_cancelled=Row(IDLE, ev.RunsCancelled((RUN, GEN)), BASE, _I, (), "cancelling 2 jobs", replies=3),
    # Members of a community asked at the same moment: the service found the limit used up when creating.
    community_quota_reached_late=Row(
        IDLE, ev.CommunityQuotaReached(1), GROUP, _I, (), "this group has used its 1 portrait run", replies=1
    ),
    runs_forgotten=Row(
        IDLE,
        ev.RunsForgotten(((RUN, "train"), (GEN, "generate"))),
        BASE,
        _I,
        (),
        "training stopped.\nstopped.",
        replies=2,
    ),
    # Redis down at the subject press: nothing started, the question comes back so one press retries.
    queue_busy_train=Row(IDLE, ev.QueueUnavailable("train"), BASE, _A, (), "try again shortly", replies=1),
    queue_busy_generate=Row(IDLE, ev.QueueUnavailable("generate"), BASE, _I, (), "busy right now", replies=1),
    queue_busy_while_asked_to_forget=Row(CONFIRMING, ev.QueueUnavailable("generate"), BASE, _F, (), "try again"),
    run_restarted=Row(IDLE, ev.RunRestarted(RUN, 2, 3), TRAINING, _I, (), "started again (try 2 of 3)", replies=1),
    status_shows_runs=Row(
        IDLE,
        ev.Command("status"),
        replace(
            TRAINING,
            active_runs=(
                RunInfo(RUN, "train", "running", 0.45),
                RunInfo(GEN, "generate", "queued", queue_position=3, style="studio"),
            ),
        ),
        _I,
        (),
        "training: running, 45%\nportraits (studio): waiting, number 3 in line",
    ),
    status_quota=Row(IDLE, ev.Command("status"), replace(BASE, user_quota=5, generations_today=2), _I, (), "2 of 5"),
    # Training again: the model made before stays usable whatever becomes of the new one.
    status_while_a_new_model_trains=Row(
        IDLE, ev.Command("status"), replace(BASE, model=ModelState.TRAINING), _I, (), "ready (send /generate); a new"
    ),
    status_after_a_new_model_failed=Row(
        IDLE, ev.Command("status"), replace(BASE, model=ModelState.FAILED), _I, (), "ready (send /generate); training"
    ),
    status_after_a_new_model_was_cancelled=Row(
        IDLE, ev.Command("status"), replace(BASE, model=ModelState.NONE), _I, (), "face model: ready", not_says="none"
    ),
    status_of_a_first_failed_training=Row(
        IDLE, ev.Command("status"), replace(NO_MODEL, model=ModelState.FAILED), _I, (), "the last training failed"
    ),
    styles_hint_for_admins=Row(IDLE, ev.Command("styles"), ADMIN_HERE, _I, (), "/admin styles"),
    styles_no_hint_for_members=Row(IDLE, ev.Command("styles"), GROUP, _I, (), "suit and tie", not_says="/admin"),
    text_while_collecting=Row(COLLECTING, ev.TextMessage("hi"), BASE, _C, (), "5 of 10 so far"),
    text_while_asking=Row(ASKING, ev.TextMessage("me"), BASE, _A, (), "who is in these photos"),
    text_idle=Row(IDLE, ev.TextMessage("hello"), NO_MODEL, _I, (), "/train"),
    text_in_group=Row(IDLE, ev.TextMessage("hello"), GROUP, _I, (), None),
    help_for_admin=Row(IDLE, ev.Command("help"), ADMIN_HERE, _I, (), "/admin"),
)
def test_conversation(row: Row) -> None:
    check(row)


def test_the_count_may_come_before_the_style() -> None:
    decision = decide(IDLE, ev.Command("generate", ("3", "business", "suit")), BASE)
    assert decision.effects == (fx.StartGeneration("business_suit", 3),)


def test_subject_buttons_offer_every_subject() -> None:
    decision = decide(COLLECTING, ev.Command("done"), BASE)
    assert [b.data for b in buttons_of(decision)] == [f"subject:{s.value}" for s in Subject]


# ------------------------------------------------------------------------------------------ generate
@rows(
    style_and_count=Row(
        IDLE, ev.Command("generate", ("studio", "3")), BASE, _I, (fx.StartGeneration("studio", 3),), None
    ),
    default_count=Row(IDLE, ev.Command("generate", ("Studio",)), BASE, _I, (fx.StartGeneration("studio", 4),), None),
    spaced_style_name=Row(
        IDLE,
        ev.Command("generate", ("business", "suit", "2")),
        BASE,
        _I,
        (fx.StartGeneration("business_suit", 2),),
        None,
    ),
    count_too_big=Row(IDLE, ev.Command("generate", ("studio", "9")), BASE, _I, (), "from 1 to 4"),
    count_zero=Row(IDLE, ev.Command("generate", ("studio", "0")), BASE, _I, (), "from 1 to 4"),
    count_not_a_number=Row(IDLE, ev.Command("generate", ("studio", "many")), BASE, _I, (), "from 1 to 4"),
    no_style_asks=Row(IDLE, ev.Command("generate"), BASE, _I, (), "pick a style"),
    count_only_asks_and_says_so=Row(IDLE, ev.Command("generate", ("2",)), BASE, _I, (), "the buttons make 4; for 2"),
    count_only_out_of_range=Row(IDLE, ev.Command("generate", ("7",)), BASE, _I, (), "from 1 to 4"),
    # A community's styles named like numbers, or like another style and a count.
    style_named_by_digits_pressed=Row(
        IDLE, ev.ButtonPressed("style", "1920"), ODD_NAMES, _I, (fx.StartGeneration("1920", 4),), None
    ),
    style_named_by_digits_typed=Row(
        IDLE, ev.Command("generate", ("1920",)), ODD_NAMES, _I, (fx.StartGeneration("1920", 4),), None
    ),
    exact_name_and_count_win_over_a_name_alike=Row(
        IDLE, ev.Command("generate", ("noir", "2")), ODD_NAMES, _I, (fx.StartGeneration("noir", 2),), None
    ),
    the_other_name_still_reached=Row(
        IDLE, ev.Command("generate", ("noir2",)), ODD_NAMES, _I, (fx.StartGeneration("noir2", 4),), None
    ),
    # A double tap on the picker: the second press makes no second run.
    picker_pressed_again_while_its_run_waits=Row(
        IDLE,
        ev.ButtonPressed("style", "studio"),
        replace(BASE, active_runs=(RunInfo(GEN, "generate", "queued", style="studio"),)),
        _I,
        (),
        "already on their way",
    ),
    more_pressed_while_a_run_waits=Row(
        IDLE,
        ev.ButtonPressed("more", "studio"),
        replace(BASE, active_runs=(RunInfo(GEN, "generate", "queued", style="studio"),)),
        _I,
        (fx.StartGeneration("studio", 4),),
        None,
    ),
    count_only_huge=Row(IDLE, ev.Command("generate", ("1000000",)), BASE, _I, (), "from 1 to 4"),
    count_at_the_limit=Row(
        IDLE, ev.Command("generate", ("studio", "4")), BASE, _I, (fx.StartGeneration("studio", 4),), None
    ),
    disabled_style=Row(IDLE, ev.Command("generate", ("vintage",)), BASE, _I, (), "switched off here"),
    unknown_style_lists_enabled=Row(
        IDLE,
        ev.Command("generate", ("nope",)),
        BASE,
        _I,
        (),
        'don\'t know the style "nope". styles here: studio',
    ),
    no_styles_at_all=Row(IDLE, ev.Command("generate"), replace(BASE, styles=()), _I, (), "no styles"),
    still_training=Row(IDLE, ev.Command("generate", ("studio",)), TRAINING, _I, (), "still training"),
    no_model=Row(IDLE, ev.Command("generate", ("studio",)), NO_MODEL, _I, (), "/train"),
    failed_model=Row(IDLE, ev.Command("generate"), replace(NO_MODEL, model=ModelState.FAILED), _I, (), "didn't work"),
    ready_model_while_retraining=Row(
        IDLE,
        ev.Command("generate", ("studio",)),
        replace(TRAINING, has_ready_model=True),
        _I,
        (fx.StartGeneration("studio", 4),),
        None,
    ),
    user_quota=Row(
        IDLE,
        ev.Command("generate", ("studio",)),
        replace(BASE, user_quota=3, generations_today=3),
        _I,
        (),
        "resets tomorrow (midnight utc)",
    ),
    community_quota=Row(
        IDLE,
        ev.Command("generate"),
        replace(GROUP, community_quota=10, community_generations_today=12),
        _I,
        (),
        "this group has used its 10",
    ),
    quota_left=Row(
        IDLE,
        ev.Command("generate", ("studio",)),
        replace(BASE, user_quota=3, generations_today=2),
        _I,
        (fx.StartGeneration,),
        None,
    ),
    unlimited=Row(IDLE, ev.Command("generate", ("studio",)), replace(BASE, generations_today=999), _I, _GEN, None),
    in_a_group=Row(IDLE, ev.Command("generate", ("studio",)), GROUP, _I, (fx.StartGeneration("studio", 4),), None),
    style_button=Row(
        IDLE, ev.ButtonPressed("style", "business_suit"), BASE, _I, (fx.StartGeneration("business_suit", 4),), None
    ),
    more_button=Row(IDLE, ev.ButtonPressed("more", "studio"), BASE, _I, (fx.StartGeneration("studio", 4),), None),
    another_button=Row(IDLE, ev.ButtonPressed("another"), BASE, _I, (), "pick a style"),
    button_with_quota_used=Row(
        IDLE,
        ev.ButtonPressed("more", "studio"),
        replace(BASE, user_quota=1, generations_today=1),
        _I,
        (),
        "resets",
    ),
)
def test_generate(row: Row) -> None:
    check(row)


def test_style_picker_shows_at_most_eight_buttons() -> None:
    many = tuple(StyleInfo(f"style{i}") for i in range(12))
    decision = decide(IDLE, ev.Command("generate"), replace(BASE, styles=many, all_styles=many))
    assert [b.data for b in buttons_of(decision)] == [f"style:style{i}" for i in range(MAX_STYLE_BUTTONS)]
    assert "/styles" in text_of(decision)


# -------------------------------------------------------------------------------- follow-up events
def progress(stage: Stage, fraction: float = 0.0, position: int | None = None) -> ev.JobProgress:
    return ev.JobProgress(Progress(run_id=RUN, stage=stage, fraction=fraction), position)


@pytest.mark.parametrize(
    ("event", "phrase"),
    [
        (progress(Stage.QUEUED, position=1), "next in line"),
        (progress(Stage.QUEUED, position=4), "number 4 in line"),
        (progress(Stage.PREPARING), "preparing your photos"),
        (progress(Stage.TRAINING, 0.5), "▓▓▓▓▓░░░░░ 50%"),
        (progress(Stage.SAVING), "saving"),
        (progress(Stage.GENERATING, 0.25), "painting"),
        (progress(Stage.RANKING), "best likenesses"),
    ],
)
def test_progress_edits_the_run_message(event: ev.JobProgress, phrase: str) -> None:
    decision = decide(IDLE, event, BASE)
    assert decision.state == IDLE
    assert decision.effects == ()
    (edit,) = decision.replies
    assert isinstance(edit, EditProgress)
    assert edit.run_id == RUN
    assert not edit.final
    assert phrase in edit.text.casefold()


@pytest.mark.parametrize(
    ("event", "phrase"),
    [
        (ev.RunQueued(RUN, "train", queue_position=2), "training queued (number 2 in line)"),
        (ev.RunQueued(RUN, "train"), "a few minutes"),
        (ev.RunQueued(GEN, "generate", 1, "studio", 3), "making 3 portraits in studio (next in line)"),
    ],
)
def test_run_queued_opens_a_progress_message(event: ev.RunQueued, phrase: str) -> None:
    decision = decide(IDLE, event, BASE)
    (message,) = decision.replies
    assert isinstance(message, ProgressMessage)
    assert message.run_id == event.run_id
    assert phrase in message.text.casefold()


def train_outcome(**fields: Any) -> TrainOutcome:
    return TrainOutcome(run_id=RUN, **fields)


def generate_outcome(**fields: Any) -> GenerateOutcome:
    return GenerateOutcome(run_id=GEN, **{"style": "studio", **fields})


PHOTO_KEYS = tuple(f"photos/u1/s1/{i}.jpg" for i in range(1, 6))
KEYED = replace(BASE, photo_keys=PHOTO_KEYS)
TOO_FEW = train_outcome(
    error=ErrorCode.TOO_FEW_PHOTOS,
    used_photos=list(PHOTO_KEYS[2:4]),
    rejections=[
        PhotoRejection(photo_key=PHOTO_KEYS[1], reason=RejectReason.NO_FACE),
        PhotoRejection(photo_key=PHOTO_KEYS[4], reason=RejectReason.SEVERAL_FACES),
        PhotoRejection(photo_key=PHOTO_KEYS[0], reason=RejectReason.TOO_BLURRY),
    ],
)


@rows(
    model_ready=Row(IDLE, ev.JobFinished(train_outcome(lora_key="runs/x/lora.safetensors")), BASE, _I, (), "ready"),
    too_few_photos=Row(
        IDLE,
        ev.JobFinished(TOO_FEW),
        KEYED,
        _C,
        (fx.ReopenSet((PHOTO_KEYS[1], PHOTO_KEYS[4], PHOTO_KEYS[0])),),
        "photo 2: no face found\nphoto 5: more than one face",
        replies=2,
    ),
    too_few_counts_usable=Row(IDLE, ev.JobFinished(TOO_FEW), KEYED, _C, (fx.ReopenSet,), "only use 2 photos"),
    too_few_then_done=Row(IDLE, ev.JobFinished(TOO_FEW), KEYED, _C, (fx.ReopenSet,), "then /done again"),
    no_face_without_numbering=Row(
        IDLE,
        ev.JobFinished(
            train_outcome(
                error=ErrorCode.NO_FACE,
                rejections=[PhotoRejection(photo_key="photos/a.jpg", reason=RejectReason.NO_FACE)],
            )
        ),
        BASE,
        _C,
        (fx.ReopenSet(("photos/a.jpg",)),),
        "a photo: no face found",
    ),
    needs_subject=Row(
        IDLE,
        ev.JobFinished(train_outcome(error=ErrorCode.INTERNAL, needs_subject=True)),
        BASE,
        _A,
        (fx.ReopenSet(()),),
        "who is in these photos",
    ),
    cancelled_keeps_photos=Row(
        IDLE,
        ev.JobFinished(train_outcome(error=ErrorCode.CANCELLED)),
        BASE,
        _C,
        (fx.ReopenSet(()),),
        "training cancelled. your photos are kept",
    ),
    failure_during_forget_question=Row(
        UserState(Mode.CONFIRMING_FORGET),
        ev.JobFinished(train_outcome(error=ErrorCode.TIMEOUT)),
        BASE,
        _F,
        (fx.ReopenSet(()),),
        "photos are kept",
    ),
    portraits=Row(
        IDLE,
        ev.JobFinished(
            generate_outcome(
                portraits=[
                    Portrait(key="runs/g/1.png", seed=1, score=0.61),
                    Portrait(key="runs/g/2.png", seed=2, score=0.82),
                ]
            )
        ),
        BASE,
        _I,
        (),
        "studio · best match 0.82",
        replies=2,
    ),
    portraits_without_scores=Row(
        IDLE,
        ev.JobFinished(generate_outcome(portraits=[Portrait(key="runs/g/1.png", seed=1)], blocked=2)),
        BASE,
        _I,
        (),
        "2 held back by the safety filter",
        not_says="best match",
    ),
    no_usable_portrait=Row(
        IDLE,
        ev.JobFinished(generate_outcome(error=ErrorCode.NO_USABLE_PORTRAIT, blocked=1)),
        BASE,
        _I,
        (),
        "didn't count against your daily limit",
    ),
    generate_cancelled=Row(
        IDLE, ev.JobFinished(generate_outcome(error=ErrorCode.CANCELLED)), BASE, _I, (), "portraits cancelled"
    ),
)
def test_job_finished(row: Row) -> None:
    decision = check(row)
    edits = [r for r in decision.replies if isinstance(r, EditProgress)]
    assert len(edits) == 1
    assert edits[0].final


@pytest.mark.parametrize(
    "code",
    [
        ErrorCode.OUT_OF_MEMORY,
        ErrorCode.TIMEOUT,
        ErrorCode.INTERNAL,
        ErrorCode.MODEL_MISSING,
        ErrorCode.BAD_PAYLOAD,
    ],
)
def test_training_failure_keeps_photos_for_a_retry(code: ErrorCode) -> None:
    decision = check(Row(IDLE, ev.JobFinished(train_outcome(error=code)), BASE, _C, (fx.ReopenSet(()),), "sorry"))
    assert "/done to try again" in text_of(decision)


@pytest.mark.parametrize(
    "code", [ErrorCode.OUT_OF_MEMORY, ErrorCode.TIMEOUT, ErrorCode.INTERNAL, ErrorCode.MODEL_MISSING]
)
def test_generation_failure_is_not_charged(code: ErrorCode) -> None:
    decision = check(Row(IDLE, ev.JobFinished(generate_outcome(error=code)), BASE, _I, (), "sorry"))
    assert "didn't count against your daily limit" in text_of(decision)


def test_a_style_whose_lora_is_missing_is_named_with_the_fix_and_not_charged() -> None:
    missing = ev.JobFinished(generate_outcome(error=ErrorCode.MODEL_MISSING, style="vintage"))
    decision = check(Row(IDLE, missing, BASE, _I, (), 'the style "vintage"', not_says="/admin"))
    said = text_of(decision)
    assert "facechain-bot models fetch" in said and "didn't count against your daily limit" in said
    assert [b.action for b in buttons_of(decision)] == ["another"]

    gone = ev.JobFinished(generate_outcome(error=ErrorCode.MODEL_MISSING, style="noir"))
    decision = check(Row(IDLE, gone, GROUP, _I, (), 'the style "noir"', not_says="models fetch"))
    assert "/admin addstyle" in text_of(decision) and "didn't count" in text_of(decision)

    # An admin removed the style while the run waited: it is no longer known here at all.
    removed = ev.JobFinished(generate_outcome(error=ErrorCode.MODEL_MISSING, style="film_noir"))
    decision = check(Row(IDLE, removed, GROUP, _I, (), "removed or replaced", not_says="models fetch"))


def test_ready_model_offers_styles() -> None:
    many = tuple(StyleInfo(f"s{i}") for i in range(11))
    decision = decide(IDLE, ev.JobFinished(train_outcome(lora_key="k/l.safetensors")), replace(BASE, styles=many))
    assert len(buttons_of(decision)) == MAX_STYLE_BUTTONS
    assert all(b.action == "style" for b in buttons_of(decision))
    assert "/generate" in text_of(decision)


def test_portraits_come_with_more_and_another_buttons() -> None:
    outcome = generate_outcome(portraits=[Portrait(key="runs/g/1.png", seed=1)])
    decision = decide(IDLE, ev.JobFinished(outcome), BASE)
    photos = next(r for r in decision.replies if isinstance(r, Photos))
    assert photos.keys == ("runs/g/1.png",)
    assert [b.data for b in photos.buttons] == ["more:studio", "another:"]


def test_a_communitys_style_buttons_name_it_for_a_press_in_a_private_chat() -> None:
    outcome = generate_outcome(portraits=[Portrait(key="runs/g/1.png", seed=1)])
    photos = next(r for r in decide(IDLE, ev.JobFinished(outcome), GROUP).replies if isinstance(r, Photos))
    assert [b.data for b in photos.buttons] == ["more:studio@guild:1", "another:@guild:1"]
    picker = decide(IDLE, ev.Command("generate"), GROUP)
    assert {b.community for b in buttons_of(picker)} == {"guild:1"}
    assert Button.parse("more:studio@guild:1") == ("more", "studio", "guild:1")
    assert Button.parse("more:studio") == ("more", "studio", None), "buttons sent before this still work"


# --------------------------------------------------------------------------------------------- admin
def admin(*args: str, attachment: ev.OfferedFile | None = None) -> ev.Command:
    return ev.Command("admin", args, text=" ".join(args), attachment=attachment)


LORA = ev.OfferedFile("lora", 5_000_000, "application/octet-stream", "noir.safetensors")


@rows(
    private_chat=Row(IDLE, admin("styles"), BASE, _I, (), "group or server"),
    not_an_admin=Row(IDLE, admin("enable", "vintage"), GROUP, _I, (), "only admins", not_says="addstyle"),
    usage=Row(IDLE, admin(), ADMIN_HERE, _I, (), "/admin addstyle"),
    unknown_subcommand=Row(IDLE, admin("frob"), ADMIN_HERE, _I, (), "admin commands"),
    list_styles=Row(IDLE, admin("styles"), ADMIN_HERE, _I, (), "vintage: off"),
    list_styles_with_the_settings=Row(
        IDLE,
        admin("styles"),
        replace(ADMIN_HERE, user_quota=5, results_to="direct", nsfw_allowed=True),
        _I,
        (),
        "settings here:\n- each member: 5 portrait runs a day (/admin quota user)\n- everyone together: no daily limit"
        " (/admin quota group)\n- portraits: sent to members privately (/admin results)\n- nsfw results: allowed",
    ),
    list_styles_on=Row(IDLE, admin("styles"), ADMIN_HERE, _I, (), "studio: on"),
    enable=Row(IDLE, admin("enable", "vintage"), ADMIN_HERE, _I, (fx.SetStyleEnabled("vintage", True),), "now on"),
    disable=Row(IDLE, admin("disable", "Studio"), ADMIN_HERE, _I, (fx.SetStyleEnabled("studio", False),), "now off"),
    enable_unknown=Row(IDLE, admin("enable", "nope"), ADMIN_HERE, _I, (), 'no style "nope"'),
    enable_without_name=Row(IDLE, admin("enable"), ADMIN_HERE, _I, (), "usage: /admin enable"),
    addstyle=Row(
        IDLE,
        ev.Command(
            "admin",
            ("addstyle", "film_noir", "black", "and", "white,"),
            text="addstyle film_noir black and  white,",
        ),
        ADMIN_HERE,
        _I,
        (fx.AddStyle("film_noir", "black and  white,"),),
        None,
    ),
    addstyle_lowercases=Row(
        IDLE, admin("addstyle", "Noir2", "dark"), ADMIN_HERE, _I, (fx.AddStyle("noir2", "dark"),), None
    ),
    addstyle_with_lora=Row(
        IDLE,
        admin("addstyle", "noir", "dark", attachment=LORA),
        ADMIN_HERE,
        _I,
        (fx.AddStyle("noir", "dark", LORA),),
        None,
    ),
    addstyle_bad_name=Row(IDLE, admin("addstyle", "film/noir", "dark"), ADMIN_HERE, _I, (), "1-32 characters"),
    addstyle_name_without_letter_or_digit=Row(
        IDLE, admin("addstyle", "-", "dark"), ADMIN_HERE, _I, (), "1-32 characters"
    ),
    addstyle_long_name=Row(IDLE, admin("addstyle", "n" * 33, "dark"), ADMIN_HERE, _I, (), "1-32 characters"),
    addstyle_no_prompt=Row(IDLE, admin("addstyle", "noir"), ADMIN_HERE, _I, (), "needs a prompt"),
    addstyle_no_name=Row(IDLE, admin("addstyle"), ADMIN_HERE, _I, (), "usage: /admin addstyle"),
    addstyle_prompt_too_long=Row(IDLE, admin("addstyle", "x", "a" * 2001), ADMIN_HERE, _I, (), "too long"),
    addstyle_builtin_name=Row(IDLE, admin("addstyle", "studio", "x"), ADMIN_HERE, _I, (), "built-in"),
    addstyle_same_name_replaces=Row(
        IDLE, admin("addstyle", "noir", "x"), ADMIN_HERE, _I, (fx.AddStyle("noir", "x"),), None
    ),
    addstyle_alike_name=Row(IDLE, admin("addstyle", "NO-IR", "x"), ADMIN_HERE, _I, (), "mixed up with the style noir"),
    addstyle_not_safetensors=Row(
        IDLE,
        admin("addstyle", "noir", "dark", attachment=ev.OfferedFile("b", 10, None, "noir.ckpt")),
        ADMIN_HERE,
        _I,
        (),
        ".safetensors",
    ),
    addstyle_too_large=Row(
        IDLE,
        admin("addstyle", "noir", "dark", attachment=replace(LORA, size=300 * 1024 * 1024)),
        ADMIN_HERE,
        _I,
        (),
        "too large (the limit is 256 mb)",
    ),
    removestyle=Row(IDLE, admin("removestyle", "noir"), ADMIN_HERE, _I, (fx.RemoveStyle("noir"),), "removed"),
    removestyle_builtin=Row(IDLE, admin("removestyle", "studio"), ADMIN_HERE, _I, (), "built in"),
    # Added before names had to start with a letter or digit: still found, so it can go.
    removestyle_oddly_named=Row(
        IDLE,
        admin("removestyle", "-"),
        replace(ADMIN_HERE, all_styles=(*ALL_STYLES, StyleInfo("-"))),
        _I,
        (fx.RemoveStyle("-"),),
        "removed",
    ),
    removestyle_unknown=Row(IDLE, admin("removestyle", "nope"), ADMIN_HERE, _I, (), 'no style "nope"'),
    quota_user=Row(IDLE, admin("quota", "user", "5"), ADMIN_HERE, _I, (fx.SetQuota("user", 5),), "5 portrait runs"),
    quota_group_off=Row(
        IDLE, admin("quota", "group", "off"), ADMIN_HERE, _I, (fx.SetQuota("group", None),), "no daily"
    ),
    # A member's limit "off" falls back to the operator's (Limits.daily_generations, 20 by default).
    quota_user_off=Row(
        IDLE,
        admin("quota", "user", "off"),
        ADMIN_HERE,
        _I,
        (fx.SetQuota("user", None),),
        "bot's own daily limit again: 20",
        not_says="no daily",
    ),
    quota_user_off_unlimited_bot=Row(
        IDLE,
        admin("quota", "user", "off"),
        replace(ADMIN_HERE, limits=Limits(daily_generations=None)),
        _I,
        (fx.SetQuota("user", None),),
        "no daily limit for each member",
    ),
    quota_zero=Row(IDLE, admin("quota", "user", "0"), ADMIN_HERE, _I, (fx.SetQuota("user", 0),), "switched off here"),
    quota_not_an_ascii_number=Row(IDLE, admin("quota", "user", "²"), ADMIN_HERE, _I, (), "usage: /admin quota"),
    quota_negative=Row(IDLE, admin("quota", "user", "-1"), ADMIN_HERE, _I, (), "usage: /admin quota"),
    quota_bad_scope=Row(IDLE, admin("quota", "world", "3"), ADMIN_HERE, _I, (), "usage: /admin quota"),
    results_direct=Row(
        IDLE,
        admin("results", "direct"),
        ADMIN_HERE,
        _I,
        (fx.SetCommunityOption("results_to", "direct"),),
        "privately",
    ),
    results_channel=Row(
        IDLE,
        admin("results", "channel"),
        ADMIN_HERE,
        _I,
        (fx.SetCommunityOption("results_to", "channel"),),
        "here",
    ),
    results_bad=Row(IDLE, admin("results", "moon"), ADMIN_HERE, _I, (), "usage: /admin results"),
    nsfw_on=Row(IDLE, admin("nsfw", "on"), ADMIN_HERE, _I, (fx.SetCommunityOption("nsfw", "on"),), "allowed here now"),
    nsfw_on_in_a_plain_channel=Row(
        IDLE,
        admin("nsfw", "on"),
        replace(ADMIN_HERE, age_restricted=False),
        _I,
        (fx.SetCommunityOption("nsfw", "on"),),
        "this channel isn't one, so they stay filtered here",
    ),
    nsfw_off=Row(IDLE, admin("nsfw", "OFF"), ADMIN_HERE, _I, (fx.SetCommunityOption("nsfw", "off"),), "blocked"),
    nsfw_bad=Row(IDLE, admin("nsfw"), ADMIN_HERE, _I, (), "usage: /admin nsfw"),
    style_added=Row(IDLE, ev.StyleAdded("noir"), ADMIN_HERE, _I, (), "style noir added"),
    style_replaced=Row(IDLE, ev.StyleAdded("noir", replaced=True), ADMIN_HERE, _I, (), "style noir replaced"),
    style_refused=Row(IDLE, ev.StyleAdded("noir", "bad_tensor_names"), ADMIN_HERE, _I, (), "tensor names"),
    style_exists=Row(IDLE, ev.StyleAdded("studio", "exists_builtin"), ADMIN_HERE, _I, (), "built-in"),
    style_odd_code=Row(IDLE, ev.StyleAdded("noir", "weird"), ADMIN_HERE, _I, (), "refused (weird)"),
    style_too_large_for_the_platform=Row(
        IDLE, ev.StyleAdded("noir", "too_large", 20 * 2**20), ADMIN_HERE, _I, (), "too large (the limit is 20 mb)"
    ),
)
def test_admin(row: Row) -> None:
    check(row)


def test_admin_table_is_complete() -> None:
    assert set(ADMIN) == {
        "styles",
        "enable",
        "disable",
        "addstyle",
        "removestyle",
        "quota",
        "results",
        "nsfw",
    }


# --------------------------------------------------------------------------------------- invariants
LONG = "x" * 70
LONG_STYLES = (StyleInfo(LONG), *STYLES)
FACT_VARIANTS = {
    "private": BASE,
    "group": GROUP,
    "admin": ADMIN_HERE,
    "no_model": NO_MODEL,
    "training": TRAINING,
    "long_style_names": replace(ADMIN_HERE, styles=LONG_STYLES, all_styles=LONG_STYLES),
    "long_style_private": replace(BASE, styles=LONG_STYLES, all_styles=LONG_STYLES),
}
EVENTS: list[ev.Event] = [
    *COMMAND_EVENTS.values(),
    ev.Command("generate"),
    ev.Command("generate", (LONG,)),
    ev.Command("admin", ("addstyle", "a", "b")),
    ev.Command("admin", ("removestyle", LONG)),
    ev.Command("admin", ("enable", LONG)),
    ev.PhotosOffered((jpeg(), HEIC, HUGE, PDF)),
    ev.PhotosOffered(()),
    saved(OK, ev.SavedPhoto("x", False, None), total=3),
    *(ev.ButtonPressed(action, value) for action in BUTTONS for value in ("", "yes", "no", "woman", "studio", LONG)),
    ev.TextMessage("hi"),
    ev.RunQueued(RUN, "train"),
    ev.RunQueued(GEN, "generate", 2, LONG, 4),
    progress(Stage.TRAINING, 1.0),
    ev.RunsCancelled(()),
    ev.QueueUnavailable("train"),
    ev.QueueUnavailable("generate"),
    ev.RunRestarted(RUN, 3, 3),
    ev.StyleAdded(LONG, "exists"),
    ev.JobFinished(TOO_FEW),
    ev.JobFinished(train_outcome(lora_key="k/l.safetensors")),
    ev.JobFinished(generate_outcome(portraits=[Portrait(key="k/1.png", seed=1)]), style=LONG),
    ev.JobFinished(GenerateOutcome(run_id=GEN, style=LONG, portraits=[Portrait(key="k/1.png", seed=1)])),
    ev.JobFinished(GenerateOutcome(run_id=GEN, style=LONG, error=ErrorCode.NO_USABLE_PORTRAIT)),
]


@pytest.mark.parametrize("facts", list(FACT_VARIANTS.values()), ids=list(FACT_VARIANTS))
@pytest.mark.parametrize("mode", list(Mode))
def test_every_reply_fits_the_platforms(facts: Facts, mode: Mode) -> None:
    """No event in any mode crashes, and every button's data fits Telegram's 64 bytes."""
    for event in EVENTS:
        decision = decide(STATES[mode], event, facts)
        for button in buttons_of(decision):
            assert len(button.data.encode()) <= MAX_BUTTON_DATA
            assert button.action in BUTTONS
            assert button.label
        for reply in decision.replies:
            if isinstance(reply, Text):
                assert reply.text.strip()
            if isinstance(reply, Text) and facts.private:
                assert not reply.private


def all_decisions(order: int = 1) -> list[str]:
    """Every (state, event) of the tables decided, in table order or reversed (``order=-1``), as text."""
    cases = [(state, event) for event in EVENTS for state in STATES.values()][::order]
    return [repr(decide(state, event, BASE)) for state, event in cases][::order]


def test_decide_depends_on_its_arguments_only() -> None:
    """No hidden state (the order of calls), no mutated input, no clock, randomness or hash order: the
    service may re-run an event after a crash and the user reads the same words."""
    before = copy.deepcopy((STATES, EVENTS, BASE))
    forward = all_decisions()
    assert all_decisions(order=-1) == forward, "an earlier call changed a later decision"
    assert before == (STATES, EVENTS, BASE), "decide changed its input"
    script = "from tests.core.test_flow import all_decisions; import json; print(json.dumps(all_decisions()))"
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        assert json.loads(done.stdout) == forward, f"another process (hash seed {seed}) decided differently"


def test_buttons_the_flow_makes_are_buttons_it_understands() -> None:
    """Pressing any button the flow shows is handled (never the "doesn't work" fallback)."""
    shown: set[tuple[str, str]] = set()
    for event in EVENTS:
        for state in STATES.values():
            shown.update((b.action, b.value) for b in buttons_of(decide(state, event, BASE)))
    assert {a for a, _ in shown} == set(BUTTONS)
    for action, value in shown:
        decision = decide(CONFIRMING if action == "forget" else ASKING, ev.ButtonPressed(action, value), BASE)
        assert "doesn't work any more" not in text_of(decision)


def test_bot_side_reasons_have_their_own_words() -> None:
    for reason in ev.BotRejectReason:
        decision = decide(COLLECTING, saved(ev.SavedPhoto("x", False, reason), total=3), BASE)
        assert "couldn't be used" not in text_of(decision), reason


@pytest.mark.parametrize(
    "phrase",
    [
        "3 to 10 photos",
        "a few minutes",
        "keep your photos and your face model until you send /forget",
        "/status",
    ],
)
def test_start_explains_what_where_and_what_is_kept(phrase: str) -> None:
    decision = decide(IDLE, ev.Command("start"), replace(BASE, limits=Limits(min_photos=3, max_photos=10)))
    assert phrase in text_of(decision)
    assert "\n\n" in text_of(decision)


# ------------------------------------------------------------------------------ limits at the boundary
#: Every limit is tried just below, exactly at and just above its value (the settings fill these in).
LIM = Limits()
MIN, MAX = LIM.min_photos, LIM.max_photos


def file_of(size: int) -> ev.OfferedFile:
    return jpeg("s", size=size)


def prompt_of(length: int) -> ev.Command:
    return admin("addstyle", "noir", "p" * length)


def lora_of(size: int) -> ev.Command:
    return admin("addstyle", "noir", "dark", attachment=replace(LORA, size=size))


def quota(used: int, limit: int) -> Facts:
    return replace(BASE, user_quota=limit, generations_today=used)


def group_quota(used: int, limit: int) -> Facts:
    return replace(GROUP, community_quota=limit, community_generations_today=used)


@rows(
    done_one_below_min_photos=Row(
        COLLECTING, ev.Command("done"), replace(BASE, photo_count=MIN - 1), _C, (), "send 1 more"
    ),
    done_at_min_photos=Row(
        COLLECTING, ev.Command("done"), replace(BASE, photo_count=MIN), _A, (), "who is in these photos"
    ),
    done_at_max_photos=Row(
        COLLECTING, ev.Command("done"), replace(BASE, photo_count=MAX), _A, (), "who is in these photos"
    ),
    photo_fills_the_last_place=Row(
        COLLECTING,
        ev.PhotosOffered((jpeg(),)),
        replace(BASE, photo_count=MAX - 1),
        _C,
        (fx.SavePhotos((jpeg(),), (1,)),),
        None,
    ),
    photo_past_max_photos=Row(COLLECTING, ev.PhotosOffered((jpeg(),)), replace(BASE, photo_count=MAX), _C, (), "full"),
    saved_one_below_min_photos=Row(COLLECTING, saved(OK, total=MIN - 1), BASE, _C, (), "send 1 more"),
    saved_at_min_photos=Row(COLLECTING, saved(OK, total=MIN), BASE, _C, (), "/done to start", not_says="send 1 more"),
    photo_at_max_bytes=Row(
        COLLECTING,
        ev.PhotosOffered((file_of(LIM.max_photo_bytes),)),
        BASE,
        _C,
        (fx.SavePhotos((file_of(LIM.max_photo_bytes),), (1,)),),
        None,
    ),
    photo_one_byte_over=Row(
        COLLECTING,
        ev.PhotosOffered((file_of(LIM.max_photo_bytes + 1),)),
        BASE,
        _C,
        (),
        "too large (the limit is 20 mb)",
    ),
    count_one=Row(IDLE, ev.Command("generate", ("studio", "1")), BASE, _I, (fx.StartGeneration("studio", 1),), None),
    count_at_max=Row(
        IDLE,
        ev.Command("generate", ("studio", str(LIM.max_count))),
        BASE,
        _I,
        (fx.StartGeneration("studio", LIM.max_count),),
        None,
    ),
    count_one_over_max=Row(
        IDLE, ev.Command("generate", ("studio", str(LIM.max_count + 1))), BASE, _I, (), f"from 1 to {LIM.max_count}"
    ),
    user_quota_one_left=Row(IDLE, ev.Command("generate", ("studio",)), quota(2, 3), _I, _GEN, None),
    user_quota_at_limit=Row(IDLE, ev.Command("generate", ("studio",)), quota(3, 3), _I, (), "resets tomorrow"),
    user_quota_zero=Row(
        IDLE,
        ev.Command("generate", ("studio",)),
        quota(0, 0),
        _I,
        (),
        "portraits are switched off here",
        not_says="resets",
    ),
    group_quota_one_left=Row(IDLE, ev.Command("generate", ("studio",)), group_quota(9, 10), _I, _GEN, None),
    group_quota_at_limit=Row(
        IDLE, ev.Command("generate", ("studio",)), group_quota(10, 10), _I, (), "this group has used its 10"
    ),
    style_name_at_32=Row(
        IDLE, admin("addstyle", "n" * 32, "dark"), ADMIN_HERE, _I, (fx.AddStyle("n" * 32, "dark"),), None
    ),
    style_name_at_33=Row(IDLE, admin("addstyle", "n" * 33, "dark"), ADMIN_HERE, _I, (), "1-32 characters"),
    prompt_at_max=Row(
        IDLE,
        prompt_of(LIM.max_style_prompt_chars),
        ADMIN_HERE,
        _I,
        (fx.AddStyle("noir", "p" * LIM.max_style_prompt_chars),),
        None,
    ),
    prompt_one_over=Row(IDLE, prompt_of(LIM.max_style_prompt_chars + 1), ADMIN_HERE, _I, (), "too long"),
    lora_at_max_bytes=Row(IDLE, lora_of(LIM.max_lora_bytes), ADMIN_HERE, _I, (fx.AddStyle,), None),
    lora_one_byte_over=Row(
        IDLE, lora_of(LIM.max_lora_bytes + 1), ADMIN_HERE, _I, (), "too large (the limit is 256 mb)"
    ),
    quota_set_to_zero=Row(
        IDLE, admin("quota", "user", "0"), ADMIN_HERE, _I, (fx.SetQuota("user", 0),), "0 portrait runs"
    ),
    quota_at_its_ceiling=Row(
        IDLE, admin("quota", "user", "10000"), ADMIN_HERE, _I, (fx.SetQuota("user", 10_000),), "10000 portrait"
    ),
    quota_over_its_ceiling=Row(IDLE, admin("quota", "user", "10001"), ADMIN_HERE, _I, (), "usage: /admin quota"),
)
def test_limits_at_their_boundary(row: Row) -> None:
    check(row)


@pytest.mark.parametrize("min_photos", [1, 3, 5])
def test_done_follows_the_configured_minimum(min_photos: int) -> None:
    """FACECHAIN_MIN_PHOTOS is read, not the default: /done at exactly the minimum asks who it is."""
    facts = replace(BASE, limits=Limits(min_photos=min_photos), photo_count=min_photos)
    assert decide(COLLECTING, ev.Command("done"), facts).state.mode is Mode.ASKING_SUBJECT
    below = decide(COLLECTING, ev.Command("done"), replace(facts, photo_count=min_photos - 1))
    assert below.state.mode is Mode.COLLECTING and "send 1 more" in text_of(below)


# -------------------------------------------------------------------------------- style previews
PICTURED = (
    StyleInfo("studio", "Clean studio portrait", builtin=True, preview="styles/previews/studio.jpg"),
    StyleInfo("business_suit", "Suit and tie", builtin=True),
)
PICTURED_ALL = (*PICTURED, StyleInfo("vintage", "Old film", builtin=True, preview="styles/previews/vintage.png"))


def test_styles_show_the_pictures_they_have_after_the_list() -> None:
    decision = decide(IDLE, ev.Command("styles"), replace(BASE, styles=PICTURED, all_styles=PICTURED_ALL))
    listing, pictures = decision.replies
    assert isinstance(listing, Text) and "suit and tie" in listing.text.casefold()
    assert pictures == Photos(("styles/previews/studio.jpg",), "What studio looks like.")


def test_admins_see_the_pictures_of_every_style_here() -> None:
    facts = replace(ADMIN_HERE, styles=PICTURED, all_styles=PICTURED_ALL)
    listing, pictures = decide(IDLE, admin("styles"), facts).replies
    assert isinstance(listing, Text) and "vintage: off" in listing.text.casefold()
    assert pictures == Photos(
        ("styles/previews/studio.jpg", "styles/previews/vintage.png"),
        "What the styles look like, in order: studio, vintage.",
    )


def test_styles_without_pictures_are_a_list_only() -> None:
    assert [type(r) for r in decide(IDLE, ev.Command("styles"), BASE).replies] == [Text]


def test_at_most_ten_pictures_go_with_a_list() -> None:
    many = tuple(StyleInfo(f"s{i}", preview=f"styles/previews/s{i}.jpg") for i in range(12))
    pictures = decide(IDLE, ev.Command("styles"), replace(BASE, styles=many, all_styles=many)).replies[-1]
    assert isinstance(pictures, Photos) and pictures.keys == tuple(f"styles/previews/s{i}.jpg" for i in range(10))


def test_a_cancelled_training_keeps_the_set_against_one_more_cancel_then_the_next_throws_it_away() -> None:
    kept = decide(IDLE, ev.JobFinished(train_outcome(error=ErrorCode.CANCELLED)), BASE).state
    assert UserState.from_json(json.loads(json.dumps(kept.to_json()))) == kept, "stored between events"
    asked = decide(kept, ev.Command("cancel"), BASE)
    assert asked.effects == () and asked.state == COLLECTING
    assert decide(asked.state, ev.Command("cancel"), BASE).effects == (fx.DiscardPhotos(),)
