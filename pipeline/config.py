"""Settings of the worker process (and of the script-mode commands that run the same stages).

One pydantic-settings class; nothing else in pipeline/ reads the environment. Every field is
``FACECHAIN_<NAME>`` in the environment or in an optional ``.env`` file.
"""

from __future__ import annotations

import json
import os
import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from pipeline.recipe import (
    DEFAULT_RECIPE,
    FACECHAIN,
    RECIPES,
    SETTING_KNOBS,
    LrBatchScaling,
    PromptEncoding,
    RecipeName,
    SchedulerName,
)
from pipeline.shared_settings import SETTINGS_CONFIG, MetricsPort, SharedSettings

QueueName = Literal["train", "generate"]
#: The devices torch names that a worker can run on (``auto``: CUDA when there is one, else the CPU).
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")

#: Recipe-knob defaults below show FaceChain's value; the recipe FACECHAIN_RECIPE names fills them.
_R = FACECHAIN


#: A FaceChain stage's switch: ``auto`` runs it when its model's files are present, ``on`` requires it
#: (the worker does not start without it), ``off`` never runs it. true/false are read as on/off.
StageSwitch = Literal["auto", "on", "off"]
_SWITCH_WORDS = {"true": "on", "1": "on", "yes": "on", "false": "off", "0": "off", "no": "off"}


class WorkerSettings(SharedSettings):
    """Everything a GPU worker needs (what the bot reads too: :class:`SharedSettings`).

    The training and generation knobs (:data:`pipeline.recipe.SETTING_KNOBS`) default to the recipe
    that ``recipe`` names (:mod:`pipeline.recipe`); a knob set on its own overrides that one only.
    They are filled when the settings are made: ``model_copy(update={"recipe": ...})`` keeps the
    knobs it had (make new settings to change the recipe).
    """

    model_config = SETTINGS_CONFIG

    worker_metrics_port: MetricsPort = None

    # ---- which work this worker takes
    queues: Annotated[list[QueueName], NoDecode] = Field(
        default=["train", "generate"], min_length=1, description="Comma-separated: train, generate or both."
    )
    train_timeout_s: int = Field(default=1800, ge=10)
    generate_timeout_s: int = Field(default=300, ge=10)
    heartbeat_ttl_s: float = Field(
        default=30.0,
        ge=0.5,
        le=600,
        description="Lifetime of a running job's heartbeat in Redis (refreshed three times per lifetime): "
        "the bot restarts or fails a run whose heartbeat lapsed (FACECHAIN_RUN_LOST_AFTER_S).",
    )

    # ---- devices
    device: str = Field(default="auto", description="auto, cuda, cuda:N or cpu.")
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    cpu_threads: int = Field(
        default=0, ge=0, le=512,
        description="Threads torch uses on a CPU; 0 = auto: one for a small model (the tiny test model's operations "
        "are too small to share between threads), torch's default (one per core) otherwise.",
    )  # fmt: skip

    # ---- face analysis and preprocessing
    face_backend: Literal["opencv", "insightface"] = "opencv"
    insightface_pack: str = "buffalo_l"
    resolution: int = Field(
        default=_R.resolution, ge=64, le=1024,
        description="Side in px of training and generation, at most the base model's own (UNet sample_size × "
        "VAE scale: 512 for SD 1.5, 64 for the tiny test model). Photos are aligned at this side.",
    )  # fmt: skip
    min_face_px: int = Field(default=64, ge=8, description="Smallest face side kept, in source pixels.")
    dominance_ratio: float = Field(default=4.0, ge=1.0, description="Largest face area ÷ second's.")
    face_fraction: float = Field(default=0.3, gt=0.05, lt=0.9, description="Face side ÷ crop side.")
    blur_threshold: float = Field(default=25.0, ge=0.0, description="Laplacian variance under this = blurry.")
    # FaceChain's stages (pipeline/stage_models.py names each model; docs/pipeline.md has the table).
    orientation: StageSwitch = Field(default="auto", description="Rotation classifier (Cherrytest/rot_bgr).")
    face_detection: Literal["backend", "damofd"] = Field(
        default="backend", description="backend: FACE_BACKEND's detector (YuNet); damofd: FaceChain's DamoFD."
    )
    skin_retouch: StageSwitch = Field(default="auto", description="Skin retouching (cv_unet_skin_retouching_torch).")
    human_parsing: StageSwitch = Field(default="auto", description="White background (M2FP human parsing).")
    landmark_check: StageSwitch = Field(default="auto", description="Landmark confidence gate (flcm).")
    tagger: StageSwitch = Field(default="auto", description="DeepDanbooru tags (ly261666/cv_portrait_model v4.0).")
    face_attributes: StageSwitch = Field(default="auto", description="FairFace gender/age -> trigger phrase.")
    face_quality: StageSwitch = Field(default="auto", description="Face quality picks the template face (fqa).")
    modelscope_endpoint: str = Field(
        default="https://www.modelscope.cn", description="The ModelScope hub `models fetch` downloads from."
    )

    # ---- the recipe (pipeline/recipe.py): facechain = FaceChain's train_lora.sh and inference.py;
    # fast = the same samples in batches of 8 (docs/benchmarks.md). Each knob below overrides one.
    recipe: RecipeName = Field(default=DEFAULT_RECIPE, description="facechain or fast (pipeline/recipe.py).")

    # ---- training
    lora_rank: int = Field(default=_R.lora_rank, ge=1, le=128)
    lora_alpha: float = Field(default=_R.lora_alpha, gt=0)
    learning_rate: float = Field(default=_R.learning_rate, gt=0)
    steps_per_photo: int = Field(default=_R.steps_per_photo, ge=1, description="Training samples per photo.")
    max_train_steps: int | None = Field(
        default=_R.max_train_steps, ge=1, description="Cap on training samples (= steps at batch 1); None: no cap."
    )
    train_batch_size: int = Field(
        default=_R.train_batch_size, ge=1, le=64, description="Samples per step; the sample budget stays."
    )
    lr_batch_scaling: LrBatchScaling = Field(
        default=_R.lr_batch_scaling, description="Learning rate × 1, √batch or batch for batches above 1."
    )
    lr_scheduler: str = _R.lr_scheduler
    lr_warmup_steps: int = Field(default=_R.lr_warmup_steps, ge=0, description="Optimizer steps of linear warm-up.")
    train_seed: int = _R.train_seed
    init_face_lora: str | None = Field(default=None, description="Generic face LoRA to start from.")

    # ---- generation
    inference_steps: int = Field(default=_R.inference_steps, ge=1, le=150)
    guidance_scale: float = Field(default=_R.guidance_scale, ge=0.0, le=30.0)
    scheduler: SchedulerName = Field(default=_R.scheduler, description="The denoising scheduler (DPM-Solver).")
    prompt_encoding: PromptEncoding = Field(
        default=_R.prompt_encoding,
        description="diffusers: prompts as plain text, first 77 tokens (FaceChain); weighted: (text:1.2) weights "
        "and long prompts in 77-token windows.",
    )
    generate_batch_size: int = Field(default=10, ge=1, le=40, description="Candidates denoised together.")
    vae_decode_batch: int = Field(default=5, ge=1, le=40, description="Candidates decoded together.")
    rank_faces: bool = Field(default=True, description="Filter and rank candidates by face similarity.")
    nsfw_check: bool = True
    nsfw_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    post_threads: int = Field(
        default=0, ge=0, le=64,
        description="CPU threads that rank candidates and run the NSFW check side by side; 0 = one per "
        "core (at most 8), 1 = one after another.",
    )  # fmt: skip
    face_fusion: StageSwitch = Field(default="auto", description="Fuse the template face (cv_unet_face_fusion_torch).")
    face_recognition: Literal["backend", "rts"] = Field(
        default="backend", description="Ranking: backend: FACE_BACKEND's recognizer (SFace); rts: FaceChain's RTS."
    )
    fuse_loras: bool = Field(
        default=True, description="peft route: fuse style and face LoRA into the UNet for a job (exact restore)."
    )
    lora_merge: Literal["direct", "peft"] = Field(
        default="direct", description="direct: add the LoRAs into the weights in place (fast switch); peft: adapters."
    )

    # ---- speed switches (docs/benchmarks.md measures each)
    cuda_graphs: bool = Field(default=True, description="Replay the UNet step (and the training step) as CUDA graphs.")
    channels_last: bool = Field(default=False, description="Channels-last memory format for the inference UNet.")
    cudnn_benchmark: bool = Field(
        default=False, description="Let cuDNN time its convolution algorithms (no gain measured; +1.7 s per start)."
    )
    torch_compile: Literal["off", "on", "tuned"] = Field(
        default="on",
        description="torch.compile the inference UNet on a GPU (tuned: + coordinate-descent kernel tuning), "
        "in the background at start; TORCHINDUCTOR_CACHE_DIR keeps the compile for restarts.",
    )
    train_compile: Literal["off", "on"] = Field(
        default="on",
        description="torch.compile the training step's UNet on a GPU, in the background at start on a copy of "
        "the UNet (minutes the first time, seconds from TORCHINDUCTOR_CACHE_DIR); jobs train uncompiled meanwhile.",
    )
    prepared_model_cache: bool = Field(
        default=True,
        description="Keep a converted copy of the base model (safetensors in the inference dtype) under "
        "models_dir/.prepared, so a restart skips the conversion.",
    )

    @field_validator("queues", mode="before")
    @classmethod
    def _split_queues(cls, value: object) -> object:
        """``train,generate`` (or the JSON list ``["train","generate"]``) from the environment."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except json.JSONDecodeError:
                    raise ValueError("expected train, generate or train,generate") from None
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not _DEVICE.match(value.strip().lower()):
            raise ValueError("expected auto, cpu, cuda, cuda:N (N = 0, 1, ...) or mps")
        return value.strip().lower()

    @field_validator(
        "orientation", "skin_retouch", "human_parsing", "landmark_check", "tagger", "face_attributes",
        "face_quality", "face_fusion", mode="before",
    )  # fmt: skip
    @classmethod
    def _switch_words(cls, value: object) -> object:
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, str):
            return _SWITCH_WORDS.get(value.strip().lower(), value.strip().lower())
        return value

    @model_validator(mode="before")
    @classmethod
    def _recipe_defaults(cls, data: Any) -> Any:
        """Fill every recipe knob that was not set from the recipe ``recipe`` names (read now, so a
        test that swaps a recipe sees its values)."""
        if not isinstance(data, dict):
            return data
        recipe = RECIPES.get(str(data.get("recipe", DEFAULT_RECIPE)))
        if recipe is None:
            return data  # the field's own validation names the bad value
        return {**{knob: getattr(recipe, knob) for knob in SETTING_KNOBS}, **data}

    def recipe_overrides(self) -> dict[str, object]:
        """The recipe knobs set apart from the recipe ``recipe`` names (knob → value in use)."""
        named = RECIPES[self.recipe]
        return {knob: getattr(self, knob) for knob in SETTING_KNOBS if getattr(self, knob) != getattr(named, knob)}

    @property
    def post_thread_count(self) -> int:
        """``post_threads`` with 0 resolved to this machine's cores (at most 8)."""
        return self.post_threads or min(8, os.cpu_count() or 1)
