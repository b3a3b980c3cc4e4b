"""Typed records the repositories return. Plain frozen dataclasses: no SQL, no I/O.

A record's fields are named as its table's columns: the repositories fill them by name
(:func:`storage.repositories._base.record`), so renaming a field means renaming the column too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Platform(StrEnum):
    TELEGRAM = "telegram"
    DISCORD = "discord"
    CLI = "cli"


class PhotoSetStatus(StrEnum):
    COLLECTING = "collecting"
    SUBMITTED = "submitted"
    DISCARDED = "discarded"


class ModelStatus(StrEnum):
    PENDING = "pending"
    TRAINING = "training"
    READY = "ready"
    FAILED = "failed"
    CANCELLED = "cancelled"


class RunKind(StrEnum):
    TRAIN = "train"
    GENERATE = "generate"


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        return self in (RunStatus.QUEUED, RunStatus.RUNNING)


class ResultsTo(StrEnum):
    """Where a community wants /generate results posted."""

    CHANNEL = "channel"
    DIRECT = "direct"


@dataclass(frozen=True, slots=True)
class User:
    id: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Identity:
    platform: Platform
    platform_user_id: str
    user_id: int
    display_name: str


@dataclass(frozen=True, slots=True)
class PhotoSet:
    id: int
    user_id: int
    status: PhotoSetStatus
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Photo:
    id: int
    set_id: int
    user_id: int
    blob_key: str
    sha256: str
    size_bytes: int
    width: int
    height: int
    mime: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class FaceModel:
    id: int
    user_id: int
    version: int
    status: ModelStatus
    photo_set_id: int | None
    subject: str | None
    trigger: str | None
    template_key: str | None
    lora_key: str | None
    error_code: str | None
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where a run's progress and result go: a chat on a platform, and the message to edit."""

    platform: Platform
    chat_id: str
    progress_message_id: str | None = None
    #: The community the request came from (quotas, styles); None for a private chat.
    community_id: int | None = None
    #: The chat the request was made in, when the result goes to another (a results-to-DMs community):
    #: the progress message is there, and the result falls back to it if the private chat refuses it.
    asked_in_chat_id: str | None = None


@dataclass(frozen=True, slots=True)
class Run:
    id: str
    user_id: int
    kind: RunKind
    status: RunStatus
    attempt: int
    model_id: int | None
    style: str | None
    count: int | None
    progress: float
    stage: str | None
    error_code: str | None
    error_message: str | None
    delivery: Delivery
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    #: When the result reached the user (None: not yet, or the run is still active).
    delivered_at: datetime | None = None
    #: The job payload (JSON) the run was submitted with; a restarted attempt submits it again.
    request: str | None = None


@dataclass(frozen=True, slots=True)
class CustomStyle:
    """A style an admin added to one community."""

    community_id: int
    name: str
    prompt: str
    negative_prompt: str
    lora_key: str | None
    style_weight: float
    face_weight: float
    created_by: int | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Community:
    id: int
    platform: Platform
    external_id: str
    #: Styles an admin switched on here (overrides a style that is off by default).
    enabled_styles: frozenset[str] = field(default_factory=frozenset)
    #: Styles an admin switched off here (overrides a style that is on by default).
    disabled_styles: frozenset[str] = field(default_factory=frozenset)
    #: /generate runs a member may start per day here; None = the global default.
    user_daily_quota: int | None = None
    #: /generate runs the whole community may start per day; None = unlimited.
    community_daily_quota: int | None = None
    results_to: ResultsTo = ResultsTo.CHANNEL
    nsfw_allowed: bool = False


@dataclass(frozen=True, slots=True)
class Portrait:
    id: int
    run_id: str
    user_id: int
    blob_key: str
    seed: int
    score: float | None
    style: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class UserSnapshot:
    """What the conversation needs to know about one user, read in one statement (see
    :class:`~storage.repositories.snapshots.SnapshotsRepository`)."""

    #: The persisted conversation state (None: the user has none yet).
    state: dict[str, Any] | None
    #: The status of the user's newest face model (None: no model).
    model_status: ModelStatus | None
    has_ready_model: bool
    #: Photos in the set collecting now (0 without one).
    photo_count: int
    #: Blob keys of the collecting set, else of the newest model's set, in the order they arrived.
    photo_keys: tuple[str, ...]
    #: Queued and running runs, oldest first.
    active_runs: tuple[Run, ...]
    #: The user's /generate count that day where asked (a community, or private chats).
    generations_today: int
    #: The user's /generate count that day in every community and private chat.
    generations_everywhere: int = 0


@dataclass(frozen=True, slots=True)
class CommunitySnapshot:
    """A community's settings, its own styles (by name) and everyone's /generate count that day."""

    community: Community
    custom_styles: tuple[CustomStyle, ...]
    generations_today: int
    #: /generate runs queued or running there now (not charged yet, but they will be).
    active_generations: int = 0
