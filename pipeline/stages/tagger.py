"""The tagger: FaceChain's DeepDanbooru (``model-resnet_custom_v3.pt`` in ``ly261666/cv_portrait_model`` v4.0).

The checkpoint is a plain state dict: 179 convolutions named ``n_Conv_0`` … ``n_Conv_178`` plus a
``tags`` list. The network is a bottleneck ResNet with TensorFlow-style ("same") padding written out
by hand: a 7×7 stem and max pool, six stages of bottleneck blocks, and a 1×1 convolution to one
logit per tag, averaged over the image and squashed with a sigmoid. Only the topology (which
convolution feeds which, strides, padding) is fixed here; channel counts are read from the
checkpoint's weights, so a narrow checkpoint with the same names (the tiny model) loads the same way.

Tags come out as FaceChain's tagger writes them (threshold 0.5, ``rating:`` tags dropped,
alphabetical, parentheses escaped) and :func:`filter_tags` is FaceChain's tag post-processing (the
tags that describe the face itself, or the gender the trigger phrase already says, are removed).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

#: The tag file and the side the tagger sees.
CHECKPOINT = "model-resnet_custom_v3.pt"
INPUT_SIDE = 512
TAG_THRESHOLD = 0.5

#: (bottleneck channels, output channels, stride, blocks, projection named after the block's own convs)
#: per stage; with the stem (n_Conv_0) and the head (the last conv) this numbers all 179 convolutions.
STAGES: tuple[tuple[int, int, int, int, bool], ...] = (
    (64, 256, 1, 3, False),
    (128, 512, 2, 8, False),
    (256, 1024, 2, 20, False),
    (256, 1024, 2, 20, True),
    (512, 2048, 2, 3, False),
    (1024, 4096, 2, 3, False),
)
CONV_COUNT = 179

_ESCAPE = re.compile(r"([\\()])")
#: FaceChain's tag post-processing: tags naming the face's parts or the gender are dropped.
_DROPPED_TAGS = frozenset({"1girl", "1boy", "ears", "head", "face", "lips", "mouth", "3d", "asian", "teeth"})
_DROPPED_SUFFIXES = ("_man", "_woman", "_male", "_female", "_lips")


@dataclass(frozen=True)
class Block:
    """One bottleneck block: its three convolutions (1×1, 3×3, 1×1), its projection, its stride."""

    convs: tuple[int, int, int]
    projection: int | None
    stride: int


def blocks() -> list[Block]:
    """The 60 bottleneck blocks, with the index of each convolution in the checkpoint."""
    out: list[Block] = []
    index = 1
    for _mid, _width, stride, count, projection_last in STAGES:
        for block in range(count):
            if block == 0 and not projection_last:
                projection, convs = index, (index + 1, index + 2, index + 3)
                index += 4
            elif block == 0:
                convs, projection = (index, index + 1, index + 2), index + 3
                index += 4
            else:
                projection, convs = None, (index, index + 1, index + 2)
                index += 3
            out.append(Block(convs, projection, stride if block == 0 else 1))
    assert index == CONV_COUNT - 1
    return out


def conv_shapes(width: float = 1.0, tags: int = 9176) -> dict[int, tuple[int, int, int]]:
    """``index → (in, out, kernel)`` of every convolution, the real network's at ``width=1``."""

    def w(channels: int) -> int:
        return max(1, round(channels * width))

    shapes = {0: (3, w(64), 7)}
    channels = w(64)
    for block, spec in zip(blocks(), _block_specs(), strict=True):
        mid, out = w(spec[0]), w(spec[1])
        a, b, c = block.convs
        shapes[a], shapes[b], shapes[c] = (channels, mid, 1), (mid, mid, 3), (mid, out, 1)
        if block.projection is not None:
            shapes[block.projection] = (channels, out, 1)
        channels = out
    shapes[CONV_COUNT - 1] = (channels, tags, 1)
    return shapes


def _block_specs() -> list[tuple[int, int]]:
    return [(mid, width) for mid, width, _stride, count, _last in STAGES for _ in range(count)]


def build_network(state: dict[str, Any]) -> Any:
    """The DeepDanbooru module for a checkpoint's state dict (channel counts read from its weights)."""
    import torch
    from torch import nn
    from torch.nn import functional

    class DeepDanbooru(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for index in range(CONV_COUNT):
                weight = state[f"n_Conv_{index}.weight"]
                out_channels, in_channels, kernel, _ = weight.shape
                stride = 2 if index == 0 else _stride_of(index)
                conv = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, bias=f"n_Conv_{index}.bias" in state)
                self.add_module(f"n_Conv_{index}", conv)
            self.plan = blocks()

        def conv(self, index: int, x: Any) -> Any:
            return getattr(self, f"n_Conv_{index}")(x)

        def forward(self, images_nhwc: Any) -> Any:
            x = images_nhwc.permute(0, 3, 1, 2)
            x = functional.relu(self.conv(0, functional.pad(x, [2, 3, 2, 3])))
            x = functional.max_pool2d(functional.pad(x, [0, 1, 0, 1], value=float("-inf")), 3, 2)
            for block in self.plan:
                a, b, c = block.convs
                y = functional.relu(self.conv(a, x))
                y = functional.pad(y, [0, 1, 0, 1] if block.stride == 2 else [1, 1, 1, 1])
                y = self.conv(c, functional.relu(self.conv(b, y)))
                shortcut = self.conv(block.projection, x) if block.projection is not None else x
                x = functional.relu(y + shortcut)
            logits = self.conv(CONV_COUNT - 1, x)
            return torch.sigmoid(logits.mean(dim=(2, 3)))

    return DeepDanbooru()


def _stride_of(index: int) -> int:
    for block in blocks():
        if index == block.projection or index == block.convs[1]:
            return block.stride
    return 1


class Tagger:
    """DeepDanbooru loaded from its checkpoint: image → tags."""

    def __init__(self, model_dir: Path, device: str = "auto") -> None:
        import torch

        from pipeline.stages.common import torch_device

        loaded = torch.load(Path(model_dir) / CHECKPOINT, map_location="cpu", weights_only=True)
        tags = loaded.get("tags")
        if not isinstance(tags, list) or not tags:
            raise ValueError(f"{CHECKPOINT} has no tag list")
        state = {k: v.float() for k, v in loaded.items() if k != "tags"}
        network = build_network(state)
        network.load_state_dict(state, strict=True)
        self.device = torch_device(device)
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.network = network.to(self.device, self.dtype).eval()
        self.tags: list[str] = [str(t) for t in tags]

    def probabilities(self, image: Image.Image) -> np.ndarray:
        """One probability per tag for an image (resized to the tagger's 512² input, as FaceChain does)."""
        import torch

        pixels = np.asarray(fit_square(image.convert("RGB"), INPUT_SIDE), dtype=np.float32)[None] / 255.0
        with torch.inference_mode():
            x = torch.from_numpy(pixels).to(self.device, self.dtype)
            return self.network(x)[0].float().cpu().numpy()

    def tag(self, image: Image.Image) -> list[str]:
        """FaceChain's tag list for an image: the tags over 0.5, alphabetical, escaped."""
        return tags_above(self.tags, self.probabilities(image))


def fit_square(image: Image.Image, side: int) -> Image.Image:
    """``image`` fitted into a ``side``² square (a square image is just resized), edges stretched to fill."""
    if image.width == image.height:
        return image.resize((side, side), Image.Resampling.LANCZOS)
    scale = side / max(image.size)
    resized = image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.LANCZOS
    )
    canvas = Image.new("RGB", (side, side))
    canvas.paste(resized.resize((side, side), Image.Resampling.NEAREST), (0, 0))
    canvas.paste(resized, ((side - resized.width) // 2, (side - resized.height) // 2))
    return canvas


def tags_above(names: list[str], probabilities: Iterable[float], threshold: float = TAG_THRESHOLD) -> list[str]:
    """The tags at or over ``threshold`` (``rating:`` tags excluded), sorted, with ``\\``, ``(`` and ``)`` escaped."""
    chosen = sorted(
        name
        for name, p in zip(names, probabilities, strict=False)
        if float(p) >= threshold and not name.startswith("rating:")
    )
    return [_ESCAPE.sub(r"\\\1", name) for name in chosen]


def filter_tags(tags: Iterable[str]) -> list[str]:
    """FaceChain's tag post-processing: drop tags about the face's parts and about gender."""
    kept = []
    for tag in tags:
        if tag in _DROPPED_TAGS or tag.endswith(_DROPPED_SUFFIXES):
            continue
        if ("eye" in tag and "eyewear" not in tag) or "nose" in tag or "body" in tag:
            continue
        kept.append(tag)
    return kept
