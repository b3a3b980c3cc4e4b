"""Prompts: FaceChain's portrait prompt and negative prompt per style, and their embeddings.

The texts are :mod:`pipeline.recipe`'s (FaceChain's constants.py and inference.py). A portrait
prompt is, as FaceChain's inference assembles it::

    (<fcsks>:10), <trigger phrase>, <template with the style's trigger words and prompt>

where the template is FaceChain's "with style" one for a style with a LoRA and its "with cloth" one
otherwise. The negative prompt is the style's own words, FaceChain's negative prompt, and
"children" for an adult man (as FaceChain adds it). A painting style (``medium = "painting"``)
drops FaceChain's photo words ("raw photo", "photorealistic") from its template and "paintings,
sketches" from the negative prompt, which would otherwise fight it.

Two encodings (``FACECHAIN_PROMPT_ENCODING``):

``diffusers`` (FaceChain's)
    As diffusers' StableDiffusionPipeline, which FaceChain calls: the prompt is plain text, cut at
    CLIP's 77 tokens. "(<fcsks>:10)" is text there, not a weight.
``weighted``
    The AUTOMATIC1111 weighting syntax, and prompts of any length:

=================  ==========================================
``(text)``         weight × 1.1 (nests: ``((text))`` = × 1.21)
``[text]``         weight ÷ 1.1
``(text:1.3)``     weight × 1.3 (instead of × 1.1)
``\\(`` ``\\)``     literal brackets (also ``\\[``, ``\\]``, ``\\\\``)
=================  ==========================================

An unclosed ``(`` or ``[`` applies to the rest of the prompt; an unmatched closer is literal text.

Weighted embeddings: each chunk is tokenized on its own, every token carries its chunk's weight; the
token sequence is cut into 75-token windows (at a comma when one is near the end), each window
becomes ``<bos> … <eos> <pad>…`` (77 tokens) through the CLIP text encoder, the hidden states of each
token are multiplied by its weight and the window is rescaled to its original mean, so weights shift
emphasis without changing the overall magnitude (skipped when that mean is too close to zero to
divide by). Windows are concatenated along the sequence axis, so prompts longer than 77 tokens
work; the prompt and the negative prompt are padded with empty windows to the same length, as
classifier-free guidance needs.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pipeline import recipe
from pipeline.jobs import TRIGGER_TOKEN, StyleSpec

if TYPE_CHECKING:
    import torch
    from transformers import CLIPTextModel, CLIPTokenizer


def _drop_items(text: str, items: tuple[str, ...]) -> str:
    """``text`` without the comma-separated items equal to one of ``items`` (the rest untouched)."""
    for item in items:
        text = re.sub(rf"(?:^|,)\s*{re.escape(item)}\s*(?=,|$)", "", text, flags=re.IGNORECASE)
    return text.lstrip(" ,")


def trigger_phrase(trigger: str) -> str:
    """The phrase of a trained person's trigger (``"<fcsks>, a handsome man"`` → ``"a handsome man"``)."""
    return trigger.replace(TRIGGER_TOKEN, "").strip(" ,")


def portrait_prompt(style: StyleSpec, trigger: str) -> str:
    """FaceChain's prompt for one person in one style (inference.py:229-251, app.py:210-222)."""
    template = recipe.PROMPT_WITH_STYLE if style.lora else recipe.PROMPT_WITH_CLOTH
    if style.medium == "painting":
        template = _drop_items(template, recipe.PAINTING_DROPS_FROM_PROMPT)
    style_text = ", ".join(part for part in (style.trigger_words.strip(" ,"), style.prompt.strip(" ,")) if part)
    parts = [recipe.TRIGGER_PROMPT, trigger_phrase(trigger), template.format(style_text)]
    return ", ".join(part for part in parts if part)


def portrait_negative_prompt(style: StyleSpec, trigger: str) -> str:
    """The style's negative words, then FaceChain's negative prompt (adapted to a painting style),
    then what FaceChain adds for the person's phrase."""
    negative = recipe.NEGATIVE_PROMPT
    if style.medium == "painting":
        negative = _drop_items(negative, recipe.PAINTING_DROPS_FROM_NEGATIVE)
    parts = [style.negative_prompt.strip(" ,"), negative, recipe.NEGATIVE_FOR_PHRASE.get(trigger_phrase(trigger), "")]
    return ", ".join(part for part in parts if part)


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


def encode_plain(tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, prompt: str) -> torch.Tensor:
    """Embeddings (1, 77, dim) of a prompt as diffusers' StableDiffusionPipeline makes them: plain
    text, padded or cut to the tokenizer's length."""
    import torch

    ids = tokenizer(
        prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        hidden: torch.Tensor = text_encoder(ids.to(text_encoder.device), return_dict=False)[0]
    return hidden


def build_prompt_embeds(
    tokenizer: CLIPTokenizer,
    text_encoder: CLIPTextModel,
    prompt: str,
    negative: str,
    encoding: recipe.PromptEncoding = "weighted",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(prompt_embeds, negative_prompt_embeds)`` of equal shape (1, 77 × n, dim) for the pipeline
    (n = 1 with the ``diffusers`` encoding)."""
    if encoding == "diffusers":
        return encode_plain(tokenizer, text_encoder, prompt), encode_plain(tokenizer, text_encoder, negative)
    windows = max(count_windows(tokenizer, prompt), count_windows(tokenizer, negative))
    return (
        encode_weighted(tokenizer, text_encoder, prompt, windows),
        encode_weighted(tokenizer, text_encoder, negative, windows),
    )
