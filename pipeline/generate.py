"""Portrait generation on the resident base pipeline with a style LoRA and the user's face LoRA.

Per job: the style LoRA (when the style has one) and the face LoRA are loaded as two named peft
adapters, weighted with the style's multipliers (``set_adapters``), N candidates are generated in
batches with one seeded generator per candidate (candidate ``i`` has seed ``seed + i`` whatever the
batch size), and the adapters are removed again, so the UNet and text encoder leave every job as
they entered it. The pipeline itself is never reloaded.

Style LoRAs are shared by many jobs: their files are read and converted (kohya → diffusers naming)
once and kept in a small LRU of state dicts; injecting a cached state dict is all a job pays.

``fuse=True`` merges both LoRAs into the base weights for the job (unfused peft layers about double
the UNet step time, see the reference measurements) and restores the exact original weights after
it: fusing and unfusing in fp16 is not an exact round trip, so the touched base weights are
snapshotted and copied back rather than trusting the subtraction.
"""

from __future__ import annotations

import logging
import secrets
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from pipeline.config import WorkerSettings
from pipeline.devices import DeviceOutOfMemory, free_memory, is_out_of_memory
from pipeline.jobs import ErrorCode, StyleSpec
from pipeline.lora_files import validate_lora_file
from pipeline.prompts import build_prompt_embeds, face_prompt, negative_prompt

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline

log = logging.getLogger(__name__)

STYLE_ADAPTER = "style"
FACE_ADAPTER = "face"
#: Style LoRAs beyond this are refused before loading (a SD 1.5 LoRA of rank 128 is about 150 MB).
MAX_STYLE_LORA_BYTES = 512 * 1024 * 1024

GenerateProgressFn = Callable[[int, int], None]
StopFn = Callable[[], bool]
LoraState = tuple[dict[str, torch.Tensor], dict[str, float] | None, dict[str, Any] | None]


class GenerationCancelled(Exception):
    """``should_stop`` asked to stop; no candidates are returned and the adapters are removed."""

    error_code = ErrorCode.CANCELLED


@dataclass(frozen=True)
class Candidate:
    """One generated portrait and the seed that reproduces it."""

    image: Image.Image
    seed: int


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

    ``use_safetensors=True``: otherwise diffusers falls back to unpickling a file that fails to
    parse as safetensors, whatever its name.
    """
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
        style_cache_size: int = 4,
    ) -> None:
        self.pipe = pipe
        self.settings = settings or WorkerSettings()
        self.fuse = fuse
        self.style_cache_size = style_cache_size
        self._style_cache: OrderedDict[tuple[str, int, int], LoraState] = OrderedDict()

    @classmethod
    def load(cls, settings: WorkerSettings, *, fuse: bool = False) -> PortraitGenerator:
        """Load the base pipeline once (device and dtype from the settings) and wrap it."""
        from pipeline.devices import configure_backends, pick_device, pick_dtype
        from pipeline.models import load_base_pipeline

        device = pick_device(settings)
        configure_backends(device)
        pipe = load_base_pipeline(settings, device, pick_dtype(settings, device, "infer"))
        return cls(pipe, settings, fuse=fuse)

    # ------------------------------------------------------------------------------ adapters
    def _style_state(self, path: Path) -> LoraState:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        cached = self._style_cache.get(key)
        if cached is not None:
            self._style_cache.move_to_end(key)
            return cached
        validate_lora_file(path, MAX_STYLE_LORA_BYTES)
        loaded = read_lora(self.pipe, path)
        self._style_cache[key] = loaded
        while len(self._style_cache) > self.style_cache_size:
            self._style_cache.popitem(last=False)
        return loaded

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
        started = time.perf_counter()
        pipe = self.pipe
        if has_lora_layers(pipe) or adapter_names(pipe):
            log.warning("adapters %s left on the pipeline by an earlier job; removing them", adapter_names(pipe))
            self._clean(None)

        snapshot: dict[tuple[str, str], torch.Tensor] | None = None
        oom = False
        try:
            names, weights = [], []
            if style_lora_path is not None:
                self._inject(self._style_state(Path(style_lora_path)), STYLE_ADAPTER)
                names.append(STYLE_ADAPTER)
                weights.append(style.style_weight)
            self._inject(read_lora(pipe, Path(face_lora_path)), FACE_ADAPTER)
            names.append(FACE_ADAPTER)
            weights.append(style.face_weight)
            pipe.set_adapters(names, weights)
            if self.fuse:
                snapshot = self._snapshot_bases()
                pipe.fuse_lora(adapter_names=names, lora_scale=1.0)

            prompt_embeds, negative_embeds = build_prompt_embeds(
                pipe.tokenizer,
                pipe.text_encoder,
                face_prompt(style.prompt, trigger),
                negative_prompt(style.negative_prompt),
            )
            images = self._run_batches(
                prompt_embeds, negative_embeds, seeds, steps, guidance, batch_size, on_progress, should_stop
            )
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
            self._clean(snapshot)
        if oom:
            free_memory()
            raise DeviceOutOfMemory(f"out of memory while generating (batch {batch_size})")
        raise AssertionError("unreachable")

    def _run_batches(
        self,
        prompt_embeds: torch.Tensor,
        negative_embeds: torch.Tensor,
        seeds: list[int],
        steps: int,
        guidance: float,
        batch_size: int,
        on_progress: GenerateProgressFn | None,
        should_stop: StopFn | None,
    ) -> list[Image.Image]:
        pipe = self.pipe
        size = self.settings.resolution
        batches = [seeds[i : i + batch_size] for i in range(0, len(seeds), batch_size)]
        total_steps = steps * len(batches)
        done = 0

        def on_step_end(_pipe: Any, _index: int, _timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            nonlocal done
            done += 1
            if on_progress is not None:
                on_progress(done, total_steps)
            if should_stop is not None and should_stop():
                raise GenerationCancelled(f"generation cancelled after {done} of {total_steps} steps")
            return kwargs

        images: list[Image.Image] = []
        for batch in batches:
            if should_stop is not None and should_stop():
                raise GenerationCancelled(f"generation cancelled after {done} of {total_steps} steps")
            n = len(batch)
            # CPU generators: a seed gives the same starting noise on any GPU (or none).
            generators = [torch.Generator("cpu").manual_seed(s) for s in batch]
            result = pipe(
                prompt_embeds=prompt_embeds.expand(n, -1, -1),
                negative_prompt_embeds=negative_embeds.expand(n, -1, -1),
                num_inference_steps=steps,
                guidance_scale=guidance,
                height=size,
                width=size,
                generator=generators,
                output_type="pil",
                callback_on_step_end=on_step_end,
            )
            images.extend(result.images)
        return images
