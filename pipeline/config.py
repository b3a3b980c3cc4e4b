"""Settings of the worker process (and of the script-mode commands that run the same stages).

One pydantic-settings class; nothing else in pipeline/ reads the environment. Every field is
``FACECHAIN_<NAME>`` in the environment or in an optional ``.env`` file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, RedisDsn
from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkerSettings(BaseSettings):
    """Everything a GPU worker needs; defaults are FaceChain's own knobs."""

    model_config = SettingsConfigDict(
        env_prefix="FACECHAIN_",
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
    )

    # ---- where things are
    data_dir: Path = Field(default=Path("./data"), description="SQLite file (bot only) and the blob store.")
    redis_url: RedisDsn = Field(default=RedisDsn("redis://127.0.0.1:6379/0"))
    models_dir: Path = Field(default=Path("./models"), description="Downloaded weights live here.")
    base_model: str = Field(
        default="ly261666/cv_portrait_model",
        description="A diffusers folder, a single .safetensors checkpoint, or a hub id fetched into models_dir.",
    )
    styles_dir: Path | None = Field(default=None, description="Extra style files (.toml) beside the built-ins.")

    # ---- which work this worker takes
    queues: list[Literal["train", "generate"]] = Field(default=["train", "generate"], min_length=1)
    train_timeout_s: int = Field(default=1800, ge=10)
    generate_timeout_s: int = Field(default=300, ge=10)

    # ---- devices
    device: str = Field(default="auto", description="auto, cuda, cuda:N or cpu.")
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = "auto"

    # ---- face analysis and preprocessing
    face_backend: Literal["opencv", "insightface"] = "opencv"
    insightface_pack: str = "buffalo_l"
    resolution: int = Field(default=512, ge=64, le=1024)
    min_face_px: int = Field(default=64, ge=8, description="Smallest face side kept, in source pixels.")
    dominance_ratio: float = Field(default=4.0, ge=1.0, description="Largest face area ÷ second's.")
    face_fraction: float = Field(default=0.3, gt=0.05, lt=0.9, description="Face side ÷ crop side.")
    blur_threshold: float = Field(default=25.0, ge=0.0, description="Laplacian variance under this = blurry.")
    human_parsing: bool = Field(default=False, description="White background (ModelScope model).")
    skin_retouch: bool = Field(default=False, description="Skin retouching (ModelScope model).")
    face_quality: bool = Field(default=False, description="Face quality gate (ModelScope model).")

    # ---- training (FaceChain defaults)
    lora_rank: int = Field(default=4, ge=1, le=128)
    lora_alpha: float = Field(default=4.0, gt=0)
    learning_rate: float = Field(default=1.5e-4, gt=0)
    steps_per_photo: int = Field(default=200, ge=1, description="Training samples per photo.")
    max_train_steps: int = Field(default=800, ge=1, description="Cap on training samples (= steps at batch 1).")
    # FaceChain trains at batch 1 with a cosine schedule (800 steps). The same 800 samples in
    # batches of 8 are 100 steps, which need the learning rate scaled with the batch and held after
    # a short warm-up to reach the recipe's loss (docs/benchmarks.md shows it); batch 1, "none",
    # "cosine" and 0 warm-up steps are FaceChain's exact recipe.
    train_batch_size: int = Field(default=8, ge=1, le=64, description="Samples per step; the sample budget stays.")
    lr_batch_scaling: Literal["none", "sqrt", "linear"] = Field(
        default="linear", description="Learning rate × 1, √batch or batch for batches above 1."
    )
    lr_scheduler: str = "constant_with_warmup"
    lr_warmup_steps: int = Field(default=10, ge=0, description="Optimizer steps of linear warm-up.")
    train_seed: int = 42
    init_face_lora: str | None = Field(default=None, description="Generic face LoRA to start from.")

    # ---- generation (FaceChain defaults)
    inference_steps: int = Field(default=40, ge=1, le=150)
    guidance_scale: float = Field(default=7.0, ge=0.0, le=30.0)
    candidates: int = Field(default=10, ge=1, le=40)
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
    face_fusion: bool = Field(default=False, description="Fuse the template face (ModelScope model).")
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

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def post_thread_count(self) -> int:
        """``post_threads`` with 0 resolved to this machine's cores (at most 8)."""
        return self.post_threads or min(8, os.cpu_count() or 1)
