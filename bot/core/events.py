"""Events the conversation core reacts to. Adapters build them from platform updates; the service
builds the follow-up ones (photos saved, job progress, job finished)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from pipeline.jobs import GenerateOutcome, Progress, TrainOutcome


@dataclass(frozen=True, slots=True)
class OfferedFile:
    """A file the user sent, described before it is downloaded (size and type as the platform says).

    ``ref`` is the adapter's handle to fetch it later (a Telegram file_id, a Discord attachment URL).
    """

    ref: str
    size: int | None
    mime: str | None
    filename: str | None = None
    #: Telegram sends a compressed photo and a byte-exact document differently; documents are preferred.
    compressed: bool = False


@dataclass(frozen=True, slots=True)
class Command:
    """A slash command: ``name`` without the slash, lower-case; ``args`` split on whitespace."""

    name: str
    args: tuple[str, ...] = ()
    #: The raw text after the command (for admin commands whose argument is free text, e.g. a prompt).
    text: str = ""
    #: A file sent with the command (an admin's style LoRA).
    attachment: OfferedFile | None = None


@dataclass(frozen=True, slots=True)
class PhotosOffered:
    """One photo, or a whole album (adapters collect an album's updates into one event)."""

    files: tuple[OfferedFile, ...]


@dataclass(frozen=True, slots=True)
class ButtonPressed:
    """A button under an earlier reply was pressed; ``action`` and ``value`` come from its data."""

    action: str
    value: str = ""


@dataclass(frozen=True, slots=True)
class TextMessage:
    """Plain text that is not a command."""

    text: str


class BotRejectReason(StrEnum):
    """Why the bot refused a file before or while storing it (the worker's reasons are RejectReason)."""

    TOO_LARGE = "too_large"
    UNSUPPORTED_TYPE = "unsupported_type"
    #: An iPhone HEIC/HEIF file: refused with a hint to send a photo or a JPEG instead.
    HEIC = "heic"
    SET_FULL = "set_full"
    #: The adapter could not fetch the file (gone, network, over the platform's download limit).
    DOWNLOAD_FAILED = "download_failed"


@dataclass(frozen=True, slots=True)
class SavedPhoto:
    """What storing one accepted photo gave: stored, or rejected once its bytes were seen."""

    ref: str
    stored: bool
    #: RejectReason value or a BotRejectReason value ("too_large", "unsupported_type", "set_full", ...).
    reason: str | None = None
    #: The offered file's name, when it had one (names the file in the reply).
    filename: str | None = None
    #: The file's place in the user's message (1-based; None: the order of the results).
    number: int | None = None
    #: For "too_large": the platform's own download limit, where it is below the bot's.
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class PhotosSaved:
    """Follow-up to a SavePhotos effect: per-file results and the set's new size."""

    results: tuple[SavedPhoto, ...]
    total: int


@dataclass(frozen=True, slots=True)
class JobProgress:
    """A progress note for one of the user's runs (lossy), with its place in the queue if known."""

    progress: Progress
    queue_position: int | None = None


@dataclass(frozen=True, slots=True)
class JobFinished:
    """A run's outcome arrived on the bot's queue."""

    outcome: TrainOutcome | GenerateOutcome
    #: The run's style and requested count (from the runs table), for captions and "more" buttons.
    style: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunQueued:
    """Follow-up to StartTraining/StartGeneration: the run exists and waits in the queue."""

    run_id: str
    kind: str
    queue_position: int | None = None
    style: str | None = None
    count: int | None = None


@dataclass(frozen=True, slots=True)
class CommunityQuotaReached:
    """Follow-up to StartGeneration: members asking at the same moment used the community's daily limit
    up first (nothing was created)."""

    limit: int


@dataclass(frozen=True, slots=True)
class RunsForgotten:
    """Follow-up to ForgetUser: the runs that were stopped as everything was deleted, as (run id, kind)."""

    runs: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class RunsCancelled:
    """Follow-up to CancelRuns: which runs were asked to stop."""

    run_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class QueueUnavailable:
    """Follow-up to StartTraining/StartGeneration when the job queue (Redis) cannot be reached: nothing
    was created, and the user may simply ask again."""

    kind: str


@dataclass(frozen=True, slots=True)
class RunRestarted:
    """The run's worker stopped (killed, crashed, cut off) and the run went back in the queue as ``attempt``."""

    run_id: str
    attempt: int
    max_attempts: int


@dataclass(frozen=True, slots=True)
class StyleAdded:
    """Follow-up to AddStyle: ``error`` is a reason code when the style was refused."""

    name: str
    error: str | None = None
    #: For "too_large": the platform's own download limit, where it is below the bot's.
    limit: int | None = None
    #: A style of that name was there before: this one replaced it.
    replaced: bool = False


Event = (
    Command
    | PhotosOffered
    | ButtonPressed
    | TextMessage
    | PhotosSaved
    | JobProgress
    | JobFinished
    | RunQueued
    | RunsCancelled
    | RunsForgotten
    | CommunityQuotaReached
    | QueueUnavailable
    | RunRestarted
    | StyleAdded
)
