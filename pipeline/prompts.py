"""Prompts: FaceChain's face prompt and negative prompt, and weighted prompt embeddings.

Weighting syntax (the AUTOMATIC1111 one that FaceChain's prompts and style prompts are written in):

=================  ==========================================
``(text)``         weight × 1.1 (nests: ``((text))`` = × 1.21)
``[text]``         weight ÷ 1.1
``(text:1.3)``     weight × 1.3 (instead of × 1.1)
``\\(`` ``\\)``     literal brackets (also ``\\[``, ``\\]``, ``\\\\``)
=================  ==========================================

An unclosed ``(`` or ``[`` applies to the rest of the prompt; an unmatched closer is literal text.

Embeddings: each chunk is tokenized on its own, every token carries its chunk's weight; the token
sequence is cut into 75-token windows (at a comma when one is near the end), each window becomes
``<bos> … <eos> <pad>…`` (77 tokens) through the CLIP text encoder, the hidden states of each token
are multiplied by its weight and the window is rescaled to its original mean, so weights shift
emphasis without changing the overall magnitude (skipped when that mean is too close to zero to
divide by). Windows are concatenated along the sequence axis,
so prompts longer than 77 tokens work; the prompt and the negative prompt are padded with empty
windows to the same length, as classifier-free guidance needs.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pipeline.jobs import TRIGGER_TOKEN

if TYPE_CHECKING:
    import torch
    from transformers import CLIPTextModel, CLIPTokenizer

#: Emphasis of the trigger token in the face prompt, FaceChain-style ``(<fcsks>:2)``.
TRIGGER_WEIGHT = 2.0

#: Appended to every portrait prompt: framing and photo quality, as FaceChain's prompt template does.
PORTRAIT_SUFFIX = (
    "upper body portrait, one person, looking at the camera, detailed natural face, sharp focus, "
    "realistic skin texture, raw photo, high quality, best quality"
)

#: What a portrait must not look like (FaceChain's negative prompt, in our own words).
NEGATIVE_PROMPT = (
    "nsfw, nude, (worst quality:2), (low quality:2), (normal quality:1.5), lowres, blurry, "
    "out of focus, jpeg artifacts, noisy, grainy, watermark, signature, text, logo, frame, "
    "deformed, disfigured, distorted face, asymmetric eyes, crossed eyes, bad anatomy, "
    "bad proportions, extra fingers, missing fingers, fused fingers, bad hands, extra limbs, "
    "extra arms, long neck, duplicate, two people, cropped head, monochrome, grayscale, "
    "sketch, cartoon, painting"
)

_OPEN_WEIGHT = 1.1
_TOKEN = re.compile(
    r"\\[\\()\[\]]"  # escaped bracket or backslash
    r"|\(|\["  # openers
    r"|:\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*\)"  # ":1.3)" closes a weighted group
    r"|\)|\]"  # closers
    r"|[^\\()\[\]:]+"  # plain text
    r"|[:\\]"  # a lone colon or backslash
)
WINDOW = 75  # tokens per window between <bos> and <eos>
_COMMA_LOOKBACK = 20


def face_prompt(style_prompt: str, trigger: str, trigger_weight: float = TRIGGER_WEIGHT) -> str:
    """The portrait prompt: weighted trigger token, trigger phrase, the style's prompt, the suffix.

    ``trigger`` is the phrase the LoRA was captioned with (``"a handsome man"``); a leading trigger
    token in it is tolerated (``"<fcsks>, a handsome man"``).
    """
    phrase = trigger.replace(TRIGGER_TOKEN, "").strip(" ,")
    parts = [f"({TRIGGER_TOKEN}:{trigger_weight:g})", phrase, style_prompt.strip(" ,"), PORTRAIT_SUFFIX]
    return ", ".join(part for part in parts if part)


def negative_prompt(extra: str = "") -> str:
    """FaceChain's negative prompt, with a style's own additions first."""
    extra = extra.strip(" ,")
    return f"{extra}, {NEGATIVE_PROMPT}" if extra else NEGATIVE_PROMPT


def caption(trigger: str) -> str:
    """The training caption for a trigger phrase: ``"<fcsks>, a handsome man"``."""
    phrase = trigger.replace(TRIGGER_TOKEN, "").strip(" ,")
    return f"{TRIGGER_TOKEN}, {phrase}" if phrase else TRIGGER_TOKEN


def parse_weighted(text: str) -> list[tuple[str, float]]:
    """Split a prompt into ``(text, weight)`` chunks; adjacent chunks of equal weight are merged."""
    chunks: list[list[str | float]] = []
    stack: list[tuple[int, str]] = []

    def scale(start: int, factor: float) -> None:
        for chunk in chunks[start:]:
            chunk[1] = float(chunk[1]) * factor

    for match in _TOKEN.finditer(text):
        token, weight = match.group(0), match.group(1)
        if len(token) == 2 and token[0] == "\\":
            chunks.append([token[1], 1.0])
        elif token in ("(", "["):
            stack.append((len(chunks), token))
        elif weight is not None and stack and stack[-1][1] == "(":
            scale(stack.pop()[0], float(weight))
        elif token == ")" and stack and stack[-1][1] == "(":
            scale(stack.pop()[0], _OPEN_WEIGHT)
        elif token == "]" and stack and stack[-1][1] == "[":
            scale(stack.pop()[0], 1 / _OPEN_WEIGHT)
        else:
            chunks.append([token, 1.0])
    for start, opener in stack:
        scale(start, _OPEN_WEIGHT if opener == "(" else 1 / _OPEN_WEIGHT)

    merged: list[tuple[str, float]] = []
    for piece, value in chunks:
        piece, value = str(piece), float(value)
        if merged and merged[-1][1] == value:
            merged[-1] = (merged[-1][0] + piece, value)
        else:
            merged.append((piece, value))
    merged = [(piece, value) for piece, value in merged if piece]
    return merged or [("", 1.0)]


def _weighted_tokens(tokenizer: CLIPTokenizer, text: str) -> list[tuple[int, float]]:
    tokens: list[tuple[int, float]] = []
    for piece, weight in parse_weighted(text):
        ids = tokenizer(piece, add_special_tokens=False, truncation=False, verbose=False).input_ids
        tokens += [(token_id, weight) for token_id in ids]
    return tokens


def _windows(tokens: list[tuple[int, float]], comma_id: int | None) -> list[list[tuple[int, float]]]:
    """Cut into windows of at most :data:`WINDOW` tokens, preferring to cut just after a comma."""
    windows: list[list[tuple[int, float]]] = []
    rest = tokens
    while len(rest) > WINDOW:
        cut = WINDOW
        if comma_id is not None:
            for back in range(WINDOW - 1, WINDOW - 1 - _COMMA_LOOKBACK, -1):
                if rest[back][0] == comma_id:
                    cut = back + 1
                    break
        windows.append(rest[:cut])
        rest = rest[cut:]
    windows.append(rest)
    return windows


def _encode_window(
    tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, window: list[tuple[int, float]]
) -> torch.Tensor:
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = [tokenizer.bos_token_id] + [t for t, _ in window] + [tokenizer.eos_token_id]
    weights = [1.0] + [w for _, w in window] + [1.0]
    length = WINDOW + 2
    ids += [pad] * (length - len(ids))
    weights += [1.0] * (length - len(weights))
    device = text_encoder.device
    input_ids = torch.tensor([ids], device=device)
    hidden = text_encoder(input_ids, return_dict=False)[0]
    if all(w == 1.0 for w in weights):
        return hidden
    scale = torch.tensor(weights, device=device, dtype=torch.float32).view(1, -1, 1)
    work = hidden.float()
    original_mean = work.mean()
    work = work * scale
    new_mean = work.mean()
    # Restoring the mean only makes sense when it is a real offset, not a residue of cancellation
    # (a ratio of two near-zero numbers would blow the embeddings up or flip their sign).
    if original_mean * new_mean > 0 and new_mean.abs() > 1e-3 * work.abs().mean():
        work = work * (original_mean / new_mean)
    return work.to(hidden.dtype)


def encode_weighted(
    tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, prompt: str, windows: int | None = None
) -> torch.Tensor:
    """Embeddings (1, 77 × n, dim) of a weighted prompt, padded with empty windows to ``windows``."""
    import torch

    comma = tokenizer.convert_tokens_to_ids(",</w>")
    comma_id = comma if isinstance(comma, int) and comma != tokenizer.unk_token_id else None
    parts = _windows(_weighted_tokens(tokenizer, prompt), comma_id)
    if windows is not None:
        if windows < len(parts):
            raise ValueError(f"prompt needs {len(parts)} windows, only {windows} allowed")
        parts += [[] for _ in range(windows - len(parts))]
    with torch.no_grad():
        return torch.cat([_encode_window(tokenizer, text_encoder, part) for part in parts], dim=1)


def count_windows(tokenizer: CLIPTokenizer, prompt: str) -> int:
    """How many 77-token windows a prompt takes."""
    comma = tokenizer.convert_tokens_to_ids(",</w>")
    comma_id = comma if isinstance(comma, int) and comma != tokenizer.unk_token_id else None
    return len(_windows(_weighted_tokens(tokenizer, prompt), comma_id))


def build_prompt_embeds(
    tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, prompt: str, negative: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(prompt_embeds, negative_prompt_embeds)`` of equal shape (1, 77 × n, dim) for the pipeline."""
    windows = max(count_windows(tokenizer, prompt), count_windows(tokenizer, negative))
    return (
        encode_weighted(tokenizer, text_encoder, prompt, windows),
        encode_weighted(tokenizer, text_encoder, negative, windows),
    )
