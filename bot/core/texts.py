"""Every sentence the bot says: plain, friendly, short English with no platform markup.

The flow chooses *what* to say; this module says it. Adapters send these strings as they are (no
Markdown or HTML parse mode), so nothing here needs escaping and a style name with ``_`` or ``*``
shows literally. Functions, not constants, so a test can call every one of them.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.core import catalogue
from bot.core.events import BotRejectReason
from bot.core.state import ModelState, RunInfo, StyleInfo
from pipeline.jobs import ErrorCode, RejectReason, Stage, Subject

#: User-supplied words echoed back (a style name typed wrong) are cut to this length.
_ECHO_MAX = 40


_REJECT_REASONS: dict[str, str] = {
    RejectReason.NOT_AN_IMAGE: "not an image I can read",
    RejectReason.NO_FACE: "no face found",
    RejectReason.SEVERAL_FACES: "more than one face (crop it to just you)",
    RejectReason.FACE_TOO_SMALL: "the face is too small (take a closer shot)",
    RejectReason.TOO_BLURRY: "too blurry",
    RejectReason.DUPLICATE: "the same as another photo",
    RejectReason.LOW_QUALITY: "the face is unclear (turned away, covered or too dark)",
    BotRejectReason.UNSUPPORTED_TYPE: "not a JPEG, PNG or WebP image",
    BotRejectReason.HEIC: "HEIC isn't supported: send it as a photo instead of a file, or as a JPEG",
    BotRejectReason.SET_FULL: "the set is already full",
    BotRejectReason.DOWNLOAD_FAILED: "I couldn't download it (please send it again)",
}

_ERRORS: dict[ErrorCode, str] = {
    ErrorCode.NO_FACE: "I couldn't find a usable face in your photos.",
    ErrorCode.TOO_FEW_PHOTOS: "Too few of your photos were usable.",
    ErrorCode.NO_USABLE_PORTRAIT: "None of the portraits passed the face check.",
    ErrorCode.OUT_OF_MEMORY: "The GPU ran out of memory.",
    ErrorCode.CANCELLED: "It was cancelled.",
    ErrorCode.TIMEOUT: "It took too long and was stopped.",
    ErrorCode.MODEL_MISSING: "A model file is missing on the server; the bot's operator has to add it.",
    ErrorCode.FACE_MODEL_DAMAGED: "Your face model's file is damaged (invalid weights): send /train to make a new one.",
    ErrorCode.STYLE_DAMAGED: "This style's LoRA file is damaged (invalid weights); an admin has to replace it.",
    ErrorCode.BAD_PAYLOAD: "The GPU worker didn't understand the request (its version may differ).",
    ErrorCode.INTERNAL: "Something went wrong on the server.",
    ErrorCode.WORKER_LOST: "The GPU worker stopped while working on it, each time I tried.",
    ErrorCode.NO_WORKER: "No GPU worker is running right now, so it never started. Please try again later.",
}

_SUBJECTS: dict[Subject, str] = {
    Subject.MAN: "A man",
    Subject.WOMAN: "A woman",
    Subject.BOY: "A boy",
    Subject.GIRL: "A girl",
    Subject.PERSON: "Someone else",
}

_MODEL_STATES: dict[ModelState, str] = {
    ModelState.NONE: "none yet (send /train to make one)",
    ModelState.TRAINING: "training",
    ModelState.READY: "ready (send /generate)",
    ModelState.FAILED: "the last training failed (send /train to try again)",
}

_NEWER_MODEL: dict[ModelState, str] = {
    ModelState.TRAINING: "; a new one is training",
    ModelState.FAILED: "; training a new one failed (send /train to try again)",
}


def _model_line(model: ModelState, has_ready_model: bool) -> str:
    if not has_ready_model or model is ModelState.READY:
        return _MODEL_STATES[model]
    return _MODEL_STATES[ModelState.READY] + _NEWER_MODEL.get(model, "")


_STAGES: dict[Stage, str] = {
    Stage.QUEUED: "Waiting",
    Stage.PREPARING: "Preparing your photos",
    Stage.TRAINING: "Training your face model",
    Stage.SAVING: "Saving your face model",
    Stage.GENERATING: "Painting your portraits",
    Stage.RANKING: "Picking the best likenesses",
}

_RUN_STATUSES = {"queued": "waiting", "running": "running"}

_STYLE_ERRORS = {
    "not_safetensors": "the file must be a .safetensors LoRA",
    "too_large": "the file is too large",
    "bad_tensor_names": "the file doesn't look like an SD 1.5 LoRA (unexpected tensor names)",
    "bad_header": "the file is damaged (its safetensors header can't be read)",
    "too_many_tensors": "the file holds far more tensors than an SD 1.5 LoRA",
    "non_finite": "the file holds NaN or infinite weights, which would spoil every portrait",
    "exists_builtin": "a built-in style already has that name",
    "exists": "a style with that name already exists (remove it first)",
    "bad_name": "the name must be 1-32 characters: a-z, 0-9, _ or -, starting with a letter or digit",
    "download_failed": "I couldn't download the file",
}


def _echo(value: str) -> str:
    value = " ".join(value.split())
    return value if len(value) <= _ECHO_MAX else value[: _ECHO_MAX - 1] + "…"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _lines(*parts: str) -> str:
    return "\n".join(p for p in parts if p)


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.0f} MB"


# --------------------------------------------------------------------------------- start and help
def commands() -> str:
    """The command list shown by /start and /help."""
    return "\n".join(catalogue.help_line(c) for c in catalogue.listed())


def welcome(min_photos: int, max_photos: int, private: bool) -> str:
    """/start: what the bot does, what it needs and keeps, and the commands."""
    where = "" if private else "Training happens in a private chat with me: message me directly.\n"
    steps = _lines(
        "Hi! I turn a few selfies into portraits in different styles.",
        f"1. Send /train, then {min_photos} to {max_photos} photos of your face.",
        "2. Send /done and tell me who is in them. Training takes a few minutes.",
        "3. Send /generate and pick a style.",
    )
    keeps = where + "I keep your photos and your face model until you send /forget."
    return "\n\n".join((steps, keeps, commands()))


def help_text(admin_here: bool) -> str:
    """/help: the commands (plus /admin for an admin of this community)."""
    admin = catalogue.help_line(catalogue.ADMIN) if admin_here else ""
    return _lines("What I can do:", commands(), admin)


def unknown_command(name: str) -> str:
    return f"I don't know /{_echo(name)}. Send /help for the list of commands."


def idle_hint(has_model: bool) -> str:
    """A private text message while nothing is going on."""
    if has_model:
        return "Send /generate to make portraits, or /help for everything I can do."
    return "Send /train to get started, or /help for everything I can do."


# --------------------------------------------------------------------------------- collecting photos
def train_in_private(command: str = "train") -> str:
    """/train or /done in a group: the photo set lives in the private chat."""
    return f"Photos are collected in a private chat: message me directly and send /{command} there."


def photos_in_private() -> str:
    return "Please send your photos to me in our private chat, not here."


def training_in_progress() -> str:
    return "Your face model is training right now. I'll message you when it's ready. /cancel stops it."


def new_set_beside_a_model() -> str:
    """Photos sent with no set open, by someone whose face model is ready: they start a new one."""
    return (
        "These photos start a new face model (your current one stays in use until it's ready). "
        "Send /cancel to throw them away instead."
    )


def photos_while_training() -> str:
    return (
        "Your face model is training, so I'm not taking photos right now. "
        "When it's done you can start a new set with /train."
    )


def train_tips(min_photos: int, max_photos: int, *, has_model: bool = False) -> str:
    """/train accepted: how to take photos that train well (``has_model``: training again)."""
    return _lines(
        f"Great! Send me {min_photos} to {max_photos} photos of your face.",
        "Your current face model stays in use until the new one is ready." if has_model else "",
        "Tips: good light, only you in the picture, no sunglasses, different angles and expressions.",
        "Send the original photos, several at once if you like (on Telegram as files: photos sent as photos"
        " arrive compressed).",
        "Send /done when you're finished, or /cancel to stop.",
    )


def set_already_open(count: int, max_photos: int) -> str:
    """/train while a set with photos is open: it is kept, not restarted."""
    return (
        f"You already have a set open with {count} of {max_photos} photos. "
        "Send more, /done to start training, or /cancel to throw them away and start over."
    )


def file_label(index: int, filename: str | None) -> str:
    """How a file of one message is named in a reply: "Photo 2", with its file name when it has one."""
    return f"Photo {index} ({_echo(filename)})" if filename else f"Photo {index}"


def reject_reason(code: str, max_photo_bytes: int) -> str:
    """A RejectReason or BotRejectReason value in plain words."""
    if code == BotRejectReason.TOO_LARGE:
        return f"too large (the limit is {_megabytes(max_photo_bytes)})"
    return _REJECT_REASONS.get(code, "couldn't be used")


def rejection_line(label: str, reason: str) -> str:
    return f"{label}: {reason}"


def next_step(count: int, min_photos: int, max_photos: int) -> str:
    """What to do next with a set of ``count`` photos."""
    if count >= max_photos:
        return f"That's the most I can use ({max_photos}). Send /done to start training."
    if count >= min_photos:
        return f"Send more (up to {max_photos}), or /done to start training."
    return f"Send {min_photos - count} more (I need at least {min_photos})."


def files_refused(lines: Sequence[str], saving: int, count: int | None, min_photos: int, max_photos: int) -> str:
    """Files refused before download; ``saving`` others of the same message are being stored; ``count``:
    the photos of the open set (None: no set was open, and none was opened for these files)."""
    head = "I can't use this file:" if len(lines) == 1 else f"I can't use {len(lines)} of these files:"
    if saving:
        tail = "Saving the rest…"
    elif count is None:
        tail = "I only take photos (JPEG, PNG or WebP) of your face, to train a face model: /train starts."
    else:
        tail = next_step(count, min_photos, max_photos)
    return _lines(head, *lines, tail)


def photos_saved(stored: int, total: int, lines: Sequence[str], min_photos: int, max_photos: int) -> str:
    """The one reply after a message's photos were stored: count, rejections, what next."""
    head = (
        f"Got {_plural(stored, 'photo')} ({total} of {max_photos})."
        if stored
        else f"No new photos saved ({total} of {max_photos})."
    )
    refused = "Not used:" if lines else ""
    return _lines(head, refused, *lines, next_step(total, min_photos, max_photos))


def collecting_hint(count: int, min_photos: int, max_photos: int) -> str:
    """A text message while collecting."""
    return _lines(f"I'm waiting for photos ({count} of {max_photos} so far).", next_step(count, min_photos, max_photos))


def need_more_photos(count: int, min_photos: int) -> str:
    """/done with too few photos."""
    return f"You have {_plural(count, 'photo')}; I need at least {min_photos}. Send {min_photos - count} more."


def no_open_set() -> str:
    """/done with nothing being collected."""
    return "There's no photo set to finish. Send /train to start one."


def discarded(count: int, runs_still_active: bool) -> str:
    """/cancel while collecting."""
    more = " Your running jobs continue; /cancel again stops them." if runs_still_active else ""
    if count == 0:
        return f"Okay, I stopped collecting photos.{more}"
    return f"Okay, I threw away the {_plural(count, 'photo')} of this set.{more}"


def kept_photos_cancel_again(count: int) -> str:
    """/cancel just after a training was cancelled (the set was kept): nothing is thrown away unasked."""
    return (
        f"Your photo set ({_plural(count, 'photo')}) is still kept: only the training was cancelled. "
        "Send /cancel again to throw it away, or /done to train on it."
    )


def photo_set_is_private(count: int) -> str:
    """/cancel in a group while a photo set is open in the private chat, with no run to stop."""
    return (
        f"There's nothing to cancel here. Your photo set ({_plural(count, 'photo')}) is in our private chat:"
        " send /cancel there to throw it away."
    )


def back_to_collecting(count: int, max_photos: int) -> str:
    """/cancel while choosing the subject: the photos are kept."""
    return f"Okay, your {count} of {max_photos} photos are kept. Send more, or /done when you're ready."


# --------------------------------------------------------------------------------------- subject
def ask_subject() -> str:
    return "Who is in these photos? This helps me describe them while training."


def subject_label(subject: Subject) -> str:
    return _SUBJECTS[subject]


def question_expired() -> str:
    return "This question has expired. Send /status to see where things are."


def button_expired() -> str:
    return "This button doesn't work any more. Send /help to see what you can do."


# ---------------------------------------------------------------------------------------- progress
def queue_place(position: int | None) -> str:
    """Where a run waits; positions count from 1 (next to run)."""
    if position is None:
        return "waiting in line"
    if position <= 1:
        return "next in line"
    return f"number {position} in line"


def train_queued(position: int | None) -> str:
    return (
        f"Training queued ({queue_place(position)}). It takes a few minutes; "
        "I'll tell you when your model is ready. /cancel stops it."
    )


def generate_queued(style: str, count: int, position: int | None) -> str:
    return f"Making {_plural(count, 'portrait')} in {_echo(style)} ({queue_place(position)})."


def progress_bar(fraction: float, width: int = 10) -> str:
    """A text bar like ``▓▓▓▓░░░░░░ 40%``."""
    fraction = min(max(fraction, 0.0), 1.0)
    filled = round(fraction * width)
    return f"{'▓' * filled}{'░' * (width - filled)} {round(fraction * 100)}%"


def progress(stage: Stage, fraction: float, position: int | None, detail: str = "") -> str:
    """The live text of a progress message; ``detail`` is the worker's note (e.g. photos usable)."""
    if stage is Stage.QUEUED:
        return f"Waiting ({queue_place(position)})…"
    if stage in (Stage.TRAINING, Stage.GENERATING):
        text = f"{_STAGES[stage]}…\n{progress_bar(fraction)}"
    else:
        text = f"{_STAGES[stage]}…"
    return f"{text}\n{detail}" if detail and stage is Stage.PREPARING else text


def cancelling(count: int) -> str:
    """RunsCancelled follow-up."""
    if count == 0:
        return "Nothing was running."
    return f"Cancelling {_plural(count, 'job')}…"


def cancelling_edit() -> str:
    return "Cancelling…"


def run_restarted(attempt: int, max_attempts: int) -> str:
    """The run's GPU worker stopped; the run waits in line again (its progress message says so)."""
    return f"The GPU worker stopped, so I started again (try {attempt} of {max_attempts})…"


def queue_unavailable() -> str:
    """The job queue cannot be reached (Redis is down): nothing was started."""
    return "I'm busy right now and couldn't start that. Please try again shortly."


def nothing_to_cancel() -> str:
    return "There's nothing to cancel."


# ------------------------------------------------------------------------------------ training done
#: How each pipeline stage a run reports is named to users.
STAGE_WORDS: dict[str, str] = {
    "orientation": "orientation",
    "detection": "face detection",
    "alignment": "alignment",
    "skin_retouch": "skin retouching",
    "human_parsing": "background removal",
    "landmark_check": "landmark check",
    "tagger": "tagging",
    "face_attributes": "face attributes",
    "face_quality": "template choice",
    "lora_training": "face model training",
    "generation": "generation",
    "face_fusion": "face fusion",
    "ranking": "likeness ranking",
    "face_filter": "face check",
    "nsfw_check": "safety filter",
}


def _steps(stages: Sequence[str]) -> str:
    return f" Steps: {', '.join(STAGE_WORDS.get(s, s) for s in stages)}." if stages else ""


def train_done_edit(stages: Sequence[str] = ()) -> str:
    """The training progress message, finished; names the pipeline stages that ran."""
    return "Training done." + _steps(stages)


def train_failed_edit() -> str:
    return "Training stopped."


def model_ready(has_styles: bool) -> str:
    pick = "Pick a style to make portraits, or send /generate." if has_styles else ("Send /generate to make portraits.")
    return f"Your face model is ready! {pick}"


def photo_number(number: int | None) -> str:
    """A photo of a submitted set, by its place in the set when known."""
    return f"Photo {number}" if number is not None else "A photo"


def train_rejections(lines: Sequence[str], usable: int, min_photos: int) -> str:
    """Training found too few usable photos: which were dropped and what to do."""
    need = max(min_photos - usable, 1)
    return _lines(
        f"I could only use {_plural(usable, 'photo')}; I need at least {min_photos}.",
        "These didn't work:" if lines else "",
        *lines,
        f"Send {need} more (clear, only you, good light), then /done again. /cancel starts over.",
    )


def train_cancelled() -> str:
    return (
        "Training cancelled. Your photos are kept: send /done to train again, "
        "send more photos, or /cancel to throw them away."
    )


def error_reason(code: ErrorCode) -> str:
    """An ErrorCode in plain words."""
    return _ERRORS[code]


def train_failed(code: ErrorCode) -> str:
    """Training failed for a reason that is not the photos' fault."""
    return _lines(
        f"Sorry, training failed. {error_reason(code)}",
        "Your photos are kept: send /done to try again, or /cancel to throw them away.",
    )


# ---------------------------------------------------------------------------------------- generate
def still_training() -> str:
    return "Your face model is still training. I'll tell you as soon as it's ready."


def no_model() -> str:
    return "You need a face model first: send /train to me in a private chat, then a few selfies."


def model_failed() -> str:
    return "Your last training didn't work, so there's no face model yet. Send /train to try again."


def quota_user(limit: int) -> str:
    if limit == 0:
        return "Portraits are switched off here: the daily limit is 0."
    return f"You've used your {_plural(limit, 'portrait run')} for today. It resets tomorrow (midnight UTC)."


def quota_community(limit: int) -> str:
    if limit == 0:
        return "Portraits are switched off here: the group's daily limit is 0."
    return f"This group has used its {_plural(limit, 'portrait run')} for today. It resets tomorrow (midnight UTC)."


def already_making(style: str) -> str:
    """A style picker's button pressed again while that style's portraits are on their way."""
    return (
        f'Your {style} portraits are already on their way. For another batch, use "More of this style"'
        f" under them, or send /generate {style}."
    )


def pick_style(count: int, asked_count: int | None, more_styles: bool) -> str:
    """The style picker; ``asked_count`` is a count given without a style (/generate 3)."""
    note = ""
    if asked_count is not None and asked_count != count:
        note = f"The buttons make {count}; for {asked_count}, type /generate <style> {asked_count}."
    elif asked_count is not None:
        note = f"I'll make {_plural(count, 'portrait')}."
    rest = "More styles: /styles." if more_styles else ""
    return _lines("Pick a style:", note, rest)


def no_styles() -> str:
    return "No styles are switched on here. An admin can turn some on with /admin."


def style_list_inline(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "none"


def unknown_style(name: str, enabled: Sequence[str]) -> str:
    return f'I don\'t know the style "{_echo(name)}". Styles here: {style_list_inline(enabled)}.'


def style_disabled(name: str, enabled: Sequence[str]) -> str:
    return f'The style "{_echo(name)}" is switched off here. Styles here: {style_list_inline(enabled)}.'


def bad_count(max_count: int) -> str:
    return f"The number of portraits must be from 1 to {max_count}, like /generate <style> {max_count}."


def portraits_caption(style: str, best: float | None, blocked: int) -> str:
    """Caption under delivered portraits."""
    caption = f"{style} · best match {best:.2f}" if best is not None else style
    if blocked:
        caption += f" ({blocked} held back by the safety filter)"
    return caption


def for_member(name: str, text: str) -> str:
    """A personal answer shown where the whole group sees it: who it is for, first."""
    return f"{name}: {text}" if name else text


def cannot_post_here(*, run_started: bool) -> str:
    """Told privately when the bot may not post in the channel where it was asked (Discord's permissions)."""
    text = (
        "I can't post in this channel, so your progress and portraits can't appear here. Ask a server admin"
        " to give me View Channel, Send Messages and Attach Files in this channel, or ask me in another one."
    )
    return f"{text} So I stopped what you just asked for: it didn't count against your limit." if run_started else text


def results_not_sent_privately(name: str) -> str:
    """Before results posted in the group because the member's private chat refused them."""
    who = f"{name}, I" if name else "I"
    return (
        f"{who} couldn't send your portraits to your private chat, so here they are. To get them there next"
        " time, start a private chat with me (or allow direct messages from this server's members)."
    )


def more_label() -> str:
    return "More of this style"


def another_label() -> str:
    return "Another style"


def generate_done_edit(stages: Sequence[str] = ()) -> str:
    """The generation progress message, finished; names the pipeline stages that ran."""
    return "Done." + _steps(stages)


def generate_failed_edit() -> str:
    return "No portraits this time."


def generate_stopped_edit() -> str:
    """A /generate's progress message once /forget stopped it."""
    return "Stopped."


def no_usable_portrait(style: str, blocked: int) -> str:
    held = f" {blocked} {'was' if blocked == 1 else 'were'} held back by the safety filter." if blocked else ""
    return (
        f"None of the {_echo(style)} portraits looked enough like you, so I didn't send any.{held} "
        "This didn't count against your daily limit. Try again, or another style."
    )


def generate_cancelled() -> str:
    return "Portraits cancelled. This didn't count against your daily limit."


def generate_failed(code: ErrorCode) -> str:
    return f"Sorry, I couldn't make your portraits. {error_reason(code)} This didn't count against your daily limit."


def style_lora_missing(style: str) -> str:
    """A style file's LoRA is not on the GPU worker (``models fetch`` was not run for it)."""
    return (
        f'Sorry, the style "{_echo(style)}" isn\'t ready on this server yet: its style model file is missing. '
        "The bot's operator can download it with the command: facechain-bot models fetch. "
        "This didn't count against your daily limit. Try another style meanwhile."
    )


def style_upload_missing(style: str) -> str:
    """A community style's uploaded LoRA is gone (the style was removed or replaced meanwhile)."""
    return (
        f'Sorry, the style "{_echo(style)}" has lost its LoRA file (it was removed or replaced). '
        "An admin can add it again with /admin addstyle. This didn't count against your daily limit."
    )


# ------------------------------------------------------------------------------------- styles, status
def styles_list(styles: Sequence[StyleInfo], admin_hint: bool) -> str:
    """/styles."""
    if not styles:
        return no_styles()
    lines = [f"{s.name}: {s.description}" if s.description else s.name for s in styles]
    admin = (
        "Admins: /admin styles lists them all; /admin enable and /admin disable switch them here." if admin_hint else ""
    )
    return _lines("Styles you can use (/generate <style>):", *lines, admin)


def style_previews(names: Sequence[str]) -> str:
    """The caption of the style pictures shown with a style list."""
    if len(names) == 1:
        return f"What {names[0]} looks like."
    return f"What the styles look like, in order: {', '.join(names)}."


def run_line(run: RunInfo) -> str:
    """One active run in /status."""
    what = "Training" if run.kind == "train" else f"Portraits ({_echo(run.style or 'a style')})"
    status = _RUN_STATUSES.get(run.status, run.status)
    parts = [f"{what}: {status}"]
    if run.status == "running":
        parts.append(f"{round(min(max(run.progress, 0.0), 1.0) * 100)}%")
    elif run.queue_position is not None:
        parts.append(queue_place(run.queue_position))
    return ", ".join(parts)


def status(
    model: ModelState,
    has_ready_model: bool,
    runs: Sequence[RunInfo],
    collecting: int | None,
    choosing_subject: bool,
    max_photos: int,
    used_today: int,
    quota: int | None,
) -> str:
    """/status: the model, active runs, an open set, today's usage. ``model`` is the latest training's
    state; ``has_ready_model``: an earlier model is still there to use (a new one trains or failed)."""
    return _lines(
        f"Face model: {_model_line(model, has_ready_model)}",
        *(run_line(r) for r in runs),
        f"Photo set: {collecting} of {max_photos} (send more, or /done)" if collecting is not None else "",
        "Waiting for you to say who is in the photos." if choosing_subject else "",
        f"Portrait runs today: {used_today} of {quota}" if quota is not None else "",
    )


# -------------------------------------------------------------------------------------------- forget
def forget_question() -> str:
    return (
        "This deletes everything I keep about you: all your photos, face models, portraits and "
        "history. It can't be undone. Delete it all?"
    )


def forget_yes_label() -> str:
    return "Yes, delete everything"


def forget_no_label() -> str:
    return "No, keep it"


def forget_hint() -> str:
    """A text message while the /forget question is open."""
    return "Please tap a button: delete everything, or keep it."


def forgotten() -> str:
    return "Done: everything I had about you is deleted. Send /start if you want to begin again."


def forget_declined() -> str:
    return "Okay, nothing was deleted."


# --------------------------------------------------------------------------------------------- admin
def admin_in_group() -> str:
    return "/admin works in a group or server where you are an admin."


def admin_only() -> str:
    return "Only admins of this group can use /admin."


def admin_usage() -> str:
    return _lines("Admin commands:", *(catalogue.help_line(c, catalogue.ADMIN) for c in catalogue.ADMIN_COMMANDS))


def admin_usage_for(subcommand: str) -> str:
    """Usage of one admin subcommand, after it was given wrong arguments."""
    command = catalogue.admin_command(subcommand)
    if command is None:
        return "Usage: /admin <command>; send /admin for the list"
    return "Usage: " + catalogue.help_line(command, catalogue.ADMIN)


def admin_styles(styles: Sequence[StyleInfo], enabled: Sequence[str]) -> str:
    """/admin styles: every style with on or off."""
    if not styles:
        return "There are no styles yet. Add one with /admin addstyle <name> <prompt>."
    on = set(enabled)
    lines = [f"{s.name}: {'on' if s.name in on else 'off'}{'' if s.builtin else ' (added here)'}" for s in styles]
    return _lines("Styles here:", *lines, "Change with /admin enable <style> or /admin disable <style>.")


def community_settings(member_limit: int | None, everyone_limit: int | None, direct: bool, nsfw: bool) -> str:
    """What the admin commands set here, each with the command that changes it (under /admin styles)."""

    def per_day(limit: int | None) -> str:
        return "no daily limit" if limit is None else f"{_plural(limit, 'portrait run')} a day"

    return _lines(
        "Settings here:",
        f"- each member: {per_day(member_limit)} (/admin quota user)",
        f"- everyone together: {per_day(everyone_limit)} (/admin quota group)",
        f"- portraits: {'sent to members privately' if direct else 'posted where members ask'} (/admin results)",
        f"- NSFW results: {'allowed' if nsfw else 'blocked'} (/admin nsfw)",
    )


def admin_unknown_style(name: str, known: Sequence[str]) -> str:
    return f'There\'s no style "{_echo(name)}". Known styles: {style_list_inline(known)}.'


def style_switched(name: str, enabled: bool) -> str:
    return f"{name} is now {'on' if enabled else 'off'} here."


def style_bad_name() -> str:
    return (
        "Style names are 1-32 characters: a-z, 0-9, _ or -, starting with a letter or digit."
        " Example: /admin addstyle film_noir <prompt>"
    )


def style_needs_prompt() -> str:
    return "A style needs a prompt, e.g. /admin addstyle film_noir black and white photo, dramatic light"


def style_prompt_too_long(max_chars: int) -> str:
    return f"The prompt is too long (at most {max_chars} characters)."


def lora_not_safetensors() -> str:
    return "The attached file must be a .safetensors LoRA."


def lora_too_large(max_bytes: int) -> str:
    return f"The attached LoRA is too large (the limit is {_megabytes(max_bytes)})."


def style_added(name: str, replaced: bool = False) -> str:
    """``replaced``: a style of that name was added here before; its prompt and file are replaced."""
    done = "replaced (new prompt and file)" if replaced else "added"
    return f"Style {name} {done} and switched on. Members can use it with /generate {name}."


def style_add_failed(name: str, code: str, limit: int | None = None) -> str:
    """``limit``: for "too_large", the size the chat platform hands over to bots."""
    reason = _STYLE_ERRORS.get(code, f"it was refused ({_echo(code)})")
    if code == "too_large" and limit is not None:
        reason = f"{reason} (the limit is {_megabytes(limit)})"
    return f"I couldn't add {_echo(name)}: {reason}."


def style_name_alike(name: str, existing: str) -> str:
    """/admin addstyle with a name that differs from a community style's only by case, '_' or '-'."""
    return (
        f"I couldn't add {_echo(name)}: it would be mixed up with the style {existing} (names are matched"
        f" ignoring case, _ and -). Pick another name, or /admin removestyle {existing} first to replace it."
    )


def builtin_not_removable(name: str) -> str:
    return f"{name} is built in and can't be removed. /admin disable {name} switches it off here."


def style_removed(name: str) -> str:
    return f"Style {name} removed."


def quota_set(scope: str, limit: int | None, bot_default: int | None) -> str:
    """An admin set a daily limit; ``bot_default`` is the operator's limit per member, which applies
    when a community sets none of its own."""
    who = "each member" if scope == "user" else "the whole group"
    if limit is None and scope == "user" and bot_default is not None:
        return f"Each member has the bot's own daily limit again: {_plural(bot_default, 'portrait run')}."
    if limit is None:
        return f"No daily limit for {who} any more."
    off = " Portraits are switched off here." if limit == 0 else ""
    return f"Daily limit for {who}: {_plural(limit, 'portrait run')}.{off}"


def results_set(direct: bool) -> str:
    if direct:
        return "Portraits will be sent to members privately."
    return "Portraits will be posted where members ask for them."


def nsfw_set(allowed: bool, age_restricted_here: bool | None = None) -> str:
    """``age_restricted_here``: whether the platform marks this channel age-restricted (None: no such mark)."""
    if allowed and age_restricted_here is False:
        return (
            "NSFW results are allowed now, in this server's age-restricted channels only: this channel isn't"
            " one, so they stay filtered here."
        )
    if allowed:
        return "NSFW results are allowed here now."
    return "NSFW results are blocked here."
