"""Face LoRA training on the tiny pipeline: 2-3 real optimizer steps through the production code."""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from torch._dynamo.utils import counters

from pipeline.config import WorkerSettings
from pipeline.devices import DeviceOutOfMemory
from pipeline.lora_files import validate_lora_file
from pipeline.recipe import get_recipe
from pipeline.train import (
    LoraTrainer,
    TrainArgs,
    TrainingCancelled,
    _square_views,
    has_adapters,
    main,
    parse_args,
    train_lora,
)
from tests.pipeline.tiny import face_images, random_lora_file

CAPTION = "<fcsks>, a handsome man"


def _args(settings: WorkerSettings, **overrides: object) -> TrainArgs:
    # A large learning rate so that three steps move the LoRA measurably; two crops keep it quick;
    # batch 1 so that a sample is a step (FaceChain's recipe), whatever the worker's default batch.
    values: dict[str, object] = {"learning_rate": 1e-2, "crops_per_image": 2, "train_batch_size": 1}
    values.update(overrides)
    return TrainArgs.from_settings(settings, **values)


def _unet_output(pipe: object) -> torch.Tensor:
    unet = pipe.unet  # type: ignore[attr-defined]
    sample = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    context = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return unet(sample, 500, context).sample


def _assert_clean(pipe: object) -> None:
    unet = pipe.unet  # type: ignore[attr-defined]
    assert not has_adapters(unet)
    assert not getattr(unet, "peft_config", None)
    assert not unet.training
    assert not any(p.requires_grad for p in unet.parameters())


def test_training_writes_a_lora_that_loads_and_changes_the_unet(
    tiny_pipe: object, tiny_env: WorkerSettings, tmp_path: Path
) -> None:
    before = _unet_output(tiny_pipe)
    progress: list[tuple[int, int, float]] = []
    out = tmp_path / "loras" / "face.safetensors"

    result = train_lora(
        tiny_pipe,  # type: ignore[arg-type]
        face_images(3),
        CAPTION,
        _args(tiny_env),
        out,
        on_progress=lambda step, total, loss: progress.append((step, total, loss)),
    )

    assert result.steps == 3 and result.lora_path == out and out.is_file()
    assert math.isfinite(result.final_loss) and result.seconds > 0
    assert [(s, t) for s, t, _ in progress] == [(1, 3), (2, 3), (3, 3)]
    assert all(math.isfinite(loss) for _, _, loss in progress)
    assert progress[-1][2] == result.final_loss
    # The resident UNet is exactly as before: no adapter, same function.
    _assert_clean(tiny_pipe)
    assert torch.equal(_unet_output(tiny_pipe), before)
    # The file is a diffusers LoRA of rank 4 on q/k/v/out that the bot's validator accepts.
    validate_lora_file(out, max_bytes=10_000_000)
    weights = load_file(out)
    assert all(k.startswith("unet.") for k in weights)
    for target in ("attn1.to_q", "attn1.to_k", "attn2.to_v", "attn2.to_out.0"):
        assert any(f"{target}.lora.down.weight" in k for k in weights), target
    assert {w.shape[0] for k, w in weights.items() if k.endswith("lora.down.weight")} == {4}
    # ... and the real loader reads it, changing the UNet's output; unloading restores it.
    pipe = tiny_pipe
    pipe.load_lora_weights(str(out.parent), weight_name=out.name, adapter_name="trained")  # type: ignore[attr-defined]
    try:
        with_lora = _unet_output(pipe)
        assert (with_lora - before).abs().max() > 1e-4
    finally:
        pipe.unload_lora_weights()  # type: ignore[attr-defined]
    assert torch.equal(_unet_output(pipe), before)


def test_lora_alpha_is_recorded_in_the_file(tiny_pipe: object, tiny_env: WorkerSettings, tmp_path: Path) -> None:
    out = tmp_path / "face.safetensors"
    train_lora(tiny_pipe, face_images(1), CAPTION, _args(tiny_env, alpha=8.0, max_train_steps=1), out)  # type: ignore[arg-type]

    with safe_open(str(out), "pt") as handle:
        metadata = handle.metadata()
    assert '"unet.lora_alpha": 8.0' in metadata["lora_adapter_metadata"]
    assert '"unet.r": 4' in metadata["lora_adapter_metadata"]


def test_the_fast_recipe_trains_800_samples_in_100_batches_of_8() -> None:
    args = TrainArgs.from_settings(WorkerSettings(_env_file=None, recipe="fast"))  # type: ignore[call-arg]

    assert args.total_samples(5) == 800 and args.train_batch_size == 8 and args.total_steps(5) == 100
    # The learning rate follows the batch and is held after a 10-step warm-up (docs/benchmarks.md).
    assert args.scaled_learning_rate() == pytest.approx(8 * 1.5e-4)
    assert (args.lr_scheduler, args.lr_warmup_steps) == ("constant_with_warmup", 10)
    # Three photos: 600 samples, 75 steps.
    assert args.total_steps(3) == 75


def test_should_stop_cancels_between_steps(tiny_pipe: object, tiny_env: WorkerSettings, tmp_path: Path) -> None:
    polls: list[int] = []

    def should_stop() -> bool:
        polls.append(1)
        return len(polls) >= 2  # let one step run, stop before the second

    out = tmp_path / "face.safetensors"
    with pytest.raises(TrainingCancelled) as caught:
        train_lora(tiny_pipe, face_images(2), CAPTION, _args(tiny_env), out, should_stop=should_stop)  # type: ignore[arg-type]

    assert caught.value.steps_done == 1
    assert caught.value.error_code == "cancelled"
    assert not out.exists() and not list(tmp_path.glob("*.partial"))
    _assert_clean(tiny_pipe)


def test_initial_face_lora_seeds_the_adapter(tiny_pipe: object, tiny_env: WorkerSettings, tmp_path: Path) -> None:
    init = random_lora_file(tiny_pipe, tmp_path / "generic_face.safetensors", seed=3)
    out = tmp_path / "face.safetensors"

    # With a zero learning rate (and so no weight decay either) training must save the start point.
    train_lora(
        tiny_pipe,  # type: ignore[arg-type]
        face_images(1),
        CAPTION,
        _args(tiny_env, learning_rate=0.0, max_train_steps=2, init_lora=init),
        out,
    )

    start, saved = load_file(init), load_file(out)
    assert saved.keys() == start.keys()
    assert all(torch.equal(saved[k], start[k]) for k in start)
    _assert_clean(tiny_pipe)


def test_training_refuses_a_pipeline_that_still_has_adapters(
    tiny_pipe: object, tiny_env: WorkerSettings, tmp_path: Path
) -> None:
    lora = random_lora_file(tiny_pipe, tmp_path / "leftover.safetensors", seed=4)
    tiny_pipe.load_lora_weights(str(lora.parent), weight_name=lora.name, adapter_name="leftover")  # type: ignore[attr-defined]
    try:
        with pytest.raises(RuntimeError, match="already carries"):
            train_lora(tiny_pipe, face_images(1), CAPTION, _args(tiny_env), tmp_path / "x.safetensors")  # type: ignore[arg-type]
    finally:
        tiny_pipe.unload_lora_weights()  # type: ignore[attr-defined]


@pytest.mark.parametrize(("photos", "expected"), [(1, 200), (3, 600), (4, 800), (10, 2000)])
def test_step_budget_is_200_a_photo(photos: int, expected: int) -> None:
    facechain = TrainArgs.from_recipe(get_recipe("facechain"))
    assert facechain.total_steps(photos) == expected
    assert TrainArgs.from_recipe(get_recipe("facechain"), max_train_steps=800).total_steps(photos) == min(expected, 800)
    # The fast recipe (the default) caps the same budget at 800 samples, in steps of 8.
    assert TrainArgs().total_steps(photos) == min(expected, 800) // 8


def test_augmented_views_are_flips_and_crops_at_the_resolution() -> None:
    image = face_images(1, size=96)[0]
    rng = torch.Generator().manual_seed(0)

    views = _square_views(image, TrainArgs(resolution=32, crops_per_image=3), rng)
    plain = _square_views(image, TrainArgs(resolution=32, random_flip=False, random_crop=False), rng)

    assert len(views) == 6 and all(v.size == (32, 32) for v in views)
    assert (
        views[3].tobytes() == views[0].transpose(Image.Transpose.FLIP_LEFT_RIGHT).tobytes()
    )  # second half: the mirrors
    assert len(plain) == 1 and plain[0].tobytes() == views[0].tobytes()  # the full centre square
    assert views[1].tobytes() != views[0].tobytes()


def test_script_entry_trains_like_the_diffusers_example(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, image in enumerate(face_images(2)):
        image.save(photos / f"{i}.png")
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("FACECHAIN_DEVICE", "cpu")
    monkeypatch.setenv("FACECHAIN_DTYPE", "fp32")
    out = tmp_path / "out" / "face.safetensors"

    args = parse_args(
        [
            "--base_model", str(tiny_model_dir), "--images_dir", str(photos), "--caption", CAPTION,
            "--output", str(out), "--resolution", "64", "--max_train_steps", "2", "--no-random_flip",
            "--crops_per_image", "1", "--train_batch_size", "1",
        ]
    )  # fmt: skip
    assert args.random_flip is False and args.rank is None
    result = main(args)

    assert result.steps == 2 and out.is_file()


def test_out_of_memory_becomes_a_typed_error_and_leaves_the_unet_clean(
    tiny_pipe: object, tiny_env: WorkerSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def exhausted(*args: object, **kwargs: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(tiny_pipe.unet, "forward", exhausted)  # type: ignore[attr-defined]
    with pytest.raises(DeviceOutOfMemory) as caught:
        train_lora(tiny_pipe, face_images(1), CAPTION, _args(tiny_env), tmp_path / "face.safetensors")  # type: ignore[arg-type]

    assert caught.value.error_code == "out_of_memory"
    assert caught.value.__cause__ is None and caught.value.__context__ is None  # the traceback is let go
    monkeypatch.undo()
    _assert_clean(tiny_pipe)


@pytest.mark.parametrize(("batch", "steps"), [(1, 800), (8, 100), (3, 267)])
def test_a_larger_batch_does_the_same_samples_in_fewer_steps(batch: int, steps: int) -> None:
    args = TrainArgs(train_batch_size=batch, max_train_steps=800)
    assert args.total_samples(5) == 800
    assert args.total_steps(5) == steps


def _same_weights(a: Path, b: Path) -> bool:
    first, second = load_file(a), load_file(b)
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_a_resident_trainer_keeps_its_step_and_every_job_starts_afresh(
    tiny_pipe: object, tiny_env: WorkerSettings, tmp_path: Path
) -> None:
    # What a worker does: one trainer, many people. A job must not inherit the previous person's
    # adapter weights or optimizer moments: the same photos and seed give the very same LoRA as a
    # fresh adapter does.
    fresh = tmp_path / "fresh.safetensors"
    train_lora(tiny_pipe, face_images(2, seed=1), CAPTION, _args(tiny_env, seed=7), fresh)  # type: ignore[arg-type]
    trainer = LoraTrainer(tiny_pipe)  # type: ignore[arg-type]
    try:
        first = trainer.train(face_images(2, seed=1), CAPTION, _args(tiny_env, seed=7), tmp_path / "a1.safetensors")
        step = trainer.step
        other = trainer.train(face_images(3, seed=2), CAPTION, _args(tiny_env, seed=9), tmp_path / "b.safetensors")
        again = trainer.train(face_images(2, seed=1), CAPTION, _args(tiny_env, seed=7), tmp_path / "a2.safetensors")

        assert trainer.step is step, "the adapter and optimizer are built once"
        assert has_adapters(tiny_pipe.unet)  # type: ignore[attr-defined]
        assert _same_weights(first.lora_path, again.lora_path)
        assert _same_weights(first.lora_path, fresh)
        assert not _same_weights(first.lora_path, other.lora_path)
    finally:
        trainer.close()
    _assert_clean(tiny_pipe)


def test_a_cancelled_job_leaves_the_next_job_a_clean_start(
    tiny_pipe: object, tiny_env: WorkerSettings, tmp_path: Path
) -> None:
    trainer = LoraTrainer(tiny_pipe)  # type: ignore[arg-type]
    try:
        with pytest.raises(TrainingCancelled):
            trainer.train(
                face_images(2, seed=3), CAPTION, _args(tiny_env, seed=1, steps_per_photo=3), tmp_path / "x.safetensors",
                should_stop=iter([False, False, True]).__next__,
            )  # fmt: skip
        done = trainer.train(face_images(2, seed=1), CAPTION, _args(tiny_env, seed=7), tmp_path / "a.safetensors")
    finally:
        trainer.close()
    fresh = tmp_path / "fresh.safetensors"
    train_lora(tiny_pipe, face_images(2, seed=1), CAPTION, _args(tiny_env, seed=7), fresh)  # type: ignore[arg-type]
    assert _same_weights(done.lora_path, fresh)


def test_other_training_settings_rebuild_the_step(tiny_pipe: object, tiny_env: WorkerSettings, tmp_path: Path) -> None:
    trainer = LoraTrainer(tiny_pipe)  # type: ignore[arg-type]
    try:
        trainer.train(face_images(1), CAPTION, _args(tiny_env), tmp_path / "r4.safetensors")
        rank4 = trainer.step
        out = tmp_path / "r8.safetensors"
        trainer.train(face_images(1), CAPTION, _args(tiny_env, rank=8, alpha=8.0), out)
        assert trainer.step is not rank4
        assert {w.shape[0] for k, w in load_file(out).items() if k.endswith("lora.down.weight")} == {8}
    finally:
        trainer.close()
    _assert_clean(tiny_pipe)


def test_compiled_training_step_follows_the_plain_one_and_is_traced_once(
    tiny_pipe: object, tiny_env: WorkerSettings, tmp_path: Path
) -> None:
    # aot_eager: Dynamo traces the UNet with its adapter and AOT autograd builds the backward, as
    # with Inductor (which compiles the same graphs to kernels on the GPU machine).
    args = _args(tiny_env, seed=5, max_train_steps=4, steps_per_photo=2)
    plain: list[float] = []
    train_lora(
        tiny_pipe, face_images(2), CAPTION, args, tmp_path / "plain.safetensors",  # type: ignore[arg-type]
        on_progress=lambda s, n, loss: plain.append(loss),
    )  # fmt: skip
    torch._dynamo.reset()
    trainer = LoraTrainer(tiny_pipe, compile_mode="on", compile_backend="aot_eager")  # type: ignore[arg-type]
    try:
        assert not trainer.compiled_ready.is_set()
        trainer.warm_up(args)
        assert trainer.compiled_ready.is_set() and trainer.step is not None and trainer.step.forward is not None
        graphs = counters["stats"]["unique_graphs"]
        compiled: list[float] = []
        first = trainer.train(
            face_images(2), CAPTION, args, tmp_path / "compiled.safetensors",
            on_progress=lambda s, n, loss: compiled.append(loss),
        )  # fmt: skip
        trainer.train(face_images(3, seed=4), CAPTION, _args(tiny_env, seed=6), tmp_path / "other.safetensors")
        assert counters["stats"]["unique_graphs"] == graphs, "a new job must not trace the UNet again"
    finally:
        trainer.close()
        torch._dynamo.reset()
    assert len(compiled) == len(plain) == 4
    assert compiled == pytest.approx(plain, rel=1e-4)
    # AdamW turns last-bit gradient differences near zero into steps of up to the learning rate:
    # 4 steps at 1e-2 (FaceChain's schedule has no warm-up) leave up to 3e-4; a step that trained
    # other weights, or none, would be off by about the learning rate × 4.
    assert _same_weights_close(first.lora_path, tmp_path / "plain.safetensors", atol=1e-3)
    _assert_clean(tiny_pipe)


def test_jobs_train_on_the_plain_step_while_the_compiled_one_is_made(
    tiny_pipe: object, tiny_env: WorkerSettings, tmp_path: Path
) -> None:
    # The first compile of a deployment takes minutes on the GPU; a /done meanwhile must not wait
    # for it. Here the compile is held until the job is done.
    args = _args(tiny_env, seed=7)
    fresh = tmp_path / "fresh.safetensors"
    train_lora(tiny_pipe, face_images(2, seed=1), CAPTION, args, fresh)  # type: ignore[arg-type]
    compiling, release = threading.Event(), threading.Event()

    def held_backend(graph: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Any:
        compiling.set()
        assert release.wait(timeout=120)
        return torch._dynamo.lookup_backend("aot_eager")(graph, example_inputs)

    torch._dynamo.reset()
    trainer = LoraTrainer(tiny_pipe, compile_mode="on", compile_backend=held_backend)  # type: ignore[arg-type]
    try:
        trainer.warm_up(args, background_compile=True)
        assert compiling.wait(timeout=120)
        plain = trainer.step
        with ThreadPoolExecutor(1) as pool:
            job = pool.submit(trainer.train, face_images(2, seed=1), CAPTION, args, tmp_path / "during.safetensors")
            during = job.result(timeout=60)  # the compile is still held: this job must not wait for it
        assert not trainer.compiled_ready.is_set() and trainer.step is plain and plain is not None
        assert plain.forward is None

        release.set()
        assert trainer.compiled_ready.wait(timeout=300)
        assert trainer.step is not plain and trainer.step is not None and trainer.step.forward is not None
        after = trainer.train(face_images(2, seed=1), CAPTION, args, tmp_path / "after.safetensors")
    finally:
        release.set()
        trainer.close()
        torch._dynamo.reset()
    # The same LoRA as a fresh adapter (up to the last bits: the compile shared the CPU's threads).
    assert _same_weights_close(during.lora_path, fresh)
    assert _same_weights_close(after.lora_path, fresh)
    _assert_clean(tiny_pipe)


def test_a_training_compile_waiting_its_turn_gives_up_when_the_worker_stops(
    tiny_pipe: object, tiny_env: WorkerSettings
) -> None:
    # Compiles run one at a time: this one waits for the UNet's, which is still running at SIGTERM.
    unet_compile_done = threading.Event()
    torch._dynamo.reset()
    trainer = LoraTrainer(tiny_pipe, compile_mode="on", compile_backend="aot_eager")  # type: ignore[arg-type]
    try:
        trainer.warm_up(_args(tiny_env), background_compile=True, after=unet_compile_done)
        assert trainer.background.stop(5) == [], "the waiting compile ended instead of waiting on"
        assert trainer.compiled_ready.is_set()
        assert trainer.step is not None and trainer.step.forward is None, "jobs stay on the plain step"
    finally:
        unet_compile_done.set()
        trainer.close()
        torch._dynamo.reset()
    _assert_clean(tiny_pipe)


def _same_weights_close(a: Path, b: Path, atol: float = 1e-5) -> bool:
    first, second = load_file(a), load_file(b)
    return first.keys() == second.keys() and all(torch.allclose(first[k], second[k], atol=atol) for k in first)
