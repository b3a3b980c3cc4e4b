"""Portrait generation on the resident tiny pipeline with a style LoRA and face LoRAs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import generate as generate_module
from pipeline.config import WorkerSettings
from pipeline.devices import DeviceOutOfMemory
from pipeline.generate import (
    GenerationCancelled,
    PortraitGenerator,
    Sampling,
    adapter_names,
    has_lora_layers,
)
from pipeline.lora_files import InvalidLoraFile
from tests.pipeline.tiny import STYLE
from tests.pipeline.tiny import generate_with as _run
from tests.pipeline.tiny import max_pixel_diff as _max_diff


@pytest.fixture
def generator(tiny_pipe: object, tiny_env: WorkerSettings) -> Iterator[PortraitGenerator]:
    gen = PortraitGenerator(tiny_pipe, tiny_env)  # type: ignore[arg-type]
    yield gen
    assert not has_lora_layers(gen.pipe), "a test left adapters on the shared pipeline"


def test_two_faces_and_a_style_swap_adapters_on_one_resident_pipeline(
    generator: PortraitGenerator, loras: dict[str, Path]
) -> None:
    pipe, unet, text_encoder = generator.pipe, generator.pipe.unet, generator.pipe.text_encoder
    progress: list[tuple[int, int]] = []

    first = _run(generator, loras, on_progress=lambda done, total: progress.append((done, total)))
    assert not has_lora_layers(pipe) and adapter_names(pipe) == []
    second = _run(generator, loras, face="face2")
    again = _run(generator, loras)

    assert [c.seed for c in first] == [11, 12, 13]
    assert all(c.image.size == (64, 64) and c.image.mode == "RGB" for c in first + second)
    # 3 candidates in batches of 2 = 2 batches × 2 steps, reported in order.
    assert progress == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert _max_diff(first, again) == 0, "same seed and LoRAs must give the same images"
    assert _max_diff(first, second) > 10, "another face LoRA must change the images"
    assert generator.pipe is pipe and pipe.unet is unet and pipe.text_encoder is text_encoder
    assert not has_lora_layers(pipe) and adapter_names(pipe) == []


def test_count_above_candidates_and_random_seeds(generator: PortraitGenerator, loras: dict[str, Path]) -> None:
    result = _run(generator, loras, style_lora_path=None, count=3, candidates=1, seed=None, batch_size=5)

    assert len(result) == 3
    base = result[0].seed
    assert [c.seed for c in result] == [base, base + 1, base + 2]
    assert len({c.image.tobytes() for c in result}) == 3


def test_each_seed_reproduces_its_own_portrait(generator: PortraitGenerator, loras: dict[str, Path]) -> None:
    batch = _run(generator, loras, candidates=3, seed=20, batch_size=3)
    alone = _run(generator, loras, count=1, candidates=1, seed=21, batch_size=1)

    # Candidate 1 of the batch has seed 21; regenerating seed 21 alone gives the same picture
    # (up to one grey level: batched and single convolutions round differently).
    assert batch[1].seed == alone[0].seed == 21
    assert _max_diff([batch[1]], alone) <= 2
    assert _max_diff([batch[0]], alone) > 10


def test_style_lora_and_its_weight_matter(generator: PortraitGenerator, loras: dict[str, Path]) -> None:
    with_style = _run(generator, loras)
    without = _run(generator, loras, style_lora_path=None)
    zero_weight = _run(generator, loras, style=STYLE.model_copy(update={"style_weight": 0.0}))

    assert _max_diff(with_style, without) > 10
    assert _max_diff(zero_weight, without) <= 1


@pytest.mark.parametrize(("merge", "reader"), [("direct", "read_lora_layers"), ("peft", "read_lora")])
def test_style_lora_is_read_once_and_cached(
    generator: PortraitGenerator,
    loras: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    merge: str,
    reader: str,
) -> None:
    reads: list[Path] = []
    real_read = getattr(generate_module, reader)

    def counting_read(pipe: object, path: Path, *args: object) -> object:
        reads.append(path)
        return real_read(pipe, path, *args)

    monkeypatch.setattr(generate_module, reader, counting_read)
    generator.merge = merge
    first = _run(generator, loras, candidates=1, count=1)
    second = _run(generator, loras, candidates=1, count=1, face="face2")
    third = _run(generator, loras, candidates=1, count=1)

    assert reads.count(loras["style"]) == 1
    assert reads.count(loras["face1"]) == 2 and reads.count(loras["face2"]) == 1
    assert _max_diff(first, third) == 0 and _max_diff(first, second) > 10


def _weights(pipe: object) -> dict[str, dict[str, torch.Tensor]]:
    return {
        part: {k: v.clone() for k, v in getattr(pipe, part).state_dict().items()} for part in ("unet", "text_encoder")
    }


def _assert_same_weights(pipe: object, before: dict[str, dict[str, torch.Tensor]]) -> None:
    for part, weights in before.items():
        after = getattr(pipe, part).state_dict()
        assert after.keys() == weights.keys()
        assert all(torch.equal(after[k], weights[k]) for k in weights), part


def test_direct_merge_and_peft_fuse_match_peft_adapters_and_restore_exact_weights(
    generator: PortraitGenerator, loras: dict[str, Path]
) -> None:
    pipe = generator.pipe
    before = _weights(pipe)
    generator.merge, generator.fuse = "peft", False
    adapters = _run(generator, loras)

    generator.fuse = True
    peft_fused = _run(generator, loras)
    _assert_same_weights(pipe, before)
    generator.merge = "direct"
    direct = _run(generator, loras)
    _assert_same_weights(pipe, before)

    # The same style (kohya names, text-encoder layers, alphas) and face LoRA, three ways.
    assert _max_diff(adapters, peft_fused) <= 2
    assert _max_diff(adapters, direct) <= 2
    assert pipe.num_fused_loras == 0 and not generator.fuser.fused


def test_a_lora_the_direct_merge_cannot_place_takes_the_peft_route(
    generator: PortraitGenerator, loras: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    generator.merge = "peft"
    via_peft = _run(generator, loras)

    def unsupported(*args: object) -> object:
        raise generate_module.UnsupportedLora("a DoRA file")

    generator.merge = "direct"
    monkeypatch.setattr(generate_module, "read_lora_layers", unsupported)
    fallback = _run(generator, loras)

    assert _max_diff(via_peft, fallback) == 0
    assert not has_lora_layers(generator.pipe)


def test_should_stop_cancels_mid_generation(generator: PortraitGenerator, loras: dict[str, Path]) -> None:
    steps: list[int] = []

    with pytest.raises(GenerationCancelled) as caught:
        _run(
            generator,
            loras,
            on_progress=lambda done, total: steps.append(done),
            should_stop=lambda: bool(steps),
        )

    assert steps == [1]
    assert caught.value.error_code == "cancelled"
    assert not has_lora_layers(generator.pipe)


def test_a_pickle_posing_as_style_lora_is_refused_before_loading(
    generator: PortraitGenerator, loras: dict[str, Path], tmp_path: Path
) -> None:
    fake = tmp_path / "style.safetensors"
    torch.save({"lora_unet_x.lora_down.weight": torch.zeros(1)}, fake)

    with pytest.raises(InvalidLoraFile) as caught:
        _run(generator, loras, style_lora_path=fake)
    assert caught.value.code == "not_safetensors"


def test_out_of_memory_becomes_a_typed_error_and_removes_the_adapters(
    generator: PortraitGenerator, loras: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def exhausted(*args: object, **kwargs: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")

    monkeypatch.setattr(generator.pipe.unet, "forward", exhausted)
    with pytest.raises(DeviceOutOfMemory) as caught:
        _run(generator, loras)

    assert caught.value.error_code == "out_of_memory"
    monkeypatch.undo()
    assert not has_lora_layers(generator.pipe) and adapter_names(generator.pipe) == []


def test_the_denoising_loop_gives_the_diffusers_pipelines_own_images(generator: PortraitGenerator) -> None:
    from pipeline.prompts import build_prompt_embeds

    pipe = generator.pipe
    prompt, negative = build_prompt_embeds(pipe.tokenizer, pipe.text_encoder, "a portrait", "blurry")
    ours = generator._run_batches(Sampling(prompt, negative, 3, 7.0), [5, 6], 2, None, None, graphed=False)
    theirs = pipe(
        prompt_embeds=prompt.expand(2, -1, -1),
        negative_prompt_embeds=negative.expand(2, -1, -1),
        num_inference_steps=3,
        guidance_scale=7.0,
        height=generator.settings.resolution,
        width=generator.settings.resolution,
        generator=[torch.Generator("cpu").manual_seed(s) for s in (5, 6)],
        output_type="pil",
    ).images

    assert len(ours) == 2
    for mine, reference in zip(ours, theirs, strict=True):
        assert mine.size == reference.size
        assert int(np.abs(np.asarray(mine, np.int16) - np.asarray(reference, np.int16)).max()) == 0
