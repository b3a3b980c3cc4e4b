"""Portrait generation on the resident base pipeline with a style LoRA and the user's face LoRA.

Per job: the style LoRA (when the style has one) and the face LoRA are applied with the style's
multipliers, N candidates are generated in batches with one seeded generator per candidate
(candidate ``i`` has seed ``seed + i`` whatever the batch size), and the LoRAs are taken off again,
so the UNet and text encoder leave every job as they entered it. The pipeline is never reloaded.

Style LoRAs are shared by many jobs: their files are read and converted (kohya → diffusers naming)
once and kept in a small LRU; a job pays only for its face LoRA.

Two ways to apply the LoRAs (``FACECHAIN_LORA_MERGE``):

- ``direct`` (default): :class:`pipeline.lora_merge.WeightFuser` adds both LoRAs into the resident
  weights in place and copies the exact originals back after the job; no peft layers, so a switch
  to another user's face costs a file read and one small matmul per layer, and the UNet's captured
  CUDA graph (:class:`pipeline.cuda_graphs.GraphedUNet`, ``FACECHAIN_CUDA_GRAPHS``) and the
  compiled UNet (:mod:`pipeline.unet_compile`, ``FACECHAIN_TORCH_COMPILE``) stay valid.
- ``peft``: named peft adapters with ``set_adapters``; ``fuse=True`` merges them for the job (unfused
  peft layers about double the UNet step time) and restores snapshotted originals after it. The
  direct route falls back to this one for a LoRA file it cannot place (DoRA, LoKr, ...).

The denoising loop is written out here (diffusers' StableDiffusionPipeline's, for DPM-Solver and
classifier-free guidance) so that the UNet call can be a graph replay; the same seeds give the same
images as the pipeline's own ``__call__``.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from PIL import Image

from pipeline.background import BackgroundWork
from pipeline.config import WorkerSettings
from pipeline.cuda_graphs import GraphedUNet
from pipeline.devices import DeviceOutOfMemory, free_memory, is_out_of_memory
from pipeline.jobs import TRIGGER_TOKEN, ErrorCode, StyleSpec
from pipeline.lora_files import MAX_LOAD_BYTES, validate_lora_file
from pipeline.lora_merge import LayerLora, UnsupportedLora, WeightFuser, read_lora_layers
from pipeline.prompts import build_prompt_embeds, portrait_negative_prompt, portrait_prompt
from pipeline.unet_compile import compile_unet

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline

log = logging.getLogger(__name__)

STYLE_ADAPTER = "style"
FACE_ADAPTER = "face"
#: The warm-up's stand-in job: a style and prompt of the usual shape.
WARM_UP_STYLE = StyleSpec(name="warm-up", prompt="a portrait")

GenerateProgressFn = Callable[[int, int], None]
StopFn = Callable[[], bool]
LoraState = tuple[dict[str, torch.Tensor], dict[str, float] | None, dict[str, Any] | None]
#: A file as (resolved path, mtime in ns, size): a replaced file is read again.
FileKey = tuple[str, int, int]
T = TypeVar("T")


class GenerationCancelled(Exception):
    """``should_stop`` asked to stop; no candidates are returned and the adapters are removed."""

    error_code = ErrorCode.CANCELLED


@dataclass(frozen=True)
class Candidate:
    """One generated portrait and the seed that reproduces it."""

    image: Image.Image
    seed: int


@dataclass(frozen=True)
class Sampling:
    """What every batch of one job is denoised with: the encoded prompts, the steps and the guidance."""

    prompt_embeds: torch.Tensor
    negative_embeds: torch.Tensor
    steps: int
    guidance: float


def adapter_names(pipe: StableDiffusionPipeline) -> list[str]:
    """Names of the LoRA adapters present on the pipeline's UNet and text encoder."""
    names: set[str] = set()
    for module in (pipe.unet, pipe.text_encoder):
        config = getattr(module, "peft_config", None)
        if config:
            names.update(config)
    return sorted(names)


def has_lora_layers(pipe: StableDiffusionPipeline) -> bool:
    """True when any peft LoRA layer is still injected into the UNet or the text encoder."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) for part in (pipe.unet, pipe.text_encoder) for m in part.modules())


def read_lora(pipe: StableDiffusionPipeline, path: Path) -> LoraState:
    """A LoRA file as diffusers-format state dict, network alphas and adapter metadata.

    The file is checked first (:func:`~pipeline.lora_files.validate_lora_file`: a LoRA, finite
    weights). ``use_safetensors=True``: otherwise diffusers falls back to unpickling a file that
    fails to parse as safetensors, whatever its name.
    """
    validate_lora_file(path, MAX_LOAD_BYTES)
    state, alphas, metadata = pipe.lora_state_dict(
        str(path.parent), weight_name=path.name, use_safetensors=True, return_lora_metadata=True
    )
    return state, alphas, metadata


class PortraitGenerator:
    """Generates portraits on one resident pipeline; one job at a time."""

    def __init__(
        self,
        pipe: StableDiffusionPipeline,
        settings: WorkerSettings | None = None,
        *,
        fuse: bool = False,
        merge: str | None = None,
        cuda_graphs: bool | None = None,
        style_cache_size: int = 4,
        compile_backend: str | Callable[..., Any] = "inductor",
        background: BackgroundWork | None = None,
    ) -> None:
        from pipeline.models import model_side

        self.pipe = pipe
        self.settings = settings or WorkerSettings()
        #: The side of every portrait: FACECHAIN_RESOLUTION (the recipe's 512), at most the model's own.
        self.resolution = model_side(self.settings.resolution, pipe)
        self.fuse = fuse
        self.merge = merge or self.settings.lora_merge
        self.style_cache_size = style_cache_size
        self._style_cache: OrderedDict[FileKey, LoraState] = OrderedDict()
        self._style_layers: OrderedDict[FileKey, list[LayerLora]] = OrderedDict()
        self.fuser = WeightFuser(pipe)
        # Only the direct route keeps the UNet's modules as they are (peft adapters would recompile),
        # and Inductor is only worth its compile on a GPU.
        compiled = None
        if self.merge == "direct" and (pipe.unet.device.type == "cuda" or compile_backend != "inductor"):
            compiled = compile_unet(pipe.unet, self.settings.torch_compile, compile_backend)
        self.unet = GraphedUNet(pipe.unet, compiled=compiled)
        self._job_lock = threading.Lock()
        #: Set once the compiled UNet is in use, or compiling it failed (at once when there is none).
        self.compiled_ready = threading.Event()
        self._pending_compile: tuple[GraphedUNet, int, torch.Tensor] | None = None
        self._compile_started = False
        #: Where the background compile runs (the worker's, so that it can stop it).
        self.background = background or BackgroundWork()
        if compiled is None:
            self.compiled_ready.set()
        use_graphs = self.settings.cuda_graphs if cuda_graphs is None else cuda_graphs
        self.unet.enabled = self.unet.enabled and use_graphs and self.merge == "direct"

    @classmethod
    def load(
        cls, settings: WorkerSettings, *, fuse: bool = False, background: BackgroundWork | None = None
    ) -> PortraitGenerator:
        """Load the base pipeline once (device and dtype from the settings) and wrap it."""
        from pipeline.devices import configure_backends, pick_device, pick_dtype
        from pipeline.models import load_base_pipeline

        device = pick_device(settings)
        configure_backends(device, settings.cudnn_benchmark)
        pipe = load_base_pipeline(settings, device, pick_dtype(settings, device, "infer"))
        if settings.channels_last and device.type == "cuda":
            pipe.unet.to(memory_format=torch.channels_last)
        return cls(pipe, settings, fuse=fuse, background=background)

    def warm_up(self, steps: int = 2, background_compile: bool = False, defer_compile: bool = False) -> float:
        """Run a short job without LoRAs at the default batch (captures the UNet's graph); seconds taken.

        With ``background_compile`` and a compiled UNet, the warm-up uses the plain UNet and a
        thread compiles (or reads from Inductor's cache) and captures the compiled one afterwards;
        the first job that starts after it is ready uses it. Jobs never wait for a compile. With
        ``defer_compile`` that thread starts only at :meth:`start_background_compile`.
        """
        started = time.perf_counter()
        compiled_unet = None
        with self._job_lock:  # a job that arrives meanwhile waits for the capture
            if background_compile and self.unet.compiled is not None:
                compiled_unet, self.unet = self.unet, GraphedUNet(self.pipe.unet)
                self.unet.enabled = compiled_unet.enabled  # graphs or not, as configured
            sampling = self._sampling(WARM_UP_STYLE, TRIGGER_TOKEN, steps, self.settings.guidance_scale)
            count = min(self.settings.candidates, self.settings.generate_batch_size)
            self._run_batches(sampling, list(range(count)), count, None, None)
        if compiled_unet is not None:
            hidden = torch.cat([sampling.negative_embeds, sampling.prompt_embeds])
            hidden = hidden.to(self.pipe.device, self.pipe.unet.dtype)
            self._pending_compile = (compiled_unet, count, hidden)
            if not defer_compile:
                self.start_background_compile()
        return time.perf_counter() - started

    def start_background_compile(self) -> None:
        """Start the compile that :meth:`warm_up` prepared; with none prepared, or once the background
        work is stopping, ``compiled_ready`` is set."""
        if self._pending_compile is None:
            if not self._compile_started:
                self.compiled_ready.set()  # nothing will be compiled in the background
            return
        args, self._pending_compile = self._pending_compile, None
        self._compile_started = self.background.start("unet-compile", self._prepare_compiled, *args)
        if not self._compile_started:
            self.compiled_ready.set()

    def _prepare_compiled(self, unet: GraphedUNet, count: int, hidden: torch.Tensor) -> None:
        """Compile and capture ``unet`` for the default job's shape, then use it from the next job on."""
        started = time.perf_counter()
        try:
            config = self.pipe.unet.config
            side = self.resolution // self.pipe.vae_scale_factor
            sample = torch.zeros((2 * count, config.in_channels, side, side), device=hidden.device, dtype=hidden.dtype)
            timestep = torch.tensor(999, device=hidden.device)
            with torch.no_grad():
                unet(sample, timestep, hidden.repeat_interleave(count, dim=0))
            if unet.compiled is None:  # the compiled call failed and fell back (logged there)
                return
            with self._job_lock:  # waits for a running job: it keeps the UNet it started with
                previous, self.unet = self.unet, unet
                previous.reset()
                free_memory()  # the plain UNet's graph pool
            log.info("compiled UNet in use after %.1fs", time.perf_counter() - started)
        except Exception:
            log.warning("compiling the UNet failed; generation stays uncompiled", exc_info=True)
        finally:
            self.compiled_ready.set()

    # ------------------------------------------------------------------------------ adapters
    def _cached_style(self, cache: OrderedDict[FileKey, T], path: Path, read: Callable[[Path], T]) -> T:
        """A style LoRA file read once (``read`` checks it first) and kept while its size and mtime stay."""
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        cached = cache.get(key)
        if cached is not None:
            cache.move_to_end(key)
            return cached
        loaded = cache[key] = read(path)
        while len(cache) > self.style_cache_size:
            cache.popitem(last=False)
        return loaded

    def _style_state(self, path: Path) -> LoraState:
        return self._cached_style(self._style_cache, path, lambda p: read_lora(self.pipe, p))

    def _style_layers_for(self, path: Path) -> list[LayerLora]:
        return self._cached_style(self._style_layers, path, lambda p: read_lora_layers(self.pipe, p, self.pipe.device))

    def _fuse_direct(self, face_lora_path: Path, style: StyleSpec, style_lora_path: Path | None) -> bool:
        """Fuse style and face LoRA in place; False when a file needs peft's route instead."""
        try:
            loras = []
            if style_lora_path is not None:
                loras.append((self._style_layers_for(Path(style_lora_path)), style.style_weight))
            loras.append((read_lora_layers(self.pipe, Path(face_lora_path), self.pipe.device), style.face_weight))
            self.fuser.fuse(loras)
        except UnsupportedLora as exc:
            log.warning("LoRA not fusable directly (%s); using peft adapters for this job", exc)
            return False
        return True

    def _inject(self, lora: LoraState, name: str) -> None:
        """Load a (cached) LoRA state dict as adapter ``name`` into the UNet and/or text encoder."""
        state, alphas, metadata = lora
        pipe = self.pipe
        parts = [
            (loader, target)
            for prefix, loader, target in (
                ("unet.", pipe.load_lora_into_unet, {"unet": pipe.unet}),
                ("text_encoder.", pipe.load_lora_into_text_encoder, {"text_encoder": pipe.text_encoder}),
            )
            if any(key.startswith(prefix) for key in state)
        ]
        if not parts:
            raise ValueError(f"LoRA {name!r} has no UNet or text-encoder weights")
        with warnings.catch_warnings():
            # peft warns whenever a second adapter joins a model; two adapters is the design here.
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            for loader, target in parts:
                # The loaders may pop from what they are given: copies keep the cache intact.
                loader(
                    dict(state),
                    network_alphas=None if alphas is None else dict(alphas),
                    adapter_name=name,
                    metadata=metadata,
                    _pipeline=pipe,
                    **target,
                )

    def _snapshot_bases(self) -> dict[tuple[str, str], torch.Tensor]:
        from peft.tuners.tuners_utils import BaseTunerLayer

        snapshot: dict[tuple[str, str], torch.Tensor] = {}
        for part in ("unet", "text_encoder"):
            for name, module in getattr(self.pipe, part).named_modules():
                if isinstance(module, BaseTunerLayer):
                    snapshot[(part, name)] = module.get_base_layer().weight.detach().clone()
        return snapshot

    def _clean(self, snapshot: dict[tuple[str, str], torch.Tensor] | None) -> None:
        """Remove every adapter (and undo a fuse exactly): the pipeline leaves as it came."""
        pipe = self.pipe
        if pipe.num_fused_loras:
            pipe.unfuse_lora()
        if has_lora_layers(pipe) or adapter_names(pipe):
            pipe.unload_lora_weights()
        if snapshot:
            with torch.no_grad():
                for (part, name), weight in snapshot.items():
                    getattr(pipe, part).get_submodule(name).weight.copy_(weight)

    # ---------------------------------------------------------------------------- generation
    def generate(
        self,
        face_lora_path: Path,
        style: StyleSpec,
        style_lora_path: Path | None,
        trigger: str,
        count: int,
        candidates: int,
        seed: int | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        batch_size: int | None = None,
        on_progress: GenerateProgressFn | None = None,
        should_stop: StopFn | None = None,
    ) -> list[Candidate]:
        """Generate ``max(candidates, count)`` portraits of the face LoRA's person in ``style``.

        Candidate ``i`` is seeded with ``seed + i`` (a random base when ``seed`` is None), so any
        single portrait can be regenerated. ``on_progress(done, total)`` counts denoising steps
        over all batches; ``should_stop()`` is polled every step and raises
        :class:`GenerationCancelled`. Out of memory raises :class:`~pipeline.devices.DeviceOutOfMemory`.
        Ranking, face filtering and the NSFW check happen downstream.
        """
        settings = self.settings
        steps = steps or settings.inference_steps
        guidance = settings.guidance_scale if guidance is None else guidance
        batch_size = batch_size or settings.generate_batch_size
        total = max(candidates, count)
        base_seed = secrets.randbelow(2**31) if seed is None else seed
        seeds = [base_seed + i for i in range(total)]
        with self._job_lock:  # one job at a time; the compiled UNet is swapped in between jobs
            started = time.perf_counter()
            pipe = self.pipe
            if has_lora_layers(pipe) or adapter_names(pipe):
                log.warning("adapters %s left on the pipeline by an earlier job; removing them", adapter_names(pipe))
                self._clean(None)

            snapshot: dict[tuple[str, str], torch.Tensor] | None = None
            oom = False
            try:
                direct = self.merge == "direct" and self._fuse_direct(face_lora_path, style, style_lora_path)
                if not direct:
                    snapshot = self._apply_peft(face_lora_path, style, style_lora_path)
                sampling = self._sampling(style, trigger, steps, guidance)
                images = self._run_batches(sampling, seeds, batch_size, on_progress, should_stop, graphed=direct)
                log.info(
                    "generated %d candidates in %.1fs (style %s, %d steps)",
                    len(images), time.perf_counter() - started, style.name, steps,
                )  # fmt: skip
                return [Candidate(image=image, seed=s) for image, s in zip(images, seeds, strict=True)]
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                oom = True
            finally:
                self.fuser.restore()
                self._clean(snapshot)
            if oom:
                free_memory()
                raise DeviceOutOfMemory(f"out of memory while generating (batch {batch_size})")
            raise AssertionError("unreachable")

    def _sampling(self, style: StyleSpec, trigger: str, steps: int, guidance: float) -> Sampling:
        """The style's portrait prompt and negative prompt (pipeline/prompts.py), encoded, with the job's
        steps and guidance."""
        prompt_embeds, negative_embeds = build_prompt_embeds(
            self.pipe.tokenizer,
            self.pipe.text_encoder,
            portrait_prompt(style, trigger),
            portrait_negative_prompt(style, trigger),
            self.settings.prompt_encoding,
        )
        return Sampling(prompt_embeds, negative_embeds, steps, guidance)

    def _apply_peft(
        self, face_lora_path: Path, style: StyleSpec, style_lora_path: Path | None
    ) -> dict[tuple[str, str], torch.Tensor] | None:
        """peft's route: named adapters, weighted, fused for the job when ``self.fuse``."""
        pipe = self.pipe
        names, weights = [], []
        if style_lora_path is not None:
            self._inject(self._style_state(Path(style_lora_path)), STYLE_ADAPTER)
            names.append(STYLE_ADAPTER)
            weights.append(style.style_weight)
        self._inject(read_lora(pipe, Path(face_lora_path)), FACE_ADAPTER)
        names.append(FACE_ADAPTER)
        weights.append(style.face_weight)
        pipe.set_adapters(names, weights)
        if not self.fuse:
            return None
        snapshot = self._snapshot_bases()
        pipe.fuse_lora(adapter_names=names, lora_scale=1.0)
        return snapshot

    def _run_batches(
        self,
        sampling: Sampling,
        seeds: list[int],
        batch_size: int,
        on_progress: GenerateProgressFn | None,
        should_stop: StopFn | None,
        graphed: bool = True,
    ) -> list[Image.Image]:
        batches = [seeds[i : i + batch_size] for i in range(0, len(seeds), batch_size)]
        total_steps = sampling.steps * len(batches)
        done = 0

        def step_done() -> None:
            nonlocal done
            done += 1
            if on_progress is not None:
                on_progress(done, total_steps)
            if should_stop is not None and should_stop():
                raise GenerationCancelled(f"generation cancelled after {done} of {total_steps} steps")

        images: list[Image.Image] = []
        for batch in batches:
            if should_stop is not None and should_stop():
                raise GenerationCancelled(f"generation cancelled after {done} of {total_steps} steps")
            latents = self._denoise(sampling, batch, step_done, graphed)
            images.extend(self._decode(latents))
        return images

    @torch.no_grad()
    def _denoise(
        self, sampling: Sampling, seeds: list[int], step_done: Callable[[], None], graphed: bool
    ) -> torch.Tensor:
        """diffusers' SD loop: seeded noise, DPM-Solver steps, classifier-free guidance; the latents."""
        from diffusers.utils.torch_utils import randn_tensor

        pipe = self.pipe
        unet, scheduler = pipe.unet, pipe.scheduler
        device, dtype = unet.device, unet.dtype
        n = len(seeds)
        latent_side = self.resolution // pipe.vae_scale_factor
        shape = (n, unet.config.in_channels, latent_side, latent_side)
        # CPU generators: a seed gives the same starting noise on any GPU (or none).
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        latents = randn_tensor(shape, generator=generators, device=device, dtype=dtype)
        scheduler.set_timesteps(sampling.steps, device=device)
        latents = latents * scheduler.init_noise_sigma
        guidance = sampling.guidance
        cfg = guidance > 1.0
        hidden = sampling.prompt_embeds.to(device, dtype).expand(n, -1, -1)
        if cfg:
            hidden = torch.cat([sampling.negative_embeds.to(device, dtype).expand(n, -1, -1), hidden])
        forward = self.unet if graphed else self.unet.eager
        for t in scheduler.timesteps:
            model_input = torch.cat([latents] * 2) if cfg else latents
            model_input = scheduler.scale_model_input(model_input, t)
            noise_pred = forward(model_input, t, hidden)
            if cfg:
                uncond, text = noise_pred.chunk(2)
                noise_pred = uncond + guidance * (text - uncond)
            latents = scheduler.step(noise_pred, t, latents, return_dict=False)[0]
            step_done()
        return latents

    @torch.no_grad()
    def _decode(self, latents: torch.Tensor) -> list[Image.Image]:
        """VAE-decode in chunks (decoding activations at 512² are large) to PIL images."""
        pipe = self.pipe
        vae = pipe.vae
        chunk = max(1, self.settings.vae_decode_batch)
        images: list[Image.Image] = []
        for start in range(0, latents.shape[0], chunk):
            part = latents[start : start + chunk].to(vae.dtype) / vae.config.scaling_factor
            decoded = vae.decode(part, return_dict=False)[0]
            # As diffusers' image processor: denormalise in the VAE's dtype, then round in fp32.
            pixels = (decoded / 2 + 0.5).clamp(0, 1).float().mul(255).round().to(torch.uint8)
            array = pixels.permute(0, 2, 3, 1).cpu().numpy()
            images.extend(Image.fromarray(a) for a in array)
        return images
