"""Fuse LoRAs straight into the resident weights, without peft, and restore the exact originals.

peft's route (``load_lora_weights`` → ``set_adapters`` → ``fuse_lora``) injects wrapper modules for
every target layer before it can merge them, which costs about 340 ms per face LoRA, and it swaps
weight tensors, which invalidates a captured CUDA graph. Here a LoRA file is read once into a list of
:class:`LayerLora` (any format ``StableDiffusionPipeline.lora_state_dict`` understands: diffusers,
peft and kohya names, with their alphas), and :class:`WeightFuser` adds ``scale × up @ down`` into
each target weight **in place** (same storage, so a captured graph sees the new weights), after
copying the untouched weight aside once. :meth:`WeightFuser.restore` copies the originals back:
exact, whatever rounding the fused sum had.

Files this module cannot map to layers (DoRA, LoKr, keys that name no Linear or Conv2d) raise
:class:`UnsupportedLora`; the generator then takes peft's route for that job.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pipeline.lora_files import MAX_LOAD_BYTES, InvalidLoraFile, LoraFileError, validate_lora_file

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline

PARTS = ("unet", "text_encoder")

# The down/up pair of one layer, in every naming diffusers' reader hands back for SD 1.5: peft
# (lora_A/B), diffusers (lora.down/up, lora_linear_layer.down/up) and kohya files converted to the
# old attention-processor names (``attn1.processor.to_q_lora.down`` in the UNet,
# ``self_attn.to_q_lora.down`` in the text encoder).
_KEY = re.compile(
    r"^(?P<part>unet|text_encoder)\.(?P<module>.+?)\."
    r"(?:(?P<slot>lora\.down|lora\.up|lora_A|lora_B|lora_linear_layer\.down|lora_linear_layer\.up|lora_down|lora_up)"
    r"|(?P<old>to_q|to_k|to_v|to_out)_lora\.(?P<old_slot>down|up))"
    r"\.weight$"
)
_DOWN = {"lora.down", "lora_A", "lora_linear_layer.down", "lora_down", "down"}
_UNET_OLD = {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out.0"}
_TEXT_OLD = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"}


def _split_key(key: str) -> tuple[str, str, str] | None:
    """``(part, module path, "down" | "up")`` of a LoRA weight key, or None for anything else."""
    match = _KEY.match(key)
    if match is None:
        return None
    part, module = match["part"], match["module"]
    if match["old"] is not None:
        names = _UNET_OLD if part == "unet" else _TEXT_OLD
        module = f"{module.removesuffix('.processor')}.{names[match['old']]}"
        slot = match["old_slot"]
    else:
        slot = match["slot"]
    return part, module, "down" if slot in _DOWN else "up"


class UnsupportedLora(ValueError):
    """The file holds LoRA weights this module cannot place (the generator falls back to peft)."""


@dataclass(frozen=True)
class LayerLora:
    """One target layer's low-rank pair: ``delta = scale × up @ down``."""

    part: str
    module: str
    down: torch.Tensor
    up: torch.Tensor
    scale: float

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])


def _metadata_alpha(metadata: Mapping[str, Any] | None, part: str, module: str) -> float | None:
    """The alpha a saved peft config gives ``module`` (its pattern first), or None without metadata."""
    if not metadata:
        return None
    config = {k.removeprefix(f"{part}."): v for k, v in metadata.items() if not k.startswith(_other_parts(part))}
    pattern = config.get("alpha_pattern") or {}
    for key, value in pattern.items():
        if module == key or module.endswith(f".{key}"):
            return float(value)
    alpha = config.get("lora_alpha")
    return None if alpha is None else float(alpha)


def _other_parts(part: str) -> tuple[str, ...]:
    return tuple(f"{other}." for other in PARTS if other != part)


def layers_from_state_dict(
    state: Mapping[str, torch.Tensor],
    network_alphas: Mapping[str, float] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> list[LayerLora]:
    """Pair up the down/up weights of a diffusers-format LoRA state dict (``lora_state_dict``'s output).

    A layer's scale is its network alpha (kohya files) or the saved peft config's alpha, over its
    rank; without either it is 1, as in diffusers and peft.
    """
    pairs: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    alpha_keys: dict[tuple[str, str], list[str]] = {}
    unknown = []
    for key, tensor in state.items():
        split = _split_key(key)
        if split is None:
            unknown.append(key)
            continue
        part, module, slot = split
        pairs.setdefault((part, module), {})[slot] = tensor
        if slot == "down":
            # diffusers names a converted kohya alpha after the down key or after the module.
            raw_module = key[: key.rindex(".lora")] if ".lora" in key else key
            alpha_keys[(part, module)] = [f"{key}.alpha", f"{raw_module}.alpha", f"{part}.{module}.alpha"]
    if unknown:
        raise UnsupportedLora(f"{len(unknown)} key(s) are not plain LoRA weights, e.g. {unknown[0]!r}")
    alphas = dict(network_alphas or {})
    layers = []
    for (part, module), pair in sorted(pairs.items()):
        if set(pair) != {"down", "up"}:
            raise UnsupportedLora(f"{part}.{module} lacks its {'up' if 'down' in pair else 'down'} weight")
        down, up = pair["down"], pair["up"]
        rank = int(down.shape[0])
        alpha = next((alphas[k] for k in alpha_keys[(part, module)] if k in alphas), None)
        if alpha is None:
            alpha = _metadata_alpha(metadata, part, module)
        scale = 1.0 if alpha is None else float(alpha) / rank
        if not math.isfinite(scale):
            raise InvalidLoraFile(LoraFileError.NON_FINITE, f"{part}.{module}: alpha {alpha} / rank {rank}")
        layers.append(LayerLora(part=part, module=module, down=down, up=up, scale=scale))
    if not layers:
        raise UnsupportedLora("no LoRA layers in the file")
    return layers


def read_lora_layers(
    pipe: StableDiffusionPipeline, path: Path, device: torch.device | str | None = None
) -> list[LayerLora]:
    """A LoRA file's layers, through diffusers' reader (which converts kohya names and alphas).

    The file is checked first: :class:`~pipeline.lora_files.InvalidLoraFile` for one that is not a
    LoRA, too large, or with NaN or infinite weights. With ``device``, the weights come back there in
    fp32, moved in one copy. ``use_safetensors=True``: without it diffusers would unpickle a file that
    fails to parse.
    """
    validate_lora_file(path, MAX_LOAD_BYTES)
    state, alphas, metadata = pipe.lora_state_dict(
        str(path.parent), weight_name=path.name, use_safetensors=True, return_lora_metadata=True
    )
    layers = layers_from_state_dict(state, alphas, metadata)
    return layers if device is None else to_device(layers, device)


def to_device(layers: Sequence[LayerLora], device: torch.device | str) -> list[LayerLora]:
    """The layers' weights in fp32 on ``device``: one host-to-device copy for all of them."""
    tensors = [t for layer in layers for t in (layer.down, layer.up)]
    flat = torch.cat([t.detach().reshape(-1).float() for t in tensors])
    cuda = torch.device(device).type == "cuda"
    flat = flat.pin_memory().to(device, non_blocking=True) if cuda else flat.to(device)
    views, offset = [], 0
    for t in tensors:
        views.append(flat[offset : offset + t.numel()].view(t.shape))
        offset += t.numel()
    return [
        LayerLora(layer.part, layer.module, views[2 * i], views[2 * i + 1], layer.scale)
        for i, layer in enumerate(layers)
    ]


def delta_weight(layer: LayerLora, weight_shape: torch.Size, multiplier: float = 1.0) -> torch.Tensor:
    """``multiplier × scale × up @ down`` in the target weight's shape, in fp32 (peft's formula per kind)."""
    down, up = layer.down.float(), layer.up.float()
    factor = layer.scale * multiplier
    if len(weight_shape) == 2:
        delta = torch.mm(up.reshape(up.shape[0], -1), down.reshape(down.shape[0], -1))
    elif tuple(weight_shape[2:]) == (1, 1):
        delta = torch.mm(up.flatten(1), down.flatten(1))[:, :, None, None]
    else:
        delta = torch.nn.functional.conv2d(down.permute(1, 0, 2, 3), up).permute(1, 0, 2, 3)
    if delta.shape != weight_shape:
        raise UnsupportedLora(f"{layer.part}.{layer.module}: LoRA shape {tuple(delta.shape)} ≠ {tuple(weight_shape)}")
    return delta if factor == 1.0 else delta.mul_(factor)


class WeightFuser:
    """Adds weighted LoRAs into a pipeline's UNet / text-encoder weights in place; restores them exactly.

    The first time a layer is touched its original weight is copied aside (kept for the worker's life:
    about 190 MB in fp16 for every attention projection of SD 1.5's UNet), so a restore is a copy, not
    a subtraction that would drift in half precision.
    """

    def __init__(self, pipe: StableDiffusionPipeline) -> None:
        self.pipe = pipe
        self._originals: dict[tuple[str, str], torch.Tensor] = {}
        self._fused: list[tuple[str, str]] = []

    @property
    def fused(self) -> bool:
        return bool(self._fused)

    def _target(self, part: str, module: str) -> torch.nn.Parameter:
        root = getattr(self.pipe, part)
        # transformers 5 dropped CLIPTextModel's ``text_model`` level that LoRA files still name.
        for path in (module, module.removeprefix("text_model."), f"text_model.{module}"):
            try:
                layer = root.get_submodule(path)
                break
            except AttributeError:
                continue
        else:
            raise UnsupportedLora(f"{part}.{module}: no such layer")
        if not isinstance(layer, torch.nn.Linear | torch.nn.Conv2d):
            raise UnsupportedLora(f"{part}.{module} is a {type(layer).__name__}, not a Linear or Conv2d")
        return layer.weight

    @torch.no_grad()
    def fuse(self, loras: Sequence[tuple[Sequence[LayerLora], float]]) -> int:
        """Add ``multiplier × delta`` of every layer of every ``(layers, multiplier)``; returns layers touched.

        Every target is checked before any weight changes: a file that does not fit leaves the
        weights as they were.
        """
        if self._fused:
            raise RuntimeError("LoRAs are already fused; restore() first")
        targets: dict[tuple[str, str], torch.nn.Parameter] = {}
        grouped: dict[tuple[str, str], list[tuple[LayerLora, float]]] = {}
        for layers, multiplier in loras:
            for layer in layers:
                key = (layer.part, layer.module)
                if key not in targets:
                    targets[key] = self._target(*key)
                if layer.down.device != targets[key].device:
                    layer = to_device([layer], targets[key].device)[0]
                grouped.setdefault(key, []).append((layer, multiplier))
        deltas = {}
        for key, items in grouped.items():
            weight = targets[key]
            total = delta_weight(items[0][0], weight.shape, items[0][1])
            for layer, multiplier in items[1:]:
                total += delta_weight(layer, weight.shape, multiplier)
            deltas[key] = total
        for key, delta in deltas.items():
            weight = targets[key]
            if key not in self._originals:
                self._originals[key] = weight.detach().clone()
            # original + delta computed in fp32 and rounded once into the weight (same storage).
            torch.add(self._originals[key], delta, out=weight.data)
            self._fused.append(key)
        return len(deltas)

    @torch.no_grad()
    def restore(self) -> None:
        """Put back the original weights of every layer the last :meth:`fuse` touched."""
        for part, module in self._fused:
            self._target(part, module).copy_(self._originals[(part, module)])
        self._fused.clear()
