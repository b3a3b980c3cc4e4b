"""What the flow decides on: the user's persisted conversation state, and the facts the service
reads from storage for one event. Both are plain values, so the flow stays a pure function."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from bot.core.limits import Limits


class Mode(StrEnum):
    """Where the user is in the conversation."""

    IDLE = "idle"
    #: Photos are being collected for a training run (private chat only).
    COLLECTING = "collecting"
    #: /done was accepted; waiting for "who is in these photos".
    ASKING_SUBJECT = "asking_subject"
    #: /forget asked for confirmation.
    CONFIRMING_FORGET = "confirming_forget"


@dataclass(frozen=True, slots=True)
class UserState:
    """Persisted between events (the service stores it as JSON per user)."""

    mode: Mode = Mode.IDLE
    #: The mode to return to when a /forget confirmation is declined.
    resume: Mode = Mode.IDLE
    #: The photo set was kept when its training was cancelled: a /cancel sent right after (before the
    #: user read that) must not throw it away unasked.
    kept_after_cancel: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode.value, "resume": self.resume.value, "kept_after_cancel": self.kept_after_cancel}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> UserState:
        if not data:
            return cls()
        try:
            mode, resume = Mode(data.get("mode", "idle")), Mode(data.get("resume", "idle"))
        except ValueError:
            return cls()
        return cls(mode=mode, resume=resume, kept_after_cancel=data.get("kept_after_cancel") is True)


class ModelState(StrEnum):
    """The user's face model as the flow sees it."""

    NONE = "none"
    TRAINING = "training"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class StyleInfo:
    name: str
    description: str = ""
    #: Shipped with the bot (can be switched off in a community, never removed).
    builtin: bool = False
    #: Blob key of a picture of the style (from its style file's ``preview``), shown with the style list.
    preview: str | None = None


@dataclass(frozen=True, slots=True)
class RunInfo:
    """An active (queued or running) run of the user."""

    run_id: str
    kind: str
    status: str
    progress: float = 0.0
    queue_position: int | None = None
    style: str | None = None


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything the flow needs to know about the world for one event, read before it runs."""

    limits: Limits = field(default_factory=Limits)
    #: True in a private chat / DM; False in a group or server channel.
    private: bool = True
    #: The community (group or server) the event came from; None in a private chat.
    community: str | None = None
    #: The sender may administer this community (checked by the adapter with the platform's API).
    is_admin: bool = False
    model: ModelState = ModelState.NONE
    #: A ready model exists even if a newer one is training (generation can use the ready one).
    has_ready_model: bool = False
    photo_count: int = 0
    #: Blob keys of the user's latest photo set in the order received: numbers photos in messages
    #: about a training run's rejections ("Photo 3: no face found"). Empty when unknown.
    photo_keys: tuple[str, ...] = ()
    styles: tuple[StyleInfo, ...] = ()
    #: Every style known here, enabled or not (admins list and toggle these).
    all_styles: tuple[StyleInfo, ...] = ()
    active_runs: tuple[RunInfo, ...] = ()
    generations_today: int = 0
    #: Today's limit for this user here (None = unlimited).
    user_quota: int | None = None
    community_generations_today: int = 0
    community_quota: int | None = None
    results_to: str = "channel"
    nsfw_allowed: bool = False
    #: The platform marks this channel age-restricted (a Discord NSFW channel); None: no such mark.
    age_restricted: bool | None = None

    @property
    def style_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.styles)

    def style(self, name: str) -> StyleInfo | None:
        """An enabled style by name, case-insensitive."""
        wanted = name.casefold()
        return next((s for s in self.styles if s.name.casefold() == wanted), None)

    def active(self, kind: str) -> tuple[RunInfo, ...]:
        return tuple(r for r in self.active_runs if r.kind == kind)
