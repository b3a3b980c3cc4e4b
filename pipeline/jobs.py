"""The contract between the bot process and the GPU workers.

This module is the only code the two sides share. It names the arq queues and jobs, and defines the
versioned payloads that travel through Redis: requests (bot → worker), outcomes (worker → bot, as a
job on the bot's own queue, so a finished result survives a bot restart) and progress (worker → bot,
over pub/sub, lossy by design).

Payloads carry ids and blob keys only, never file paths or pixels, and travel as JSON (see
:func:`serialize` / :func:`deserialize`, which the arq pools and workers on both sides use instead of
pickle). Every payload has a ``v`` field; a worker refuses a version it does not know with
:attr:`ErrorCode.BAD_PAYLOAD` instead of guessing.

Nothing here imports torch, arq or redis: the bot installs without the GPU stack.
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

CONTRACT_VERSION: Literal[1] = 1

# ----------------------------------------------------------------------------------------- queues
#: Training jobs: minutes of GPU each; a worker serving only this queue keeps portraits unblocked.
TRAIN_QUEUE = "facechain:queue:train"
#: Generation jobs: seconds of GPU each.
GENERATE_QUEUE = "facechain:queue:generate"
#: The bot's own queue: workers send outcomes here as jobs (durable, unlike pub/sub).
BOT_QUEUE = "facechain:queue:bot"

# ------------------------------------------------------------------------------------------- jobs
TRAIN_JOB = "train_face_model"
GENERATE_JOB = "generate_portraits"
#: Runs in the bot process; its single argument is a :data:`Outcome` as JSON-ready dict.
DELIVER_JOB = "deliver_outcome"

#: Pub/sub channel for :class:`Progress` messages (lossy: a bot that is down misses them).
PROGRESS_CHANNEL = "facechain:progress"

#: Trigger token FaceChain trains the face LoRA on.
TRIGGER_TOKEN = "<fcsks>"

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{7,63}$")
_BLOB_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.=-]*(/[A-Za-z0-9_][A-Za-z0-9_.=-]*)*$")


def cancel_key(run_id: str) -> str:
    """Redis key the bot sets to ask a running job to stop at its next step."""
    return f"facechain:cancel:{run_id}"


def arq_job_id(run_id: str, attempt: int) -> str:
    """The arq job id for one attempt of a run.

    arq refuses a job id whose previous result is still kept, so a retry after a failure needs a new
    id: the attempt number makes one while keeping the run id visible.
    """
    return f"{run_id}.{attempt}"


def run_prefix(run_id: str) -> str:
    """Blob key prefix under which a run writes all of its outputs (and its done marker)."""
    return f"runs/{run_id}"


def outcome_key(run_id: str) -> str:
    """Blob key of a run's done marker: the outcome JSON, written last, after every output."""
    return f"{run_prefix(run_id)}/outcome.json"


# ------------------------------------------------------------------------------------- enumerations
class ErrorCode(StrEnum):
    """Why a job did not produce what was asked. The bot turns each into a message for the user."""

    NO_FACE = "no_face"
    TOO_FEW_PHOTOS = "too_few_photos"
    NO_USABLE_PORTRAIT = "no_usable_portrait"
    OUT_OF_MEMORY = "out_of_memory"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    MODEL_MISSING = "model_missing"
    BAD_PAYLOAD = "bad_payload"
    INTERNAL = "internal"


class RejectReason(StrEnum):
    """Why preprocessing dropped one photo (reported per photo, so the user can replace it)."""

    NOT_AN_IMAGE = "not_an_image"
    NO_FACE = "no_face"
    SEVERAL_FACES = "several_faces"
    FACE_TOO_SMALL = "face_too_small"
    TOO_BLURRY = "too_blurry"
    DUPLICATE = "duplicate"
    LOW_QUALITY = "low_quality"


class Subject(StrEnum):
    """Who is in the training photos; chosen by the user or derived from gender/age attributes."""

    MAN = "man"
    WOMAN = "woman"
    BOY = "boy"
    GIRL = "girl"
    PERSON = "person"


#: FaceChain-style trigger phrase per subject: what the caption says after the trigger token.
TRIGGER_PHRASES: dict[Subject, str] = {
    Subject.MAN: "a handsome man",
    Subject.WOMAN: "a beautiful woman",
    Subject.BOY: "a boy, children",
    Subject.GIRL: "a girl, children",
    Subject.PERSON: "a person",
}


class Stage(StrEnum):
    """Coarse phases of a job, for progress messages."""

    QUEUED = "queued"
    PREPARING = "preparing"
    TRAINING = "training"
    SAVING = "saving"
    GENERATING = "generating"
    RANKING = "ranking"


# -------------------------------------------------------------------------------------- validators
def _check_run_id(value: str) -> str:
    if not _RUN_ID.match(value):
        raise ValueError("run_id must be 8-64 characters of letters, digits, '_' or '-'")
    return value


def _check_blob_key(value: str) -> str:
    if len(value) > 512 or not _BLOB_KEY.match(value) or ".." in value.split("/"):
        raise ValueError(f"not a valid blob key: {value[:80]!r}")
    return value


RunId = Annotated[str, Field(min_length=8, max_length=64)]
BlobKey = Annotated[str, Field(min_length=1, max_length=512)]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = CONTRACT_VERSION
    run_id: RunId

    @field_validator("run_id")
    @classmethod
    def _valid_run_id(cls, value: str) -> str:
        return _check_run_id(value)


# ----------------------------------------------------------------------------------------- requests
class TrainRequest(_Payload):
    """Train one face LoRA from a user's photo set."""

    kind: Literal["train"] = "train"
    user_id: int
    model_id: int
    photo_keys: list[BlobKey] = Field(min_length=1, max_length=50)
    #: None lets the worker derive it from face attributes, or report ``needs_subject``.
    subject: Subject | None = None
    min_photos: int = Field(default=3, ge=1, le=50)
    #: None: FaceChain's default, 200 steps a photo, capped.
    max_train_steps: int | None = Field(default=None, ge=1, le=10_000)
    seed: int = 42

    @field_validator("photo_keys")
    @classmethod
    def _valid_keys(cls, keys: list[str]) -> list[str]:
        return [_check_blob_key(k) for k in keys]


class StyleSpec(BaseModel):
    """A style as the worker needs it: prompts, an optional style LoRA and the two multipliers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64)
    prompt: str = Field(max_length=2000)
    negative_prompt: str = Field(default="", max_length=2000)
    #: A blob key (admin upload) or a model reference the worker resolves (built-in styles).
    lora: str | None = Field(default=None, max_length=512)
    style_weight: float = Field(default=0.3, ge=0.0, le=2.0)
    face_weight: float = Field(default=0.9, ge=0.0, le=2.0)


class GenerateRequest(_Payload):
    """Generate portraits of one user in one style."""

    kind: Literal["generate"] = "generate"
    user_id: int
    model_id: int
    lora_key: BlobKey
    template_key: BlobKey | None = None
    trigger: str = Field(max_length=200)
    style: StyleSpec
    count: int = Field(default=4, ge=1, le=10)
    candidates: int = Field(default=10, ge=1, le=40)
    seed: int | None = None
    allow_nsfw: bool = False

    @field_validator("lora_key", "template_key")
    @classmethod
    def _valid_keys(cls, key: str | None) -> str | None:
        return None if key is None else _check_blob_key(key)


Request = Annotated[TrainRequest | GenerateRequest, Field(discriminator="kind")]


# ----------------------------------------------------------------------------------------- outcomes
class PhotoRejection(BaseModel):
    """One photo dropped by preprocessing, and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    photo_key: BlobKey
    reason: RejectReason
    detail: str = ""


class TrainOutcome(_Payload):
    """What a training run produced. ``error`` is None exactly when a LoRA was written."""

    kind: Literal["train"] = "train"
    error: ErrorCode | None = None
    message: str = ""
    lora_key: BlobKey | None = None
    template_key: BlobKey | None = None
    subject: Subject | None = None
    trigger: str | None = None
    used_photos: list[BlobKey] = Field(default_factory=list)
    rejections: list[PhotoRejection] = Field(default_factory=list)
    #: The face backend gave no attributes and the request named no subject: ask the user.
    needs_subject: bool = False
    steps: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


class Portrait(BaseModel):
    """One delivered portrait: where it is, how to reproduce it, how much it looks like the user."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: BlobKey
    seed: int
    #: Cosine similarity of its face to the template face; None when ranking is off.
    score: float | None = None


class GenerateOutcome(_Payload):
    """What a generation run produced. ``error`` is None exactly when portraits were delivered."""

    kind: Literal["generate"] = "generate"
    error: ErrorCode | None = None
    message: str = ""
    style: str = ""
    portraits: list[Portrait] = Field(default_factory=list)
    #: Candidates withheld by the NSFW check (never sent).
    blocked: int = 0
    #: Candidates dropped for having no single, sensible face.
    dropped: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


Outcome = Annotated[TrainOutcome | GenerateOutcome, Field(discriminator="kind")]
_OUTCOME = TypeAdapter[TrainOutcome | GenerateOutcome](Outcome)
_REQUEST = TypeAdapter[TrainRequest | GenerateRequest](Request)


class Progress(BaseModel):
    """A lossy progress note for a running job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = CONTRACT_VERSION
    run_id: RunId
    stage: Stage
    #: 0.0-1.0 within the stage.
    fraction: float = Field(default=0.0, ge=0.0, le=1.0)
    message: str = Field(default="", max_length=500)


def parse_request(data: Any) -> TrainRequest | GenerateRequest:
    """Validate an incoming job argument (raises pydantic.ValidationError on a malformed one)."""
    return _REQUEST.validate_python(data)


def parse_outcome(data: Any) -> TrainOutcome | GenerateOutcome:
    """Validate an outcome that arrived on the bot's queue or from a done marker."""
    return _OUTCOME.validate_python(data)


def parse_outcome_json(data: bytes | str) -> TrainOutcome | GenerateOutcome:
    """Validate an outcome stored as JSON (a run's done marker)."""
    return _OUTCOME.validate_json(data)


def salvage_run_id(data: Any) -> str | None:
    """The run id of a payload that failed validation, if it has a usable one (to report back)."""
    if isinstance(data, dict):
        value = data.get("run_id")
        if isinstance(value, str) and _RUN_ID.match(value):
            return value
    return None


# ---------------------------------------------------------------------------- arq serialization (JSON)
def serialize(obj: dict[str, Any]) -> bytes:
    """arq ``job_serializer``: JSON instead of pickle, so no job can execute code on load."""
    return json.dumps(obj, separators=(",", ":"), default=str).encode()


def deserialize(data: bytes) -> dict[str, Any]:
    """arq ``job_deserializer``, the inverse of :func:`serialize`."""
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError("job data must be a JSON object")
    return value
