"""Effects: what the pure flow asks the service to do in the world (storage, queue, downloads).

Some effects produce a follow-up event (SavePhotos → PhotosSaved) that goes back through the flow,
so every text the user sees is chosen by the flow."""

from __future__ import annotations

from dataclasses import dataclass

from bot.core.events import OfferedFile
from pipeline.jobs import Subject


@dataclass(frozen=True, slots=True)
class StartCollecting:
    """Open a new photo set (discarding an unfinished one)."""


@dataclass(frozen=True, slots=True)
class SavePhotos:
    """Download, check and store these files in the open set; answer with PhotosSaved."""

    files: tuple[OfferedFile, ...]
    #: Each file's place in the user's message (1-based), so that a reply names the right one.
    numbers: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class DiscardPhotos:
    """Drop the open photo set and its blobs."""


@dataclass(frozen=True, slots=True)
class ReopenSet:
    """After a training run found too few usable photos: reopen its set without the rejected ones."""

    drop_keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StartTraining:
    """Submit the open set and enqueue a training run; the service sends its progress message."""

    subject: Subject


@dataclass(frozen=True, slots=True)
class StartGeneration:
    """Enqueue a generation run with the user's ready model."""

    style: str
    count: int


@dataclass(frozen=True, slots=True)
class CancelRuns:
    """Cancel the user's queued and running runs."""


@dataclass(frozen=True, slots=True)
class ForgetUser:
    """Delete every row and blob of the user."""


@dataclass(frozen=True, slots=True)
class SetStyleEnabled:
    """Admin: switch a style on or off in the current community."""

    style: str
    enabled: bool


@dataclass(frozen=True, slots=True)
class AddStyle:
    """Admin: add a community style; ``lora`` is an uploaded .safetensors file to validate and store."""

    name: str
    prompt: str
    lora: OfferedFile | None = None


@dataclass(frozen=True, slots=True)
class RemoveStyle:
    """Admin: remove a community-defined style."""

    name: str


@dataclass(frozen=True, slots=True)
class SetQuota:
    """Admin: daily /generate quota; scope "user" (each member) or "group" (whole community)."""

    scope: str
    limit: int | None


@dataclass(frozen=True, slots=True)
class SetCommunityOption:
    """Admin: a community option ("results_to" = channel|direct, "nsfw" = on|off)."""

    name: str
    value: str


Effect = (
    StartCollecting
    | SavePhotos
    | DiscardPhotos
    | ReopenSet
    | StartTraining
    | StartGeneration
    | CancelRuns
    | ForgetUser
    | SetStyleEnabled
    | AddStyle
    | RemoveStyle
    | SetQuota
    | SetCommunityOption
)
