"""Train a personal face LoRA on the UNet's attention, the FaceChain way.

Written like diffusers' ``examples/text_to_image/train_text_to_image_lora.py`` (``parse_args`` then
``main(args)``), but linear, and on the resident pipeline the worker already holds:

1. The VAE latents of every photo and the caption's text embedding are computed **once**. For the
   augmentation (random flip + random crop) each photo is encoded as a small fixed set of views:
   the full square and ``crops_per_image - 1`` random crops (each ``min_crop_fraction``–100 % of the
   short side), each also mirrored. A step samples among the cached views, and re-samples the
   latent from the cached VAE posterior (mean, std) like the script's ``latent_dist.sample()``.
   This replaces a fresh crop per step by a fresh pick among 2 × ``crops_per_image`` per photo: at
   FaceChain's 200 steps a photo every view is still seen many times, and the step no longer pays
   for the VAE encoder and the text encoder.
2. A peft LoRA (the recipe's rank and alpha, Gaussian init) on ``to_q``, ``to_k``, ``to_v``,
   ``to_out.0`` of every attention block, trainable params in fp32, AdamW (fused on CUDA), the
   recipe's learning-rate schedule, DDPM noise from the base model's own schedule, MSE on epsilon
   (or v). The numbers are :mod:`pipeline.recipe`'s; this module is the machinery.
3. bf16 autocast on CUDA, fp32 on CPU. Losses are copied out asynchronously and read one step
   late, so the CPU queues the next step while the GPU still runs this one (no host sync per step).
4. On CUDA without loss scaling (bf16), ``cuda_graphs``: after a few eager steps the whole step
   (forward, backward, gradient clipping, fused AdamW with a tensor learning rate) is captured once
   as a CUDA graph and replayed; only the sampling of latents, noise and timesteps runs eagerly
   into the graph's static inputs. An eager step is a few thousand kernel launches (the reference
   measured batch 1 and batch 8 steps at the same ≈ 135 ms: launch-bound); a replay is one.
   The same kernels run either way, so the losses match the eager loop's.
5. The adapter, optimizer and captured step stay on the training UNet between jobs
   (:class:`LoraTrainer`, :mod:`pipeline.train_step`): a job re-initialises them in place, so it
   pays neither the set-up nor a new capture, and a compiled step (``FACECHAIN_TRAIN_COMPILE``) is
   traced once per worker, not once per job.
6. Saved with ``StableDiffusionPipeline.save_lora_weights`` in the diffusers format, the file that
   ``pipe.load_lora_weights`` reads. :func:`train_lora` is the one-job form (the script mode's):
   it removes the adapter afterwards and leaves the UNet as it was.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from PIL import Image, ImageOps

from pipeline.background import BackgroundWork
from pipeline.config import WorkerSettings
from pipeline.devices import DeviceOutOfMemory, free_memory, is_out_of_memory, synchronize
from pipeline.jobs import ErrorCode
from pipeline.recipe import LrBatchScaling, Recipe, get_recipe, recipe_default
from pipeline.train_step import TRAIN_ADAPTER, LoraTrainingStep, StepSpec, has_adapters
from pipeline.unet_compile import CompileMode, compile_unet

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline

log = logging.getLogger(__name__)

__all__ = ["LoraTrainer", "TrainArgs", "TrainResult", "TrainingCancelled", "has_adapters", "train_lora"]

#: FaceChain's LoRA targets: the attention projections of every transformer block.
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")

ProgressFn = Callable[[int, int, float], None]
StopFn = Callable[[], bool]
MixedPrecision = Literal["auto", "no", "fp16", "bf16"]


class TrainingCancelled(Exception):
    """``should_stop`` asked to stop; nothing was saved and the UNet is clean again."""

    error_code = ErrorCode.CANCELLED

    def __init__(self, steps_done: int) -> None:
        super().__init__(f"training cancelled after {steps_done} step(s)")
        self.steps_done = steps_done


def _recipe(knob: str) -> Callable[[], Any]:
    """A default factory: the default recipe's ``knob``, read when a TrainArgs is made (pipeline/recipe.py)."""
    return lambda: recipe_default(knob)


@dataclass
class TrainArgs:
    """The training knobs: the recipe's (the default recipe's, :mod:`pipeline.recipe`), then the
    machinery's (views, precision, CUDA graphs, optimizer constants)."""

    rank: int = field(default_factory=_recipe("lora_rank"))
    alpha: float = field(default_factory=_recipe("lora_alpha"))
    learning_rate: float = field(default_factory=_recipe("learning_rate"))
    lr_scheduler: str = field(default_factory=_recipe("lr_scheduler"))
    lr_warmup_steps: int = field(default_factory=_recipe("lr_warmup_steps"))
    steps_per_photo: int = field(default_factory=_recipe("steps_per_photo"))
    #: Cap on the samples; None: 200 a photo however many photos (FaceChain).
    max_train_steps: int | None = field(default_factory=_recipe("max_train_steps"))
    train_batch_size: int = field(default_factory=_recipe("train_batch_size"))
    seed: int = field(default_factory=_recipe("train_seed"))
    resolution: int = field(default_factory=_recipe("resolution"))
    random_flip: bool = field(default_factory=_recipe("random_flip"))
    #: Learning rate × this factor for a batch of ``train_batch_size`` (``sqrt``: × √batch).
    lr_batch_scaling: LrBatchScaling = field(default_factory=_recipe("lr_batch_scaling"))
    target_modules: tuple[str, ...] = field(default_factory=_recipe("lora_targets"))
    random_crop: bool = True
    #: Views cached per photo (the full square + random crops), before mirroring.
    crops_per_image: int = 4
    #: Smallest random crop, as a fraction of the photo's short side.
    min_crop_fraction: float = 0.85
    #: A generic face LoRA (diffusers or kohya safetensors) to start from instead of zeros.
    init_lora: Path | None = None
    #: ``auto``: bf16 autocast on CUDA, none on CPU.
    mixed_precision: MixedPrecision = "auto"
    #: Replay the training step as a CUDA graph (CUDA and bf16/fp32 only: fp16's loss scaler syncs).
    cuda_graphs: bool = True
    #: Eager steps before the capture (they warm cuBLAS/cuDNN up and are real training steps).
    graph_warmup_steps: int = 3
    # AdamW and clipping as diffusers' LoRA script (FaceChain's train_text_to_image_lora.py:439-443).
    max_grad_norm: float = 1.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8

    def total_samples(self, photos: int) -> int:
        """FaceChain's budget in samples: ``steps_per_photo`` × photos, capped at ``max_train_steps``.

        FaceChain trains at batch 1, where a step is a sample; the budget stays in samples at any batch
        size, so a larger batch does the same work in fewer, larger steps.
        """
        samples = self.steps_per_photo * photos
        return max(1, samples if self.max_train_steps is None else min(samples, self.max_train_steps))

    def scaled_learning_rate(self) -> float:
        """The learning rate for this batch size (``lr_batch_scaling``)."""
        factor = {"none": 1.0, "sqrt": math.sqrt(self.train_batch_size), "linear": float(self.train_batch_size)}
        return self.learning_rate * factor[self.lr_batch_scaling]

    def total_steps(self, photos: int) -> int:
        """Optimizer steps: the sample budget divided by the batch size (rounded up)."""
        return -(-self.total_samples(photos) // self.train_batch_size)

    @classmethod
    def from_recipe(cls, recipe: Recipe, **overrides: Any) -> TrainArgs:
        """A recipe's training knobs as :class:`TrainArgs` (machinery defaults); ``overrides`` win."""
        values: dict[str, Any] = {
            "rank": recipe.lora_rank,
            "alpha": recipe.lora_alpha,
            "learning_rate": recipe.learning_rate,
            "lr_scheduler": recipe.lr_scheduler,
            "lr_warmup_steps": recipe.lr_warmup_steps,
            "steps_per_photo": recipe.steps_per_photo,
            "max_train_steps": recipe.max_train_steps,
            "train_batch_size": recipe.train_batch_size,
            "lr_batch_scaling": recipe.lr_batch_scaling,
            "seed": recipe.train_seed,
            "resolution": recipe.resolution,
            "random_flip": recipe.random_flip,
            "target_modules": recipe.lora_targets,
        }
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_settings(cls, settings: WorkerSettings, **overrides: Any) -> TrainArgs:
        """The worker's training settings (its recipe, knobs set one by one) as :class:`TrainArgs`;
        ``overrides`` win."""
        init = Path(settings.init_face_lora) if settings.init_face_lora else None
        values: dict[str, Any] = {
            "rank": settings.lora_rank,
            "alpha": settings.lora_alpha,
            "learning_rate": settings.learning_rate,
            "lr_scheduler": settings.lr_scheduler,
            "lr_warmup_steps": settings.lr_warmup_steps,
            "steps_per_photo": settings.steps_per_photo,
            "max_train_steps": settings.max_train_steps,
            "train_batch_size": settings.train_batch_size,
            "lr_batch_scaling": settings.lr_batch_scaling,
            "cuda_graphs": settings.cuda_graphs,
            "seed": settings.train_seed,
            "resolution": settings.resolution,
            "init_lora": init,
        }
        values.update(overrides)
        return cls.from_recipe(get_recipe(settings.recipe), **values)


@dataclass(frozen=True)
class TrainResult:
    """What a finished training run produced."""

    steps: int
    final_loss: float
    seconds: float
    lora_path: Path


# ------------------------------------------------------------------------------------ data views
def _square_views(image: Image.Image, args: TrainArgs, rng: torch.Generator) -> list[Image.Image]:
    """The cached augmentations of one photo: full square + random crops, each also mirrored."""
    image = ImageOps.exif_transpose(image).convert("RGB")
    width, height = image.size
    side = min(width, height)
    boxes = [((width - side) // 2, (height - side) // 2, side)]
    extra = args.crops_per_image - 1 if args.random_crop else 0
    for _ in range(max(0, extra)):
        fraction = args.min_crop_fraction + (1 - args.min_crop_fraction) * torch.rand(1, generator=rng).item()
        crop = max(8, round(side * fraction))
        left = int(torch.randint(0, width - crop + 1, (1,), generator=rng))
        top = int(torch.randint(0, height - crop + 1, (1,), generator=rng))
        boxes.append((left, top, crop))
    views = []
    for left, top, crop in boxes:
        view = image.crop((left, top, left + crop, top + crop))
        views.append(view.resize((args.resolution, args.resolution), Image.Resampling.BICUBIC))
    if args.random_flip:
        views += [ImageOps.mirror(view) for view in views]
    return views


def _to_tensor(images: Sequence[Image.Image]) -> torch.Tensor:
    """PIL RGB images → a [-1, 1] float batch (N, 3, H, W)."""
    data = torch.stack(
        [torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(im.height, im.width, 3) for im in images]
    )
    return data.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def with_model_resolution(pipe: StableDiffusionPipeline, args: TrainArgs) -> TrainArgs:
    """``args`` at most at the base model's own size (:func:`~pipeline.models.model_side`)."""
    from dataclasses import replace

    from pipeline.models import model_side

    side = model_side(args.resolution, pipe)
    return args if side == args.resolution else replace(args, resolution=side)


@torch.no_grad()
def encode_views(
    pipe: StableDiffusionPipeline, images: Sequence[Image.Image], args: TrainArgs, chunk: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    """VAE posterior (mean, std) of every augmented view of every photo, in fp32 on the device."""
    args = with_model_resolution(pipe, args)
    rng = torch.Generator().manual_seed(args.seed)
    views = [view for image in images for view in _square_views(image, args, rng)]
    vae = pipe.vae
    means, stds = [], []
    for start in range(0, len(views), chunk):
        pixels = _to_tensor(views[start : start + chunk]).to(vae.device, vae.dtype)
        posterior = vae.encode(pixels).latent_dist
        means.append(posterior.mean.float())
        stds.append(posterior.std.float())
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def encode_caption(pipe: StableDiffusionPipeline, caption: str) -> torch.Tensor:
    """The caption's CLIP hidden states (1, 77, dim), as the UNet sees them at inference."""
    tokenizer = pipe.tokenizer
    ids = tokenizer(
        caption,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    return pipe.text_encoder(ids.to(pipe.text_encoder.device), return_dict=False)[0]


# ------------------------------------------------------------------------------------- LoRA plumbing
def _load_init_lora(pipe: StableDiffusionPipeline, path: Path) -> tuple[dict[str, torch.Tensor], int]:
    """A LoRA file's UNet part in peft naming (any format diffusers reads), and its rank."""
    from diffusers.utils import convert_unet_state_dict_to_peft

    state, _alphas = pipe.lora_state_dict(str(path.parent), weight_name=path.name, use_safetensors=True)
    unet_state = {k.removeprefix("unet."): v for k, v in state.items() if k.startswith("unet.")}
    if not unet_state:
        raise ValueError(f"{path} holds no UNet LoRA weights")
    peft_state = convert_unet_state_dict_to_peft(unet_state)
    ranks = {v.shape[0] for k, v in peft_state.items() if "lora_A" in k}
    if len(ranks) != 1:
        raise ValueError(f"{path}: LoRA layers of different ranks {sorted(ranks)} cannot seed training")
    return peft_state, ranks.pop()


class _LossReadout:
    """A loss value on its way to the host: ``.item()`` on a CUDA tensor would wait for every
    kernel queued after it too, so copy it out asynchronously and wait on an event instead."""

    def __init__(self, loss: torch.Tensor) -> None:
        if loss.is_cuda:
            self._host = loss.detach().to("cpu", non_blocking=True)
            self._ready: torch.cuda.Event | None = torch.cuda.Event()
            self._ready.record()
        else:
            self._host, self._ready = loss.detach(), None

    def value(self) -> float:
        if self._ready is not None:
            self._ready.synchronize()
        return float(self._host.item())


def _autocast_dtype(args: TrainArgs, device: torch.device) -> torch.dtype | None:
    mode = args.mixed_precision
    if mode == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"no": None, "fp16": torch.float16, "bf16": torch.bfloat16}[mode]


def _save_lora(unet: torch.nn.Module, config: Any, out_path: Path, adapter: str = TRAIN_ADAPTER) -> None:
    """Write a peft adapter of ``unet`` in diffusers' LoRA format, atomically."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(unet, adapter_name=adapter)
    state = convert_state_dict_to_diffusers({k: v.detach().float().cpu().contiguous() for k, v in state.items()})
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(f".{out_path.name}.{os.getpid()}.partial")
    metadata = config.to_dict()
    metadata["target_modules"] = sorted(metadata["target_modules"])
    StableDiffusionPipeline.save_lora_weights(
        save_directory=out_path.parent,
        unet_lora_layers=state,
        weight_name=partial.name,
        safe_serialization=True,
        unet_lora_adapter_metadata=metadata,
    )
    os.replace(partial, out_path)


# ---------------------------------------------------------------------------------------- training
class LoraTrainer:
    """Trains face LoRAs on one resident pipeline, one job at a time, keeping the step between jobs.

    The adapter, optimizer and captured training step (:class:`pipeline.train_step.LoraTrainingStep`)
    are built by the first job (or by :meth:`warm_up`) and reused while jobs ask for the same shape
    and hyper-parameters. With ``compile_mode`` on, :meth:`warm_up` builds a compiled step
    (:func:`pipeline.unet_compile.compile_unet`) in the background on a copy of the UNet, while jobs
    train on the plain step, and swaps it in between two jobs. :meth:`close` removes the adapter again.
    """

    def __init__(
        self,
        pipe: StableDiffusionPipeline,
        compile_mode: CompileMode = "off",
        compile_backend: str | Callable[..., Any] = "inductor",
        background: BackgroundWork | None = None,
    ) -> None:
        self.pipe = pipe
        #: Where the background compile runs (the worker's, so that it can stop it).
        self.background = background or BackgroundWork()
        self.compile_mode: CompileMode = compile_mode
        if pipe.unet.device.type != "cuda" and compile_backend == "inductor":
            # Inductor on a CPU: minutes of compile for seconds of gain.
            self.compile_mode = "off"
        self.compile_backend = compile_backend
        self.step: LoraTrainingStep | None = None
        self._lock = threading.Lock()
        #: Set once the compiled step is in use, or compiling it failed (at once when there is none).
        self.compiled_ready = threading.Event()
        if self.compile_mode == "off":
            self.compiled_ready.set()

    # --------------------------------------------------------------------------------- jobs
    def train(
        self,
        images: Sequence[Image.Image],
        caption: str,
        args: TrainArgs,
        out_path: Path,
        on_progress: ProgressFn | None = None,
        should_stop: StopFn | None = None,
    ) -> TrainResult:
        """Train a face LoRA from ``images`` captioned ``caption``; save it to ``out_path``.

        ``on_progress(step, total, loss)`` is called once per step, in order. ``should_stop()`` is
        polled before every step; when it returns True, :class:`TrainingCancelled` is raised.
        Running out of accelerator memory raises :class:`~pipeline.devices.DeviceOutOfMemory` (the
        resident step is dropped then, to be built again by the next job).
        """
        from diffusers import DDPMScheduler
        from diffusers.optimization import get_scheduler

        if not images:
            raise ValueError("no training images")
        args = with_model_resolution(self.pipe, args)
        with self._lock:
            pipe = self.pipe
            started = time.perf_counter()
            device = pipe.unet.device
            total = args.total_steps(len(images))
            oom = False
            try:
                init_state, rank = None, args.rank
                if args.init_lora is not None:
                    init_state, rank = _load_init_lora(pipe, Path(args.init_lora))
                    if rank != args.rank:
                        log.info("initial face LoRA has rank %d; training at that rank instead of %d", rank, args.rank)
                latent_mean, latent_std = encode_views(pipe, images, args)
                text = encode_caption(pipe, caption)
                step = self._step_for(args, rank, tuple(latent_mean.shape[1:]), tuple(text.shape[1:]))
                step.begin(args.seed, text.to(step.hidden.dtype), init_state)

                noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
                train_steps = noise_scheduler.config.num_train_timesteps
                velocity = noise_scheduler.config.prediction_type == "v_prediction"
                scaling = pipe.vae.config.scaling_factor
                alphas_cumprod = noise_scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)
                # The schedule is computed on the host (on a stand-in optimizer): a scheduler stepping
                # a tensor learning rate would read it back from the GPU every step.
                learning_rate = args.scaled_learning_rate()
                schedule_holder = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=learning_rate)
                lr_schedule = get_scheduler(
                    args.lr_scheduler, schedule_holder, num_warmup_steps=args.lr_warmup_steps, num_training_steps=total
                )
                generator = torch.Generator(device=device).manual_seed(args.seed)
                batch = args.train_batch_size
                shape = step.noisy.shape

                def sample_inputs() -> None:
                    """A random batch of cached views, noised at random timesteps, into the step's inputs
                    (sampled on the device: a host-to-device copy would wait for the queued steps)."""
                    index = torch.randint(0, latent_mean.shape[0], (batch,), generator=generator, device=device)
                    eps = torch.randn(shape, generator=generator, device=device)
                    latents = (latent_mean[index] + latent_std[index] * eps) * scaling
                    noise = torch.randn(shape, generator=generator, device=device)
                    t = torch.randint(0, train_steps, (batch,), generator=generator, device=device)
                    a = alphas_cumprod[t].view(-1, 1, 1, 1)
                    # DDPMScheduler.add_noise / get_velocity, on device-resident alphas.
                    step.noisy.copy_(a.sqrt() * latents + (1 - a).sqrt() * noise)
                    step.target.copy_(a.sqrt() * noise - (1 - a).sqrt() * latents if velocity else noise)
                    step.timesteps.copy_(t)

                pending: _LossReadout | None = None
                final_loss = math.nan
                for index in range(1, total + 1):
                    if should_stop is not None and should_stop():
                        raise TrainingCancelled(index - 1)
                    step.set_learning_rate(lr_schedule.get_last_lr()[0])
                    loss = step.run(sample_inputs)
                    schedule_holder.step()
                    lr_schedule.step()
                    # Report the previous step now that this one is queued. Its loss was copied out
                    # asynchronously, so reading it waits for that step only, never for this one.
                    if pending is not None and on_progress is not None:
                        on_progress(index - 1, total, pending.value())
                    pending = _LossReadout(loss)
                if pending is not None:
                    final_loss = pending.value()
                    if on_progress is not None:
                        on_progress(total, total, final_loss)
                if not math.isfinite(final_loss):
                    log.warning("training ended with a non-finite loss (%s)", final_loss)
                _save_lora(pipe.unet, step.config, out_path)
                return TrainResult(
                    steps=total, final_loss=final_loss, seconds=time.perf_counter() - started, lora_path=out_path
                )
            except TrainingCancelled:
                raise  # the step stays: the next job starts it afresh
            except Exception as exc:
                self._drop_step()
                if not is_out_of_memory(exc):
                    raise
                oom = True
            if oom:
                free_memory()
                raise DeviceOutOfMemory(
                    f"out of memory while training ({len(images)} photos, batch {args.train_batch_size})"
                )
            raise AssertionError("unreachable")

    def warm_up(self, args: TrainArgs, background_compile: bool = False, after: threading.Event | None = None) -> float:
        """Build and capture the step for the default job's shape now (the worker's start); seconds.

        The warm-up steps run on random inputs; every job restarts the adapter from its initial
        weights, so they leave nothing behind. With ``background_compile`` and a compile mode, a
        thread then compiles a step of its own (or reads it from Inductor's cache) once ``after`` is
        set (another stage's compile: compiles run one at a time); jobs meanwhile train on the plain
        step and wait only for the swap.
        """
        started = time.perf_counter()
        args = with_model_resolution(self.pipe, args)
        with self._lock:
            step = self._build_plain_for_default(args)
            self._exercise(step)
        if self.compile_mode != "off":
            if background_compile:
                if not self.background.start("train-compile", self._prepare_compiled, args, after):
                    self.compiled_ready.set()  # stopping: no compile will come
            else:
                self._prepare_compiled(args, after)
        return time.perf_counter() - started

    def close(self) -> None:
        """Remove the adapter: the UNet is frozen and in eval mode again, as loaded."""
        with self._lock:
            self._drop_step()

    # ----------------------------------------------------------------------------- internals
    def _spec(self, args: TrainArgs, rank: int, latent_shape: tuple[int, ...], text_shape: tuple[int, ...]) -> StepSpec:
        device = self.pipe.unet.device
        return StepSpec(
            rank=rank,
            alpha=args.alpha,
            target_modules=tuple(args.target_modules),
            batch=args.train_batch_size,
            latent_shape=latent_shape,
            text_shape=text_shape,
            amp_dtype=_autocast_dtype(args, device),
            max_grad_norm=args.max_grad_norm,
            betas=(args.adam_beta1, args.adam_beta2),
            weight_decay=args.adam_weight_decay,
            eps=args.adam_epsilon,
            cuda_graph=args.cuda_graphs,
            warmup_steps=max(1, args.graph_warmup_steps),
        )

    def _step_for(
        self, args: TrainArgs, rank: int, latent_shape: tuple[int, ...], text_shape: tuple[int, ...]
    ) -> LoraTrainingStep:
        """The resident step when it fits this job, else a new one (the old adapter removed first)."""
        spec = self._spec(args, rank, latent_shape, text_shape)
        if self.step is not None and self.step.spec == spec:
            return self.step
        if self.step is not None:
            log.info("training settings changed; building the training step again")
        self._drop_step()
        self.step = LoraTrainingStep(self.pipe.unet, spec)
        return self.step

    def _default_shapes(self, args: TrainArgs) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(latent shape, caption hidden-state shape) of a job at ``args``' resolution."""
        pipe = self.pipe
        side = args.resolution // pipe.vae_scale_factor
        latent_shape = (pipe.unet.config.in_channels, side, side)
        text_shape = (pipe.tokenizer.model_max_length, pipe.text_encoder.config.hidden_size)
        return latent_shape, text_shape

    def _build_plain_for_default(self, args: TrainArgs) -> LoraTrainingStep:
        return self._step_for(args, args.rank, *self._default_shapes(args))

    @staticmethod
    def _exercise(step: LoraTrainingStep) -> None:
        """Run the step until it is captured (and compiled, with a compiled forward) on random inputs."""
        generator = torch.Generator(device=step.device).manual_seed(0)

        def fill() -> None:
            step.noisy.normal_(generator=generator)
            step.target.normal_(generator=generator)
            step.timesteps.random_(0, 1000, generator=generator)

        step.begin(0, torch.zeros_like(step.hidden))
        step.set_learning_rate(0.0)
        for _ in range(step.spec.warmup_steps + 2):
            step.run(fill)
        synchronize(step.device)

    def _prepare_compiled(self, args: TrainArgs, after: threading.Event | None) -> None:
        """Build the compiled step beside the resident one, then swap it in between two jobs.

        The compile traces (and first runs) the step it compiles, for minutes the first time: it
        gets a copy of the UNet with a step of its own, so that jobs keep training on the plain step
        meanwhile. The copy, compiled and captured, then becomes the training UNet.
        """
        try:
            while after is not None and not after.wait(0.5):
                if self.background.stopping.is_set():
                    return
            if self.background.stopping.is_set():
                return
            started = time.perf_counter()
            with self._lock:
                unet = _frozen_copy(self.pipe.unet)
                spec = self._spec(args, args.rank, *self._default_shapes(args))
            step = LoraTrainingStep(unet, spec)
            try:
                step.use_forward(compile_unet(unet, self.compile_mode, self.compile_backend))
                self._exercise(step)
            except Exception as exc:
                step.close()
                del step, unet
                free_memory()
                if is_out_of_memory(exc):
                    log.warning("out of memory while compiling the training step; training stays uncompiled")
                else:
                    log.warning("compiling the training step failed; training stays uncompiled", exc_info=True)
                return
            with self._lock:
                self._drop_step()  # the plain step and its adapter, with the UNet they were on
                self.pipe.unet = unet
                self.step = step
            free_memory()
            log.info("compiled training step in use after %.1fs", time.perf_counter() - started)
        except Exception:
            log.warning("preparing the compiled training step failed", exc_info=True)
        finally:
            self.compiled_ready.set()

    def _drop_step(self) -> None:
        if self.step is not None:
            self.step.close()
            self.step = None


def _frozen_copy(unet: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``unet`` on its device without any adapter: frozen and in eval mode, as loaded."""
    import copy

    clone = copy.deepcopy(unet)
    if has_adapters(clone):
        clone.unload_lora()  # type: ignore[operator]
    clone.requires_grad_(False)
    clone.eval()
    return clone


def train_lora(pipe: StableDiffusionPipeline, *job: Any, **options: Any) -> TrainResult:
    """Train one face LoRA on ``pipe.unet`` and leave nothing behind; ``job`` and ``options`` are
    :meth:`LoraTrainer.train`'s arguments.

    Whatever happens, the UNet is left without adapters, frozen and in eval mode, ready for
    generation. A worker keeps a :class:`LoraTrainer` instead, so that the next job reuses the step.
    """
    trainer = LoraTrainer(pipe)
    try:
        return trainer.train(*job, **options)
    finally:
        trainer.close()


# --------------------------------------------------------------------------------------- script mode
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command line of the script mode (``python -m pipeline.train``), like the diffusers example."""
    defaults = TrainArgs()
    parser = argparse.ArgumentParser(description="Train a FaceChain face LoRA on prepared 512² face crops.")
    parser.add_argument("--base_model", default=None, help="Overrides FACECHAIN_BASE_MODEL.")
    parser.add_argument("--images_dir", type=Path, required=True, help="Prepared face photos (png/jpg/webp).")
    parser.add_argument("--caption", required=True, help='e.g. "<fcsks>, a handsome man"')
    parser.add_argument("--output", type=Path, required=True, help="The .safetensors LoRA file to write.")
    for item in fields(TrainArgs):
        if item.name in ("target_modules", "init_lora"):
            continue
        default = getattr(defaults, item.name)
        if isinstance(default, bool):
            parser.add_argument(f"--{item.name}", action=argparse.BooleanOptionalAction, default=None)
        else:
            parser.add_argument(f"--{item.name}", type=int if default is None else type(default), default=None)
    parser.add_argument("--init_lora", type=Path, default=None)
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> TrainResult:
    """Load the base model from the worker settings, train on ``--images_dir``, write ``--output``."""
    from pipeline.devices import configure_backends, pick_device, pick_dtype
    from pipeline.models import load_base_pipeline

    settings = WorkerSettings()
    if args.base_model:
        settings = settings.model_copy(update={"base_model": args.base_model})
    overrides = {
        item.name: getattr(args, item.name) for item in fields(TrainArgs) if getattr(args, item.name, None) is not None
    }
    train_args = TrainArgs.from_settings(settings, **overrides)
    device = pick_device(settings)
    configure_backends(device, settings.cudnn_benchmark)
    pipe = load_base_pipeline(settings, device, pick_dtype(settings, device, "infer"))
    suffixes = {".png", ".jpg", ".jpeg", ".webp"}
    paths = sorted(p for p in args.images_dir.iterdir() if p.suffix.lower() in suffixes)
    images = [Image.open(p) for p in paths]

    def report(step: int, total: int, loss: float) -> None:
        if step == total or step % 50 == 0:
            print(f"step {step}/{total} loss {loss:.4f}", flush=True)

    result = train_lora(pipe, images, args.caption, train_args, args.output, on_progress=report)
    print(f"saved {result.lora_path} after {result.steps} steps in {result.seconds:.1f}s", flush=True)
    return result


if __name__ == "__main__":
    main(parse_args())
