"""CUDA graphs change how the work is launched, never what it computes (run on the GPU machine).

``pytest -m gpu tests/gpu``: the tiny pipeline on CUDA, trained and sampled with and without graphs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def cuda_pipe(tmp_path_factory: pytest.TempPathFactory) -> object:
    from pipeline.models import load_base_pipeline, make_tiny_pipeline
    from tests.pipeline.tiny import tiny_settings

    folder = make_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "sd")
    settings = tiny_settings(folder, tmp_path_factory.mktemp("env"), device="cuda", dtype="bf16")
    return load_base_pipeline(settings, torch.device("cuda"), torch.bfloat16)


def test_graphed_training_follows_the_eager_losses(cuda_pipe: object, tmp_path: Path) -> None:
    from pipeline.train import TrainArgs, train_lora
    from tests.pipeline.tiny import face_images

    runs = {}
    for graphs in (False, True):
        losses: list[float] = []
        args = TrainArgs(train_batch_size=2, max_train_steps=24, resolution=64, cuda_graphs=graphs)
        out = tmp_path / f"lora_{graphs}.safetensors"
        train_lora(
            cuda_pipe,  # type: ignore[arg-type]
            face_images(3),
            "<fcsks>, a man",
            args,
            out,
            on_progress=lambda s, n, v, into=losses: into.append(v),
        )
        runs[graphs] = (losses, out)

    eager, graphed = runs[False][0], runs[True][0]
    assert len(eager) == len(graphed) == 12
    assert np.allclose(eager, graphed, rtol=2e-2), (eager, graphed)
    assert not np.allclose(eager[:3], eager[-3:]), "the loss must move for the comparison to mean something"


def test_graphed_generation_matches_eager_and_survives_a_face_switch(cuda_pipe: object, tmp_path: Path) -> None:
    from pipeline.config import WorkerSettings
    from pipeline.generate import PortraitGenerator
    from pipeline.jobs import StyleSpec
    from tests.pipeline.tiny import random_lora_file

    settings = WorkerSettings(_env_file=None, resolution=64, inference_steps=4, candidates=3, torch_compile="off")  # type: ignore[call-arg]
    faces = [random_lora_file(cuda_pipe, tmp_path / f"f{i}.safetensors", seed=i) for i in range(2)]
    style = StyleSpec(name="s", prompt="a portrait")
    graphed = PortraitGenerator(cuda_pipe, settings, cuda_graphs=True)  # type: ignore[arg-type]
    eager = PortraitGenerator(cuda_pipe, settings, cuda_graphs=False)  # type: ignore[arg-type]

    def pixels(gen: PortraitGenerator, face: Path) -> np.ndarray:
        made = gen.generate(face, style, None, "a man", 3, 3, seed=5, batch_size=3)
        return np.stack([np.asarray(c.image, np.int16) for c in made])

    first = pixels(graphed, faces[0])
    captures = graphed.unet.captures
    second = pixels(graphed, faces[1])
    again = pixels(graphed, faces[0])

    assert captures == 1 and graphed.unet.captures == 1, "a face switch must not capture again"
    assert np.abs(first - pixels(eager, faces[0])).max() <= 2
    assert np.abs(second - pixels(eager, faces[1])).max() <= 2
    assert np.abs(first - second).max() > 10
    assert np.array_equal(first, again)


def test_inductor_compiled_generation_matches_the_plain_unet_and_follows_a_face_switch(
    cuda_pipe: object, tmp_path: Path
) -> None:
    from torch._dynamo.utils import counters

    from pipeline.config import WorkerSettings
    from pipeline.generate import PortraitGenerator
    from pipeline.jobs import StyleSpec
    from tests.pipeline.tiny import random_lora_file

    torch._dynamo.reset()
    settings = WorkerSettings(_env_file=None, resolution=64, inference_steps=4, candidates=3)  # type: ignore[call-arg]
    faces = [random_lora_file(cuda_pipe, tmp_path / f"f{i}.safetensors", seed=i) for i in range(2)]
    style = StyleSpec(name="s", prompt="a portrait")
    plain = PortraitGenerator(cuda_pipe, settings.model_copy(update={"torch_compile": "off"}))  # type: ignore[arg-type]
    compiled = PortraitGenerator(cuda_pipe, settings)  # type: ignore[arg-type]
    assert compiled.unet.compiled is not None

    def pixels(gen: PortraitGenerator, face: Path) -> np.ndarray:
        made = gen.generate(face, style, None, "a man", 3, 3, seed=5, batch_size=3)
        return np.stack([np.asarray(c.image, np.int16) for c in made])

    first = pixels(compiled, faces[0])
    graphs = counters["stats"]["unique_graphs"]
    second = pixels(compiled, faces[1])

    assert compiled.unet.compiled is not None, "the compiled UNet must not have fallen back"
    assert counters["stats"]["unique_graphs"] == graphs, "a face switch must not recompile"
    # Fused kernels round differently (bf16): close to the plain UNet on average, far from the other face.
    assert np.abs(first - pixels(plain, faces[0])).mean() <= 1.5
    assert np.abs(second - pixels(plain, faces[1])).mean() <= 1.5
    assert np.abs(first - second).mean() > 5


def test_a_resident_graphed_trainer_starts_every_job_afresh(cuda_pipe: object, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from pipeline.train import LoraTrainer, TrainArgs, train_lora
    from tests.pipeline.tiny import face_images

    args = TrainArgs(train_batch_size=2, max_train_steps=16, resolution=64, seed=3)
    fresh = tmp_path / "fresh.safetensors"
    train_lora(cuda_pipe, face_images(2), "<fcsks>, a man", args, fresh)  # type: ignore[arg-type]
    trainer = LoraTrainer(cuda_pipe)  # type: ignore[arg-type]
    try:
        trainer.warm_up(args)
        assert trainer.step is not None and trainer.step.graph is not None, "captured at start-up"
        other = TrainArgs(train_batch_size=2, max_train_steps=16, resolution=64, seed=8)
        trainer.train(face_images(3, seed=5), "<fcsks>, a woman", other, tmp_path / "other.safetensors")
        again = trainer.train(face_images(2), "<fcsks>, a man", args, tmp_path / "again.safetensors")
        assert trainer.step.captures == 1, "jobs replay the start-up's graph"
    finally:
        trainer.close()
    first, second = load_file(fresh), load_file(again.lora_path)
    assert first.keys() == second.keys()
    assert all(torch.allclose(first[k], second[k], atol=1e-4) for k in first)


def test_inductor_compiled_training_follows_the_plain_losses(cuda_pipe: object, tmp_path: Path) -> None:
    from pipeline.train import LoraTrainer, TrainArgs

    args = TrainArgs(train_batch_size=2, max_train_steps=24, resolution=64, seed=4)
    runs = {}
    for mode in ("off", "on"):
        torch._dynamo.reset()
        trainer = LoraTrainer(cuda_pipe, compile_mode=mode)  # type: ignore[arg-type]
        losses: list[float] = []
        try:
            trainer.warm_up(args)
            assert trainer.step is not None and (trainer.step.forward is not None) == (mode == "on")
            trainer.train(
                face_images_for_test(), "<fcsks>, a man", args, tmp_path / f"{mode}.safetensors",
                on_progress=lambda s, n, v, into=losses: into.append(v),
            )  # fmt: skip
        finally:
            trainer.close()
        runs[mode] = losses
    assert len(runs["on"]) == 12
    assert np.allclose(runs["off"], runs["on"], rtol=3e-2), runs
    assert not np.allclose(runs["on"][:3], runs["on"][-3:]), "the loss must move for the comparison to mean something"


def face_images_for_test() -> list[object]:
    from tests.pipeline.tiny import face_images

    return list(face_images(3))
