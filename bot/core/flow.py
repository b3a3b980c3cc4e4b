"""The conversation as a pure state machine: ``decide(state, event, facts) -> Decision``.

``decide`` does no I/O and reads no clock or randomness: the service loads the user's
:class:`UserState` and the :class:`Facts` for one event, calls it, stores ``Decision.state``, runs
``Decision.effects`` and hands ``Decision.replies`` to the adapter. Effects that take time answer
with a follow-up event that comes back through ``decide`` (SavePhotos → PhotosSaved,
StartTraining/StartGeneration → RunQueued, or QueueUnavailable while Redis is down, CancelRuns →
RunsCancelled, AddStyle → StyleAdded; the worker's progress and outcomes arrive as JobProgress and
JobFinished, a run restarted after its worker was lost as RunRestarted), so every word the user
reads is chosen here and written in :mod:`bot.core.texts`.

Modes (private chat; in a group the user only ever enters CONFIRMING_FORGET)::

             /train, or photos sent                  /done (at least min_photos)
    IDLE ─────────────────────────────▶ COLLECTING ───────────────────────────▶ ASKING_SUBJECT
     ▲ ▲                                 │   ▲  ▲                                  │    │
     │ └──── /cancel (DiscardPhotos) ────┘   │  └──── /cancel, photos sent ────────┘    │
     │                                       │                                         │
     │                                       └─ JobFinished: too few usable photos, a   │
     │                                          failure or cancelled (ReopenSet; /done) │
     └──────────────────── subject button (StartTraining) ─────────────────────────────┘
                        (JobFinished needs_subject: ReopenSet, back to ASKING_SUBJECT)

    any mode ── /forget ──▶ CONFIRMING_FORGET ── "yes" (ForgetUser) ─────────────▶ IDLE
                                   └── "no", /cancel, or another command/button ──▶ the mode before

Each event kind has one handler below; commands, buttons and admin subcommands are looked up in the
dispatch tables ``COMMANDS``, ``BUTTONS`` and ``ADMIN`` at the end of the module.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import assert_never

from bot.core import catalogue, texts
from bot.core.effects import (
    AddStyle,
    CancelRuns,
    DiscardPhotos,
    Effect,
    ForgetUser,
    RemoveStyle,
    ReopenSet,
    SavePhotos,
    SetCommunityOption,
    SetQuota,
    SetStyleEnabled,
    StartCollecting,
    StartGeneration,
    StartTraining,
)
from bot.core.events import (
    BotRejectReason,
    ButtonPressed,
    Command,
    CommunityQuotaReached,
    Event,
    JobFinished,
    JobProgress,
    OfferedFile,
    PhotosOffered,
    PhotosSaved,
    QueueUnavailable,
    RunQueued,
    RunRestarted,
    RunsCancelled,
    RunsForgotten,
    StyleAdded,
    TextMessage,
)
from bot.core.limits import ACCEPTED_MIME, ACCEPTED_SUFFIXES, HEIC_MIME, HEIC_SUFFIXES, Limits
from bot.core.replies import Button, EditProgress, Photos, ProgressMessage, Reply, Text
from bot.core.state import Facts, Mode, ModelState, StyleInfo, UserState
from pipeline.jobs import ErrorCode, GenerateOutcome, Subject, TrainOutcome

#: Style buttons under one message; more would bury the message on a phone. /styles lists all.
MAX_STYLE_BUTTONS = 8
#: Style preview pictures shown with a style list: one Telegram album / Discord message holds 10.
MAX_PREVIEWS = 10
#: Button labels are cut here (Discord allows 80 characters; long labels wrap badly everywhere).
_MAX_LABEL = 40
#: Highest daily quota an admin may set; beyond it "off" says what they mean.
_STYLE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_INTEGER = re.compile(r"^[+-]?\d+$")
#: A platform's "I don't know the type" is no evidence against an image.
_GENERIC_MIME = frozenset({"application/octet-stream", "binary/octet-stream"})


@dataclass(frozen=True, slots=True)
class Decision:
    """What the service does with one event: store ``state``, run ``effects``, send ``replies``."""

    state: UserState
    replies: tuple[Reply, ...] = ()
    effects: tuple[Effect, ...] = ()


def decide(state: UserState, event: Event, facts: Facts) -> Decision:
    """The whole conversation: the next state, the replies and the effects for one event."""
    if state.mode is Mode.CONFIRMING_FORGET and _abandons_forget_question(event):
        # Moving on to something else means "no": deleting needs an explicit yes.
        state = UserState(mode=state.resume)
    match event:
        case Command():
            return _on_command(state, event, facts)
        case PhotosOffered():
            return _on_photos_offered(state, event, facts)
        case PhotosSaved():
            return _on_photos_saved(state, event, facts)
        case ButtonPressed():
            return _on_button(state, event, facts)
        case TextMessage():
            return _on_text(state, event, facts)
        case RunQueued():
            return _on_run_queued(state, event, facts)
        case JobProgress():
            return _on_job_progress(state, event, facts)
        case JobFinished():
            return _on_job_finished(state, event, facts)
        case RunsCancelled():
            return _on_runs_cancelled(state, event, facts)
        case RunsForgotten():
            return _on_runs_forgotten(state, event)
        case CommunityQuotaReached(limit=limit):
            return _say(state, facts, texts.quota_community(limit), personal=True)
        case QueueUnavailable():
            return _on_queue_unavailable(state, event, facts)
        case RunRestarted():
            return _on_run_restarted(state, event, facts)
        case StyleAdded():
            return _on_style_added(state, event, facts)
        case _:
            assert_never(event)


# ------------------------------------------------------------------------------------------ helpers
def _say(
    state: UserState,
    facts: Facts,
    text: str,
    buttons: tuple[Button, ...] = (),
    *,
    personal: bool = False,
    effects: tuple[Effect, ...] = (),
) -> Decision:
    """One text reply. ``personal`` replies are shown only to the asker where the platform can."""
    return Decision(state, (_text(facts, text, buttons, personal=personal),), effects)


def _text(facts: Facts, text: str, buttons: tuple[Button, ...] = (), *, personal: bool = False) -> Text:
    # In a private chat "only you can see this" adds nothing, and Discord hides ephemeral DMs on reload.
    return Text(text, buttons, private=personal and not facts.private)


def _silent(state: UserState) -> Decision:
    return Decision(state)


def _goto(state: UserState, mode: Mode) -> UserState:
    """Enter ``mode``, or, while the /forget question is open, make it the mode to return to."""
    if state.mode is Mode.CONFIRMING_FORGET:
        return replace(state, resume=mode)
    return UserState(mode=mode)


def _button(label: str, action: str, value: str = "", community: str | None = None) -> Button | None:
    """A button, or None when its data would not fit the platforms' 64 bytes."""
    if len(label) > _MAX_LABEL:
        label = label[: _MAX_LABEL - 1] + "…"
    try:
        return Button(label, action, value, community)
    except ValueError:
        return None


def _buttons(*candidates: Button | None) -> tuple[Button, ...]:
    return tuple(b for b in candidates if b is not None)


def _style_buttons(facts: Facts) -> tuple[Button, ...]:
    """Buttons for the styles enabled here; they stay the community's wherever they end up (a DM)."""
    fitting = (_button(s.name, "style", s.name, facts.community) for s in facts.styles)
    return tuple(b for b in fitting if b is not None)[:MAX_STYLE_BUTTONS]


def _subject_buttons() -> tuple[Button, ...]:
    return _buttons(*(_button(texts.subject_label(s), "subject", s.value) for s in Subject))


def _forget_buttons() -> tuple[Button, ...]:
    return _buttons(
        _button(texts.forget_yes_label(), "forget", "yes"), _button(texts.forget_no_label(), "forget", "no")
    )


def _result_buttons(style: str, facts: Facts) -> tuple[Button, ...]:
    """The buttons under portraits. A community's results sent to a member's private chat keep acting
    for that community there (its styles, its limits)."""
    return _buttons(
        _button(texts.more_label(), "more", style, facts.community),
        _another_button_for(facts),
    )


def _another_button_for(facts: Facts) -> Button | None:
    return _button(texts.another_label(), "another", community=facts.community)


def _training(facts: Facts) -> bool:
    return facts.model is ModelState.TRAINING or bool(facts.active("train"))


def _normalize(name: str) -> str:
    return re.sub(r"[\s_-]+", "", name.casefold())


def _find_style(styles: Iterable[StyleInfo], name: str, *, exact: bool | None = None) -> StyleInfo | None:
    """A style by name, ignoring case; failing that, ignoring spaces, '_' and '-' too ("business suit"
    finds business_suit). ``exact``: only the first way (True) or only the second (False)."""
    styles = tuple(styles)
    if exact is not False:
        found = next((s for s in styles if s.name.casefold() == name.casefold()), None)
        if found is not None or exact:
            return found
    wanted = _normalize(name)
    if not wanted:
        return None
    return next((s for s in styles if _normalize(s.name) == wanted), None)


def _ask_subject(state: UserState, facts: Facts) -> Decision:
    return _say(_goto(state, Mode.ASKING_SUBJECT), facts, texts.ask_subject(), _subject_buttons())


def _abandons_forget_question(event: Event) -> bool:
    if isinstance(event, Command):
        return event.name in COMMANDS and event.name not in ("help", "forget", "cancel")
    if isinstance(event, ButtonPressed):
        return event.action in BUTTONS and event.action != "forget"
    return isinstance(event, PhotosOffered)


# ----------------------------------------------------------------------------------------- commands
def _on_command(state: UserState, event: Command, facts: Facts) -> Decision:
    handler = COMMANDS.get(event.name)
    if handler is None:
        return _unknown_command(state, event, facts)
    return handler(state, event, facts)


def _start(state: UserState, event: Command, facts: Facts) -> Decision:
    limits = facts.limits
    return _say(state, facts, texts.welcome(limits.min_photos, limits.max_photos, private=facts.private))


def _help(state: UserState, event: Command, facts: Facts) -> Decision:
    return _say(state, facts, texts.help_text(admin_here=facts.is_admin and not facts.private), personal=True)


def _unknown_command(state: UserState, event: Command, facts: Facts) -> Decision:
    # In a group the command may be meant for another bot.
    if not facts.private:
        return _silent(state)
    return _say(state, facts, texts.unknown_command(event.name))


def _train(state: UserState, event: Command, facts: Facts) -> Decision:
    limits = facts.limits
    if not facts.private:
        return _say(state, facts, texts.train_in_private(), personal=True)
    if _training(facts):
        return _say(state, facts, texts.training_in_progress())
    if state.mode is Mode.ASKING_SUBJECT:
        return _ask_subject(state, facts)
    if state.mode is Mode.COLLECTING and facts.photo_count > 0:
        # Never throw photos away implicitly: /cancel does that, and says so.
        return _say(state, facts, texts.set_already_open(facts.photo_count, limits.max_photos))
    return _say(
        UserState(mode=Mode.COLLECTING),
        facts,
        texts.train_tips(limits.min_photos, limits.max_photos, has_model=facts.has_ready_model),
        effects=(StartCollecting(),),
    )


def _done(state: UserState, event: Command, facts: Facts) -> Decision:
    limits = facts.limits
    if not facts.private:
        return _say(state, facts, texts.train_in_private("done"), personal=True)
    if state.mode is Mode.ASKING_SUBJECT:
        return _ask_subject(state, facts)
    if state.mode is Mode.COLLECTING:
        if facts.photo_count >= limits.min_photos:
            return _ask_subject(state, facts)
        return _say(state, facts, texts.need_more_photos(facts.photo_count, limits.min_photos))
    if _training(facts):
        return _say(state, facts, texts.training_in_progress())
    return _say(state, facts, texts.no_open_set())


def _generate(state: UserState, event: Command, facts: Facts) -> Decision:
    return _request_portraits(state, facts, event.args)


def _styles(state: UserState, event: Command, facts: Facts) -> Decision:
    admin_hint = facts.is_admin and not facts.private
    listing = _say(state, facts, texts.styles_list(facts.styles, admin_hint=admin_hint))
    return _with_previews(listing, facts.styles)


def _with_previews(decision: Decision, styles: Iterable[StyleInfo]) -> Decision:
    """The style list, then the pictures of the styles that have one (the first ten), named in order."""
    shown = [s for s in styles if s.preview][:MAX_PREVIEWS]
    if not shown:
        return decision
    keys = tuple(s.preview for s in shown if s.preview)
    pictures = Photos(keys, texts.style_previews([s.name for s in shown]))
    return replace(decision, replies=(*decision.replies, pictures))


def _status(state: UserState, event: Command, facts: Facts) -> Decision:
    text = texts.status(
        facts.model,
        facts.has_ready_model,
        facts.active_runs,
        collecting=facts.photo_count if state.mode is Mode.COLLECTING else None,
        choosing_subject=state.mode is Mode.ASKING_SUBJECT,
        max_photos=facts.limits.max_photos,
        used_today=facts.generations_today,
        quota=facts.user_quota,
    )
    return _say(state, facts, text, personal=True)


def _cancel(state: UserState, event: Command, facts: Facts) -> Decision:
    if not facts.private and state.mode in (Mode.COLLECTING, Mode.ASKING_SUBJECT):
        # The photo set belongs to the private chat: here /cancel stops runs only.
        if facts.active_runs:
            return Decision(state, (), (CancelRuns(),))
        return _say(state, facts, texts.photo_set_is_private(facts.photo_count), personal=True)
    match state.mode:
        case Mode.CONFIRMING_FORGET:
            return _say(UserState(mode=state.resume), facts, texts.forget_declined(), personal=True)
        case Mode.COLLECTING if state.kept_after_cancel:
            return _say(UserState(mode=Mode.COLLECTING), facts, texts.kept_photos_cancel_again(facts.photo_count))
        case Mode.COLLECTING:
            text = texts.discarded(facts.photo_count, runs_still_active=bool(facts.active_runs))
            return _say(UserState(), facts, text, effects=(DiscardPhotos(),))
        case Mode.ASKING_SUBJECT:
            text = texts.back_to_collecting(facts.photo_count, facts.limits.max_photos)
            return _say(UserState(mode=Mode.COLLECTING), facts, text)
        case Mode.IDLE:
            if facts.active_runs:
                # RunsCancelled comes back and says what is being stopped.
                return Decision(state, (), (CancelRuns(),))
            return _say(state, facts, texts.nothing_to_cancel(), personal=True)
        case _:
            assert_never(state.mode)


def _forget(state: UserState, event: Command, facts: Facts) -> Decision:
    resume = state.resume if state.mode is Mode.CONFIRMING_FORGET else state.mode
    asking = UserState(mode=Mode.CONFIRMING_FORGET, resume=resume)
    return _say(asking, facts, texts.forget_question(), _forget_buttons(), personal=True)


# ------------------------------------------------------------------------------------------- photos
def _on_photos_offered(state: UserState, event: PhotosOffered, facts: Facts) -> Decision:
    if not event.files:
        return _silent(state)
    if not facts.private:
        if state.mode in (Mode.COLLECTING, Mode.ASKING_SUBJECT):
            return _say(state, facts, texts.photos_in_private(), personal=True)
        return _silent(state)
    if state.mode is Mode.IDLE:
        if _training(facts):
            return _say(state, facts, texts.photos_while_training())
        return _collect(state, event, facts, already=0, new_set=True)
    return _collect(state, event, facts, already=facts.photo_count, new_set=False)


def _collect(state: UserState, event: PhotosOffered, facts: Facts, *, already: int, new_set: bool) -> Decision:
    """Check an album before download; store what passes in one SavePhotos, answer once."""
    limits = facts.limits
    accepted: list[OfferedFile] = []
    numbers: list[int] = []
    refused: list[str] = []
    for index, offered in enumerate(event.files, start=1):
        reason = _precheck(offered, limits, already + len(accepted))
        if reason is None:
            accepted.append(offered)
            numbers.append(index)
        else:
            label = texts.file_label(index, offered.filename)
            refused.append(texts.rejection_line(label, texts.reject_reason(reason, limits.max_photo_bytes)))
    if new_set and not accepted:
        # Nothing to keep: don't open a set for files that can't be used.
        text = texts.files_refused(refused, 0, None, limits.min_photos, limits.max_photos)
        return _say(state, facts, text)
    effects: tuple[Effect, ...] = (StartCollecting(),) if new_set else ()
    if accepted:
        effects += (SavePhotos(tuple(accepted), tuple(numbers)),)
    replies: tuple[Reply, ...] = ()
    if new_set and facts.has_ready_model:
        replies = (_text(facts, texts.new_set_beside_a_model()),)
    if refused:
        # PhotosSaved follows for the accepted files and gives the count; nothing else to say now.
        text = texts.files_refused(refused, len(accepted), already, limits.min_photos, limits.max_photos)
        replies = (*replies, _text(facts, text))
    return Decision(UserState(mode=Mode.COLLECTING), replies, effects)


def _precheck(offered: OfferedFile, limits: Limits, in_set: int) -> BotRejectReason | None:
    """Why a file is refused before it is downloaded, or None to download it."""
    mime = (offered.mime or "").casefold() or None
    suffix = PurePosixPath(offered.filename).suffix.casefold() if offered.filename else None
    if mime in HEIC_MIME or suffix in HEIC_SUFFIXES:
        return BotRejectReason.HEIC
    unknown_type = (mime is None or mime in _GENERIC_MIME) and not suffix
    if not (unknown_type or mime in ACCEPTED_MIME or suffix in ACCEPTED_SUFFIXES):
        return BotRejectReason.UNSUPPORTED_TYPE
    if offered.size is not None and offered.size > limits.max_photo_bytes:
        return BotRejectReason.TOO_LARGE
    if in_set >= limits.max_photos:
        return BotRejectReason.SET_FULL
    return None


def _on_photos_saved(state: UserState, event: PhotosSaved, facts: Facts) -> Decision:
    limits = facts.limits
    stored = sum(1 for r in event.results if r.stored)
    lines = [
        texts.rejection_line(
            texts.file_label(r.number or index, r.filename),
            texts.reject_reason(r.reason or "", min(r.limit or limits.max_photo_bytes, limits.max_photo_bytes)),
        )
        for index, r in enumerate(event.results, start=1)
        if not r.stored
    ]
    text = texts.photos_saved(stored, event.total, lines, limits.min_photos, limits.max_photos)
    return _say(state, facts, text)


# ----------------------------------------------------------------------------------- buttons, text
def _on_button(state: UserState, event: ButtonPressed, facts: Facts) -> Decision:
    handler = BUTTONS.get(event.action)
    if handler is None:
        return _say(state, facts, texts.button_expired(), personal=True)
    return handler(state, event, facts)


def _subject_button(state: UserState, event: ButtonPressed, facts: Facts) -> Decision:
    if state.mode is not Mode.ASKING_SUBJECT:
        return _say(state, facts, texts.question_expired(), personal=True)
    try:
        subject = Subject(event.value)
    except ValueError:
        return _ask_subject(state, facts)
    # RunQueued comes back with the progress message.
    return Decision(UserState(), (), (StartTraining(subject),))


def _style_button(state: UserState, event: ButtonPressed, facts: Facts) -> Decision:
    # A picker is for one choice: a second press (a double tap) while that style's run is on its way
    # would spend another run of the day. "More of this style" under the portraits is for more.
    if any(r.style == event.value for r in facts.active("generate")):
        return _say(state, facts, texts.already_making(event.value), personal=True)
    return _more_button(state, event, facts)


def _more_button(state: UserState, event: ButtonPressed, facts: Facts) -> Decision:
    return _request_portraits(state, facts, (event.value,) if event.value else ())


def _another_button(state: UserState, event: ButtonPressed, facts: Facts) -> Decision:
    return _request_portraits(state, facts, ())


def _forget_button(state: UserState, event: ButtonPressed, facts: Facts) -> Decision:
    if state.mode is not Mode.CONFIRMING_FORGET:
        return _say(state, facts, texts.question_expired(), personal=True)
    if event.value == "yes":
        return _say(UserState(), facts, texts.forgotten(), personal=True, effects=(ForgetUser(),))
    if event.value == "no":
        return _say(UserState(mode=state.resume), facts, texts.forget_declined(), personal=True)
    return _say(state, facts, texts.forget_question(), _forget_buttons(), personal=True)


def _on_text(state: UserState, event: TextMessage, facts: Facts) -> Decision:
    if not facts.private:
        return _silent(state)
    limits = facts.limits
    match state.mode:
        case Mode.COLLECTING:
            return _say(state, facts, texts.collecting_hint(facts.photo_count, limits.min_photos, limits.max_photos))
        case Mode.ASKING_SUBJECT:
            return _ask_subject(state, facts)
        case Mode.CONFIRMING_FORGET:
            return _say(state, facts, texts.forget_hint(), _forget_buttons())
        case Mode.IDLE:
            return _say(state, facts, texts.idle_hint(facts.has_ready_model))
        case _:
            assert_never(state.mode)


# ---------------------------------------------------------------------------------------- generate
def _request_portraits(state: UserState, facts: Facts, args: tuple[str, ...]) -> Decision:
    """/generate [style] [count], and the style buttons: refuse, ask for a style, or start a run."""
    limits = facts.limits
    if not facts.has_ready_model:
        if _training(facts):
            return _say(state, facts, texts.still_training(), personal=True)
        if facts.model is ModelState.FAILED:
            return _say(state, facts, texts.model_failed(), personal=True)
        return _say(state, facts, texts.no_model(), personal=True)
    if facts.user_quota is not None and facts.generations_today >= facts.user_quota:
        return _say(state, facts, texts.quota_user(facts.user_quota), personal=True)
    if facts.community_quota is not None and facts.community_generations_today >= facts.community_quota:
        return _say(state, facts, texts.quota_community(facts.community_quota), personal=True)
    if not facts.styles:
        return _say(state, facts, texts.no_styles(), personal=True)

    count_only = len(args) == 1 and _INTEGER.match(args[0]) and _find_style(facts.all_styles, args[0]) is None
    if not args or count_only:
        asked = int(args[0]) if args else None
        if asked is not None and not 1 <= asked <= limits.max_count:
            return _say(state, facts, texts.bad_count(limits.max_count), personal=True)
        more = len(facts.styles) > MAX_STYLE_BUTTONS
        text = texts.pick_style(limits.default_count, asked, more_styles=more)
        return _say(state, facts, text, _style_buttons(facts), personal=True)

    style, count_text, wanted = _style_and_count(facts.styles, args)
    if style is None:
        if _find_style(facts.all_styles, wanted) is not None:
            return _say(state, facts, texts.style_disabled(wanted, facts.style_names), personal=True)
        return _say(state, facts, texts.unknown_style(wanted, facts.style_names), personal=True)
    count = limits.default_count
    if count_text is not None:
        if not _INTEGER.match(count_text) or not 1 <= int(count_text) <= limits.max_count:
            return _say(state, facts, texts.bad_count(limits.max_count), personal=True)
        count = int(count_text)
    # RunQueued comes back with the progress message.
    return Decision(state, (), (StartGeneration(style.name, count),))


def _style_and_count(styles: Sequence[StyleInfo], args: Sequence[str]) -> tuple[StyleInfo | None, str | None, str]:
    """/generate's arguments as (style, count as typed, the style name as asked). Names typed exactly
    win over names alike ("noir 2" is noir twice even where a style noir2 exists); in each, the whole
    text first (a style may end in a number), then a count after the name, then before it."""
    whole = " ".join(args)
    readings: list[tuple[str, str | None]] = [(whole, None)]
    if len(args) > 1:
        readings.append((" ".join(args[:-1]), args[-1]))
        if _INTEGER.match(args[0]):
            readings.append((" ".join(args[1:]), args[0]))
    for exact in (True, False):
        for name, count_text in readings:
            style = _find_style(styles, name, exact=exact)
            if style is not None:
                return style, count_text, name
    if len(args) > 1 and _INTEGER.match(args[-1]):
        return None, args[-1], " ".join(args[:-1])
    if len(args) > 1 and _INTEGER.match(args[0]):
        return None, args[0], " ".join(args[1:])
    return None, None, whole


# ------------------------------------------------------------------------------- follow-up events
def _on_run_queued(state: UserState, event: RunQueued, facts: Facts) -> Decision:
    if event.kind == "train":
        text = texts.train_queued(event.queue_position)
    else:
        count = event.count or facts.limits.default_count
        text = texts.generate_queued(event.style or "", count, event.queue_position)
    return Decision(state, (ProgressMessage(event.run_id, text),))


def _on_job_progress(state: UserState, event: JobProgress, facts: Facts) -> Decision:
    note = event.progress
    text = texts.progress(note.stage, note.fraction, event.queue_position, note.message)
    return Decision(state, (EditProgress(note.run_id, text),))


def _on_runs_cancelled(state: UserState, event: RunsCancelled, facts: Facts) -> Decision:
    edits = tuple(EditProgress(run_id, texts.cancelling_edit()) for run_id in event.run_ids)
    return Decision(state, (_text(facts, texts.cancelling(len(event.run_ids))), *edits))


def _on_runs_forgotten(state: UserState, event: RunsForgotten) -> Decision:
    """The runs /forget stopped: their progress messages say so (the reply to /forget says the rest)."""
    stopped = {"train": texts.train_failed_edit(), "generate": texts.generate_stopped_edit()}
    return Decision(state, tuple(EditProgress(run_id, stopped[kind], final=True) for run_id, kind in event.runs))


def _on_queue_unavailable(state: UserState, event: QueueUnavailable, facts: Facts) -> Decision:
    if event.kind == "train":
        # Nothing was submitted: the subject question is asked again, so one press retries.
        return _say(_goto(state, Mode.ASKING_SUBJECT), facts, texts.queue_unavailable(), _subject_buttons())
    return _say(state, facts, texts.queue_unavailable(), personal=True)


def _on_run_restarted(state: UserState, event: RunRestarted, facts: Facts) -> Decision:
    text = texts.run_restarted(event.attempt, event.max_attempts)
    return Decision(state, (EditProgress(event.run_id, text),))


def _on_job_finished(state: UserState, event: JobFinished, facts: Facts) -> Decision:
    outcome = event.outcome
    if isinstance(outcome, TrainOutcome):
        return _train_finished(state, outcome, facts)
    return _generate_finished(state, outcome, event.style, facts)


def _train_finished(state: UserState, outcome: TrainOutcome, facts: Facts) -> Decision:
    limits = facts.limits
    if outcome.ok:
        done = EditProgress(outcome.run_id, texts.train_done_edit(outcome.stages_run), final=True)
        buttons = _style_buttons(facts)
        ready = _text(facts, texts.model_ready(has_styles=bool(buttons)), buttons)
        return Decision(state, (done, ready))
    stopped = EditProgress(outcome.run_id, texts.train_failed_edit(), final=True)
    if outcome.error is ErrorCode.CANCELLED:
        cancelled = _text(facts, texts.train_cancelled())
        kept = replace(_goto(state, Mode.COLLECTING), kept_after_cancel=True)
        return Decision(kept, (stopped, cancelled), (ReopenSet(()),))
    if outcome.error in (ErrorCode.TOO_FEW_PHOTOS, ErrorCode.NO_FACE):
        numbers = {key: n for n, key in enumerate(facts.photo_keys, start=1)}
        lines = [
            texts.rejection_line(
                texts.photo_number(numbers.get(r.photo_key)),
                texts.reject_reason(r.reason, limits.max_photo_bytes),
            )
            for r in outcome.rejections
        ]
        usable = len(outcome.used_photos)
        if not usable and facts.photo_keys:
            usable = max(len(facts.photo_keys) - len(outcome.rejections), 0)
        text = texts.train_rejections(lines, usable, limits.min_photos)
        drop = tuple(r.photo_key for r in outcome.rejections)
        return Decision(_goto(state, Mode.COLLECTING), (stopped, _text(facts, text)), (ReopenSet(drop),))
    if outcome.needs_subject:
        asked = _ask_subject(state, facts)
        return Decision(asked.state, (stopped, *asked.replies), (ReopenSet(()),))
    code = outcome.error or ErrorCode.INTERNAL
    failed = _text(facts, texts.train_failed(code))
    return Decision(_goto(state, Mode.COLLECTING), (stopped, failed), (ReopenSet(()),))


def _generate_finished(state: UserState, outcome: GenerateOutcome, style: str | None, facts: Facts) -> Decision:
    name = outcome.style or style or ""
    if outcome.ok and outcome.portraits:
        done = EditProgress(outcome.run_id, texts.generate_done_edit(outcome.stages_run), final=True)
        scores = [p.score for p in outcome.portraits if p.score is not None]
        caption = texts.portraits_caption(name, max(scores) if scores else None, outcome.blocked)
        photos = Photos(tuple(p.key for p in outcome.portraits), caption, _result_buttons(name, facts))
        return Decision(state, (done, photos))
    stopped = EditProgress(outcome.run_id, texts.generate_failed_edit(), final=True)
    if outcome.error is ErrorCode.CANCELLED:
        return Decision(state, (stopped, _text(facts, texts.generate_cancelled())))
    if outcome.error is None or outcome.error is ErrorCode.NO_USABLE_PORTRAIT:
        text = texts.no_usable_portrait(name, outcome.blocked)
        return Decision(state, (stopped, _text(facts, text, _result_buttons(name, facts))))
    if outcome.error is ErrorCode.MODEL_MISSING and name:
        # A generation's missing model is its style's LoRA: a file to fetch, or a community upload gone.
        known = next((s for s in facts.all_styles if s.name.casefold() == name.casefold()), None)
        # Built-in styles are always known here; one that is not was a community's, removed since.
        uploaded = known is None or not known.builtin
        text = texts.style_upload_missing(name) if uploaded else texts.style_lora_missing(name)
        another = _buttons(_another_button_for(facts))
        return Decision(state, (stopped, _text(facts, text, another)))
    return Decision(state, (stopped, _text(facts, texts.generate_failed(outcome.error))))


def results_shown_instead(replies: Iterable[Reply], name: str) -> tuple[Reply, ...]:
    """A result meant for a member's private chat, which refused the bot, as shown in the chat where it
    was asked for: a note saying why, then the result's messages (the progress message there was
    already edited)."""
    shown = tuple(reply for reply in replies if isinstance(reply, (Text, Photos)))
    return (Text(texts.results_not_sent_privately(name)), *shown)


def _on_style_added(state: UserState, event: StyleAdded, facts: Facts) -> Decision:
    if event.error is None:
        return _say(state, facts, texts.style_added(event.name, event.replaced), personal=True)
    limit = min(event.limit, facts.limits.max_lora_bytes) if event.limit else None
    return _say(state, facts, texts.style_add_failed(event.name, event.error, limit), personal=True)


# -------------------------------------------------------------------------------------------- admin
def _admin(state: UserState, event: Command, facts: Facts) -> Decision:
    if facts.private or facts.community is None:
        return _say(state, facts, texts.admin_in_group(), personal=True)
    if not facts.is_admin:
        return _say(state, facts, texts.admin_only(), personal=True)
    sub = event.args[0].casefold() if event.args else ""
    handler = ADMIN.get(sub)
    if handler is None:
        return _say(state, facts, texts.admin_usage(), personal=True)
    return handler(state, event, facts)


def _admin_reply(state: UserState, facts: Facts, text: str, *effects: Effect) -> Decision:
    return _say(state, facts, text, personal=True, effects=effects)


def _admin_styles(state: UserState, event: Command, facts: Facts) -> Decision:
    settings = texts.community_settings(
        facts.user_quota, facts.community_quota, facts.results_to == "direct", facts.nsfw_allowed
    )
    text = texts.admin_styles(facts.all_styles, facts.style_names) + "\n\n" + settings
    listing = _admin_reply(state, facts, text)
    return _with_previews(listing, facts.all_styles)


def _admin_enable(state: UserState, event: Command, facts: Facts) -> Decision:
    return _admin_switch(state, event, facts, enabled=True)


def _admin_disable(state: UserState, event: Command, facts: Facts) -> Decision:
    return _admin_switch(state, event, facts, enabled=False)


def _admin_switch(state: UserState, event: Command, facts: Facts, *, enabled: bool) -> Decision:
    sub = event.args[0].casefold()
    if len(event.args) < 2:
        return _admin_reply(state, facts, texts.admin_usage_for(sub))
    wanted = " ".join(event.args[1:])
    style = _find_style(facts.all_styles, wanted)
    if style is None:
        known = tuple(s.name for s in facts.all_styles)
        return _admin_reply(state, facts, texts.admin_unknown_style(wanted, known))
    return _admin_reply(state, facts, texts.style_switched(style.name, enabled), SetStyleEnabled(style.name, enabled))


def _after_subcommand(event: Command) -> str:
    """The raw text after ``/admin <subcommand>``, keeping a prompt's own spacing and punctuation."""
    if event.text:
        parts = event.text.strip().split(maxsplit=1)
        return parts[1] if len(parts) > 1 else ""
    return " ".join(event.args[1:])


def _admin_addstyle(state: UserState, event: Command, facts: Facts) -> Decision:
    limits = facts.limits
    parts = _after_subcommand(event).split(maxsplit=1)
    if not parts:
        return _admin_reply(state, facts, texts.admin_usage_for("addstyle"))
    name = parts[0].lower()
    prompt = parts[1].strip() if len(parts) > 1 else ""
    if not _STYLE_NAME.match(name):
        return _admin_reply(state, facts, texts.style_bad_name())
    if not prompt:
        return _admin_reply(state, facts, texts.style_needs_prompt())
    if len(prompt) > limits.max_style_prompt_chars:
        return _admin_reply(state, facts, texts.style_prompt_too_long(limits.max_style_prompt_chars))
    existing = _find_style(facts.all_styles, name)
    if existing is not None and existing.builtin:
        return _admin_reply(state, facts, texts.style_add_failed(name, "exists_builtin"))
    if existing is not None and existing.name != name:
        # /generate and the admin commands find styles ignoring case, '_' and '-': both could not be told apart.
        return _admin_reply(state, facts, texts.style_name_alike(name, existing.name))
    lora = event.attachment
    if lora is not None:
        if not (lora.filename or "").casefold().endswith(".safetensors"):
            return _admin_reply(state, facts, texts.lora_not_safetensors())
        if lora.size is not None and lora.size > limits.max_lora_bytes:
            return _admin_reply(state, facts, texts.lora_too_large(limits.max_lora_bytes))
    # StyleAdded comes back once the service has validated and stored it.
    return Decision(state, (), (AddStyle(name, prompt, lora),))


def _admin_removestyle(state: UserState, event: Command, facts: Facts) -> Decision:
    if len(event.args) != 2:
        return _admin_reply(state, facts, texts.admin_usage_for("removestyle"))
    style = _find_style(facts.all_styles, event.args[1])
    if style is None:
        known = tuple(s.name for s in facts.all_styles)
        return _admin_reply(state, facts, texts.admin_unknown_style(event.args[1], known))
    if style.builtin:
        return _admin_reply(state, facts, texts.builtin_not_removable(style.name))
    return _admin_reply(state, facts, texts.style_removed(style.name), RemoveStyle(style.name))


def _admin_quota(state: UserState, event: Command, facts: Facts) -> Decision:
    args = [a.casefold() for a in event.args[1:]]
    if len(args) != 2 or args[0] not in ("user", "group"):
        return _admin_reply(state, facts, texts.admin_usage_for("quota"))
    scope, value = args
    limit: int | None
    if value == "off":
        limit = None
    elif _INTEGER.match(value) and value.isascii() and 0 <= int(value) <= catalogue.MAX_QUOTA:
        limit = int(value)
    else:
        return _admin_reply(state, facts, texts.admin_usage_for("quota"))
    text = texts.quota_set(scope, limit, facts.limits.daily_generations)
    return _admin_reply(state, facts, text, SetQuota(scope, limit))


def _admin_results(state: UserState, event: Command, facts: Facts) -> Decision:
    value = event.args[1].casefold() if len(event.args) == 2 else ""
    if value not in ("channel", "direct"):
        return _admin_reply(state, facts, texts.admin_usage_for("results"))
    text = texts.results_set(direct=value == "direct")
    return _admin_reply(state, facts, text, SetCommunityOption("results_to", value))


def _admin_nsfw(state: UserState, event: Command, facts: Facts) -> Decision:
    value = event.args[1].casefold() if len(event.args) == 2 else ""
    if value not in ("on", "off"):
        return _admin_reply(state, facts, texts.admin_usage_for("nsfw"))
    text = texts.nsfw_set(allowed=value == "on", age_restricted_here=facts.age_restricted)
    return _admin_reply(state, facts, text, SetCommunityOption("nsfw", value))


# -------------------------------------------------------------------------------- dispatch tables
CommandHandler = Callable[[UserState, Command, Facts], Decision]
ButtonHandler = Callable[[UserState, ButtonPressed, Facts], Decision]

#: Slash commands by name (without the slash). Anything else is an unknown command.
COMMANDS: dict[str, CommandHandler] = {
    "start": _start,
    "help": _help,
    "train": _train,
    "done": _done,
    "generate": _generate,
    "styles": _styles,
    "status": _status,
    "cancel": _cancel,
    "forget": _forget,
    "admin": _admin,
}

#: Buttons by action (the part of the button data before ``:``).
BUTTONS: dict[str, ButtonHandler] = {
    "subject": _subject_button,
    "style": _style_button,
    "more": _more_button,
    "another": _another_button,
    "forget": _forget_button,
}

#: ``/admin <subcommand>`` handlers.
ADMIN: dict[str, CommandHandler] = {
    "styles": _admin_styles,
    "enable": _admin_enable,
    "disable": _admin_disable,
    "addstyle": _admin_addstyle,
    "removestyle": _admin_removestyle,
    "quota": _admin_quota,
    "results": _admin_results,
    "nsfw": _admin_nsfw,
}
