"""FaceChain's portrait prompts per style, the weighting syntax, and both prompt encodings (tiny CLIP)."""

from __future__ import annotations

import pytest
import torch

from pipeline import recipe
from pipeline.jobs import TRIGGER_TOKEN, StyleSpec
from pipeline.prompts import (
    build_prompt_embeds,
    count_windows,
    encode_weighted,
    parse_weighted,
    portrait_negative_prompt,
    portrait_prompt,
)
from pipeline.styles import load_styles_from, style_to_spec

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


MAN = f"{TRIGGER_TOKEN}, a handsome man"
SUIT = StyleSpec(name="suit", prompt="wearing a suit")
FAIRY = StyleSpec(name="fairy", prompt="a fairy in a meadow", lora="modelscope:YorickHe/fairy_lora/fairy.safetensors")


def test_a_style_without_a_lora_fills_facechains_cloth_template() -> None:
    # FaceChain v3.0.0: inference.py:229 (trigger), constants.py:5 (template), app.py:216-217.
    assert portrait_prompt(SUIT, MAN) == (
        "(<fcsks>:10), a handsome man, raw photo, masterpiece, wearing a suit, solo, medium shot, "
        "high detail face, looking straight into the camera with shoulders parallel to the frame, "
        "photorealistic, best quality"
    )
    # The phrase alone (no token) gives the same prompt, and the token appears once.
    assert portrait_prompt(SUIT, "a handsome man") == portrait_prompt(SUIT, MAN)
    assert portrait_prompt(SUIT, MAN).count(TRIGGER_TOKEN) == 1


def test_a_style_with_a_lora_fills_facechains_style_template() -> None:
    # constants.py:6, app.py:218-219.
    assert portrait_prompt(FAIRY, f"{TRIGGER_TOKEN}, a beautiful woman") == (
        "(<fcsks>:10), a beautiful woman, a fairy in a meadow, upper_body, raw photo, masterpiece, solo, "
        "medium shot, high detail face, photorealistic, best quality"
    )


def test_style_trigger_words_open_the_style_part_of_the_prompt() -> None:
    style = FAIRY.model_copy(update={"trigger_words": "fairy_style, "})
    assert portrait_prompt(style, MAN).startswith("(<fcsks>:10), a handsome man, fairy_style, a fairy in a meadow, ")
    builtin = style_to_spec(load_styles_from(None, None)["school_uniform"])
    assert builtin.trigger_words == "JK_style"
    assert "a handsome man, JK_style, white short-sleeved JK_shirt" in portrait_prompt(builtin, MAN)


def test_the_negative_prompt_is_facechains_after_the_styles_own_words() -> None:
    # constants.py:2-4; "children" for an adult man only (inference.py:230-231).
    assert portrait_negative_prompt(SUIT, "a beautiful woman") == recipe.NEGATIVE_PROMPT
    assert portrait_negative_prompt(SUIT, MAN) == f"{recipe.NEGATIVE_PROMPT}, children"
    assert portrait_negative_prompt(SUIT, "a boy, children") == recipe.NEGATIVE_PROMPT
    own = SUIT.model_copy(update={"negative_prompt": "casual clothes, "})
    assert portrait_negative_prompt(own, "a girl, children") == f"casual clothes, {recipe.NEGATIVE_PROMPT}"


def test_a_painting_style_does_not_fight_the_negative_prompt_and_a_photo_style_keeps_it() -> None:
    styles = {name: style_to_spec(style) for name, style in load_styles_from(None, None).items()}
    for name in ("watercolor", "oil_painting"):
        painting = styles[name]
        assert painting.medium == "painting"
        negative = portrait_negative_prompt(painting, MAN).lower()
        assert "paintings" not in negative and "sketches" not in negative
        assert "(nsfw:2)" in negative and "(worst quality:2)" in negative  # the rest stays
        prompt = portrait_prompt(painting, MAN)
        assert "photorealistic" not in prompt and "raw photo" not in prompt
        assert painting.prompt in prompt
    for name in ("business_suit", "fairy_tale", "cyberpunk"):
        photo = styles[name]
        assert photo.medium == "photo"
        negative = portrait_negative_prompt(photo, MAN)
        assert "paintings, sketches" in negative
        assert "photorealistic" in portrait_prompt(photo, MAN)


def test_the_diffusers_encoding_is_the_pipelines_own_plain_text_cut_at_77_tokens(tiny_pipe: object) -> None:
    pipe = tiny_pipe
    tok, te = pipe.tokenizer, pipe.text_encoder  # type: ignore[attr-defined]
    long_prompt = portrait_prompt(SUIT, MAN) + ", " + ", ".join(["a portrait photo in the garden"] * 12)
    assert count_windows(tok, long_prompt) >= 2

    positive, negative = build_prompt_embeds(tok, te, long_prompt, recipe.NEGATIVE_PROMPT, "diffusers")

    theirs, theirs_negative = pipe.encode_prompt(  # type: ignore[attr-defined]
        long_prompt, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True,
        negative_prompt=recipe.NEGATIVE_PROMPT,
    )  # fmt: skip
    assert positive.shape == negative.shape == (1, 77, 32)
    assert torch.equal(positive, theirs) and torch.equal(negative, theirs_negative)
    # "(<fcsks>:10)" is text to diffusers: the weighted encoding reads a weight of 10 instead.
    weighted, _ = build_prompt_embeds(tok, te, portrait_prompt(SUIT, MAN), "", "weighted")
    plain, _ = build_prompt_embeds(tok, te, portrait_prompt(SUIT, MAN), "", "diffusers")
    assert not torch.allclose(weighted[:, :77], plain)
