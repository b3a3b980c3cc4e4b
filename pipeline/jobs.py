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
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from pipeline import recipe

CONTRACT_VERSION: Literal[1] = 1

# ----------------------------------------------------------------------------------------- queues
#: Training jobs: minutes of GPU each; a worker serving only this queue keeps portraits unblocked.
TRAIN_QUEUE = "facechain:queue:train"
#: Generation jobs: seconds of GPU each.
GENERATE_QUEUE = "facechain:queue:generate"
#: The bot's own queue: workers send outcomes here as jobs (durable, unlike pub/sub).
BOT_QUEUE = "facechain:queue:bot"

#: The URL schemes arq (``RedisSettings.from_dsn``) reads: TCP, TLS, and a local socket.
REDIS_SCHEMES = ("redis", "rediss", "unix")


def _check_redis_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in REDIS_SCHEMES:
        raise ValueError("expected a redis://host:port/db, rediss://host:port/db or unix:///path/to.sock URL")
    if parts.scheme == "unix" and not parts.path:
        raise ValueError("a unix:// Redis URL needs the socket's path: unix:///run/redis/redis.sock")
    return url.strip()


#: How both sides reach the queues (the ``FACECHAIN_REDIS_URL`` setting of each process).
RedisUrl = Annotated[str, AfterValidator(_check_redis_url)]

# ------------------------------------------------------------------------------------------- jobs
TRAIN_JOB = "train_face_model"
GENERATE_JOB = "generate_portraits"
#: Runs in the bot process; its single argument is a :data:`Outcome` as JSON-ready dict.
DELIVER_JOB = "deliver_outcome"

#: Pub/sub channel for :class:`Progress` messages (lossy: a bot that is down misses them).
PROGRESS_CHANNEL = "facechain:progress"

#: Seconds both sides' Redis clients wait to connect, and for the answer to a command. No command either
#: side sends blocks in Redis, so a longer wait means Redis hangs (stopped, or cut off without a reset):
#: it is then treated as down.
REDIS_CONNECT_TIMEOUT_S = 3.0
REDIS_COMMAND_TIMEOUT_S = 5.0

#: The most portraits one generation delivers, and the most candidates it may make for them.
MAX_PORTRAITS = 10
MAX_CANDIDATES = 40

#: Trigger token FaceChain trains the face LoRA on.
TRIGGER_TOKEN = recipe.TRIGGER_TOKEN

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{7,63}$")
#: Schemes of a model reference: a weight file the worker resolves in FACECHAIN_MODELS_DIR (``modelscope:``,
#: ``ms:``, ``hf:``, ``huggingface:``: where ``models fetch`` puts it) or on its disk (``file:``). A blob key
#: never has a colon, so the two cannot be mistaken for each other.
MODEL_REFERENCE_SCHEMES: tuple[str, ...] = ("modelscope", "ms", "hf", "huggingface", "file")
_BLOB_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.=-]*(/[A-Za-z0-9_][A-Za-z0-9_.=-]*)*$")


def worker_health_key(queue: str) -> str:
    """The key a worker serving ``queue`` (``train`` or ``generate``) refreshes while its event loop runs."""
    return f"facechain:health:{queue}"


def is_model_reference(value: str) -> bool:
    """True for a scheme-prefixed model reference (``modelscope:…``, ``hf:…``, ``file:…``), never a blob key."""
    scheme, colon, rest = value.partition(":")
    return bool(colon and rest) and scheme.lower() in MODEL_REFERENCE_SCHEMES


def cancel_key(run_id: str) -> str:
    """Redis key the bot sets to ask a running job to stop at its next step."""
    return f"facechain:cancel:{run_id}"


def heartbeat_key(run_id: str) -> str:
    """Redis key a worker keeps alive (a short TTL, refreshed by its event loop) while it holds a run.

    Its value is the arq job id of the attempt being worked on. The bot's run supervisor reads it: a
    run whose job is in progress but whose heartbeat has lapsed lost its worker (killed, or cut off).
    """
    return f"facechain:heartbeat:{run_id}"


def superseded_key(job_id: str) -> str:
    """Redis key the bot sets when it gave up on one attempt (its worker went silent) and started another.

    A worker that still holds that attempt (it was only cut off from Redis) stops it and reports nothing.
    """
    return f"facechain:superseded:{job_id}"


def arq_job_id(run_id: str, attempt: int) -> str:
    """The arq job id for one attempt of a run.

    arq refuses a job id whose previous result is still kept, so a retry after a failure needs a new
    id: the attempt number makes one while keeping the run id visible.
    """
    return f"{run_id}.{attempt}"


def deliver_job_id(job_id: str) -> str:
    """The arq job id of the outcome of job ``job_id`` on the bot's queue: one outcome per attempt."""
    return f"deliver.{job_id}"


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
    #: A weight is not on the worker; for a generation, the style's LoRA (the outcome names the style).
    MODEL_MISSING = "model_missing"
    #: The user's face LoRA is refused on load (NaN or infinite weights, not a LoRA): train again.
    FACE_MODEL_DAMAGED = "face_model_damaged"
    #: The style's LoRA is refused on load (NaN or infinite weights, not a LoRA): an admin replaces it.
    STYLE_DAMAGED = "style_damaged"
    BAD_PAYLOAD = "bad_payload"
    INTERNAL = "internal"
    #: The run's worker stopped (killed, crashed, cut off) on every attempt; said by the bot, not a worker.
    WORKER_LOST = "worker_lost"
    #: No worker served the run's queue for as long as the bot waits for one; said by the bot.
    NO_WORKER = "no_worker"


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


#: FaceChain's trigger phrase per subject: what the caption says after the trigger token.
TRIGGER_PHRASES: dict[Subject, str] = {Subject(name): phrase for name, phrase in recipe.TRIGGER_PHRASES.items()}


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
    """A style as the worker needs it: prompts, an optional style LoRA and the two multipliers.

    The LoRA comes from one of two places, in two fields so that they are never confused: ``lora``,
    a model reference of a style file (built-in or FACECHAIN_STYLES_DIR) that the worker resolves in
    its models or styles directory, or ``lora_key``, the blob key of a LoRA an admin uploaded for a
    community style.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64)
    prompt: str = Field(max_length=2000)
    negative_prompt: str = Field(default="", max_length=2000)
    #: A model reference (``modelscope:owner/name@rev/file.safetensors``, ``hf:…``, ``file:/path``).
    lora: str | None = Field(default=None, max_length=512)
    #: A blob key: an admin's uploaded LoRA.
    lora_key: BlobKey | None = None
    style_weight: float = Field(default=recipe.FACECHAIN.style_weight, ge=0.0, le=2.0)
    face_weight: float = Field(default=recipe.FACECHAIN.face_weight, ge=0.0, le=2.0)
    #: Words the style LoRA was trained on; they open the style's part of the prompt.
    trigger_words: str = Field(default="", max_length=300)
    #: "painting": FaceChain's photo words leave the prompt and "paintings, sketches" the negative.
    medium: recipe.Medium = "photo"

    @model_validator(mode="before")
    @classmethod
    def _upload_in_old_field(cls, data: Any) -> Any:
        # A job queued by a bot from before ``lora_key`` carries an upload's blob key in ``lora``.
        if isinstance(data, dict) and data.get("lora_key") is None:
            lora = data.get("lora")
            if isinstance(lora, str) and lora and not is_model_reference(lora):
                data = {**data, "lora": None, "lora_key": lora}
        return data

    @field_validator("lora")
    @classmethod
    def _valid_reference(cls, value: str | None) -> str | None:
        if value is not None and not is_model_reference(value):
            raise ValueError(f"not a model reference (modelscope:, hf: or file:): {value[:80]!r}")
        return value

    @field_validator("lora_key")
    @classmethod
    def _valid_key(cls, value: str | None) -> str | None:
        return None if value is None else _check_blob_key(value)

    @model_validator(mode="after")
    def _one_lora(self) -> StyleSpec:
        if self.lora is not None and self.lora_key is not None:
            raise ValueError("a style has one LoRA: a model reference (lora) or an uploaded blob (lora_key)")
        return self


class GenerateRequest(_Payload):
    """Generate portraits of one user in one style."""

    kind: Literal["generate"] = "generate"
    user_id: int
    model_id: int
    lora_key: BlobKey
    template_key: BlobKey | None = None
    trigger: str = Field(max_length=200)
    style: StyleSpec
    count: int = Field(default=4, ge=1, le=MAX_PORTRAITS)
    candidates: int = Field(default=recipe.FACECHAIN.candidates, ge=1, le=MAX_CANDIDATES)
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


class _Outcome(_Payload):
    """What every outcome carries: how the run ended, how long it took and which stages ran."""

    error: ErrorCode | None = None
    message: str = ""
    seconds: float = 0.0
    #: The pipeline stages that ran, in order (training: ``orientation``, ``detection``, ...,
    #: ``lora_training``; generation: ``generation``, ``face_fusion``, ``ranking``, ``nsfw_check``).
    stages_run: list[str] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


class TrainOutcome(_Outcome):
    """What a training run produced. ``error`` is None exactly when a LoRA was written."""

    kind: Literal["train"] = "train"
    lora_key: BlobKey | None = None
    template_key: BlobKey | None = None
    subject: Subject | None = None
    trigger: str | None = None
    used_photos: list[BlobKey] = Field(default_factory=list)
    rejections: list[PhotoRejection] = Field(default_factory=list)
    #: The face backend gave no attributes and the request named no subject: ask the user.
    needs_subject: bool = False
    steps: int = 0


class Portrait(BaseModel):
    """One delivered portrait: where it is, how to reproduce it, how much it looks like the user."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: BlobKey
    seed: int
    #: Cosine similarity of its face to the template face; None when ranking is off.
    score: float | None = None


class GenerateOutcome(_Outcome):
    """What a generation run produced. ``error`` is None exactly when portraits were delivered."""

    kind: Literal["generate"] = "generate"
    style: str = ""
    portraits: list[Portrait] = Field(default_factory=list)
    #: Candidates withheld by the NSFW check (never sent).
    blocked: int = 0
    #: Candidates dropped for having no single, sensible face.
    dropped: int = 0


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


def failed_outcome(kind: str, run_id: str, code: ErrorCode, message: str) -> TrainOutcome | GenerateOutcome:
    """The outcome of a ``kind`` run that ended with ``code``, whoever says it (a worker, the bot)."""
    if kind == "train":
        return TrainOutcome(run_id=run_id, error=code, message=message)
    return GenerateOutcome(run_id=run_id, error=code, message=message)


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
