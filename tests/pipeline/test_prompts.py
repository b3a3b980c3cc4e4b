"""Prompt weighting syntax and weighted CLIP embeddings (on the tiny text encoder)."""

from __future__ import annotations

import pytest
import torch

from pipeline.jobs import TRIGGER_TOKEN
from pipeline.prompts import (
    NEGATIVE_PROMPT,
    build_prompt_embeds,
    caption,
    count_windows,
    encode_weighted,
    face_prompt,
    negative_prompt,
    parse_weighted,
)

W = 1.1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a cat", [("a cat", 1.0)]),
        ("(a cat)", [("a cat", W)]),
        ("((a cat))", [("a cat", W * W)]),
        ("[a cat]", [("a cat", 1 / W)]),
        ("[[a cat]]", [("a cat", 1 / W / W)]),
        ("(a cat:1.5)", [("a cat", 1.5)]),
        ("(a cat: 0.5 )", [("a cat", 0.5)]),
        ("a (cat:2) sits", [("a ", 1.0), ("cat", 2.0), (" sits", 1.0)]),
        ("(a (b:2) c)", [("a ", W), ("b", 2 * W), (" c", W)]),
        ("([a] b)", [("a", W / W), (" b", W)]),
        (r"\(a\) \[b\] c\\d", [(r"(a) [b] c\d", 1.0)]),
        (r"(\(x\))", [("(x)", W)]),
        ("(unclosed and more", [("unclosed and more", W)]),
        ("[unclosed", [("unclosed", 1 / W)]),
        ("a) b] c", [("a) b] c", 1.0)]),
        ("(a:b:0.5)", [("a:b", 0.5)]),
        ("(a:x)", [("a:x", W)]),
        ("[a:1.5]", [("a:1.5", 1 / W)]),
        ("(<fcsks>:2), a man", [("<fcsks>", 2.0), (", a man", 1.0)]),
        ("", [("", 1.0)]),
        ("()", [("", 1.0)]),
    ],
)
def test_parse_weighted(text: str, expected: list[tuple[str, float]]) -> None:
    parsed = parse_weighted(text)
    assert [t for t, _ in parsed] == [t for t, _ in expected]
    assert [w for _, w in parsed] == pytest.approx([w for _, w in expected])


def test_plain_prompt_matches_the_pipelines_own_encoding(tiny_pipe: object) -> None:
    pipe = tiny_pipe
    ours = encode_weighted(pipe.tokenizer, pipe.text_encoder, "a handsome man, business suit")  # type: ignore[attr-defined]
    theirs, _ = pipe.encode_prompt(  # type: ignore[attr-defined]
        "a handsome man, business suit",
        device="cpu",
        num_images_per_prompt=1,
        do_classifier_free_guidance=False,
    )
    assert ours.shape == theirs.shape == (1, 77, 32)
    assert torch.equal(ours, theirs)


def test_weight_one_equals_plain_and_weight_two_differs(tiny_pipe: object) -> None:
    tok, te = tiny_pipe.tokenizer, tiny_pipe.text_encoder  # type: ignore[attr-defined]
    plain = encode_weighted(tok, te, "a man, suit")
    one = encode_weighted(tok, te, "(a man, suit:1)")
    two = encode_weighted(tok, te, "a man, (suit:2)")
    half = encode_weighted(tok, te, "a man, (suit:0.5)")

    assert torch.equal(one, plain)
    assert not torch.allclose(two, plain)
    assert not torch.allclose(half, two)
    # Emphasis moves the weighted tokens, then the window is restored to its original mean.
    assert two.mean().item() == pytest.approx(plain.mean().item(), rel=1e-4, abs=1e-6)
    # Tokens before the weighted chunk keep their direction (only rescaled by the mean restore).
    cos = torch.nn.functional.cosine_similarity(two[0, :4], plain[0, :4], dim=-1)
    assert torch.all(cos > 0.999)


def test_long_prompts_use_several_windows_and_match_lengths(tiny_pipe: object) -> None:
    tok, te = tiny_pipe.tokenizer, tiny_pipe.text_encoder  # type: ignore[attr-defined]
    long_prompt = ", ".join(["a portrait photo of a person in the garden"] * 12)
    assert count_windows(tok, long_prompt) >= 2

    positive, negative = build_prompt_embeds(tok, te, long_prompt, "blurry")

    windows = count_windows(tok, long_prompt)
    assert positive.shape == negative.shape == (1, 77 * windows, 32)
    # The second window starts with its own <bos>, so it is a full CLIP window, not a tail.
    assert torch.equal(positive[0, 77], positive[0, 0])
    short_positive, short_negative = build_prompt_embeds(tok, te, "a man", "blurry")
    assert short_positive.shape == short_negative.shape == (1, 77, 32)


def test_windows_are_cut_after_a_comma(tiny_pipe: object) -> None:
    from pipeline.prompts import WINDOW, _weighted_tokens, _windows

    tok = tiny_pipe.tokenizer  # type: ignore[attr-defined]
    comma = tok.convert_tokens_to_ids(",</w>")
    tokens = _weighted_tokens(tok, ", ".join(["a portrait photo"] * 40))  # 4 tokens a phrase
    windows = _windows(tokens, comma)

    assert all(len(w) <= WINDOW for w in windows)
    assert sum(len(w) for w in windows) == len(tokens)
    assert all(w[-1][0] == comma for w in windows[:-1])
    assert len(windows[0]) == 72  # cut after the comma at 71, not mid-phrase at 75


def test_face_prompt_weights_the_trigger_once() -> None:
    prompt = face_prompt("wearing a suit", "a handsome man")
    again = face_prompt("wearing a suit", f"{TRIGGER_TOKEN}, a handsome man")

    assert prompt == again
    assert prompt.startswith(f"({TRIGGER_TOKEN}:2), a handsome man, wearing a suit, ")
    assert prompt.count(TRIGGER_TOKEN) == 1
    assert parse_weighted(prompt)[0] == (TRIGGER_TOKEN, 2.0)
    assert caption("a beautiful woman") == f"{TRIGGER_TOKEN}, a beautiful woman"


def test_negative_prompt_covers_the_usual_failures() -> None:
    for word in ("nsfw", "low quality", "blurry", "deformed", "extra fingers", "watermark"):
        assert word in NEGATIVE_PROMPT
    assert negative_prompt() == NEGATIVE_PROMPT
    assert negative_prompt("cartoon, ") == f"cartoon, {NEGATIVE_PROMPT}"
