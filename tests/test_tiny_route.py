"""The tiny-model route a new operator tries first: `models make-tiny`, then script-mode `train` and
`generate` with no tuning flags. The model's own size drives the work (64 px for the tiny model, 512 for
SD 1.5), `--steps` counts optimizer steps, and script mode refuses what the chat refuses.

How long the route takes is measured in docs/benchmarks.md, never asserted here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from bot.cli import main
from pipeline.config import WorkerSettings
from pipeline.train import TrainArgs
from tests.pipeline import photos
from tests.pipeline.tiny import tiny_model_dir  # noqa: F401  (the tiny SD model, built once per session)


@pytest.fixture
def route(cli_env: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:  # noqa: F811
    """The operator's environment after `models make-tiny`: only the model and the ranking switched."""
    monkeypatch.setenv("FACECHAIN_BASE_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("FACECHAIN_RANK_FACES", "false")  # what make-tiny tells the operator to set
    return cli_env


def _shots(folder: Path, count: int) -> Path:
    folder.mkdir()
    for i, image in enumerate(photos.same_person_set(photos.astronaut())[:count]):
        (folder / f"{i}.png").write_bytes(photos.encode(image))
    return folder


@pytest.mark.slow
def test_default_train_and_generate_run_at_the_tiny_models_own_size(
    route: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shots = _shots(route / "shots", 5)
    assert main(["train", str(shots), "--name", "me", "--subject", "woman"]) == 0
    captured = capsys.readouterr()
    # The default recipe's budget (FaceChain's: 200 samples a photo, at batch 1).
    steps = TrainArgs.from_settings(WorkerSettings(_env_file=None)).total_steps(5)
    assert f"trained 'me' on 5 photos in {steps} steps" in captured.out
    assert "training" in captured.err and f"step {steps}/{steps}" in captured.err, "a progress bar"

    assert main(["generate", "me", "--count", "2", "--out", str(route / "out")]) == 0
    written = sorted((route / "out").glob("*.jpg"))
    assert len(written) == 2
    assert {Image.open(path).size for path in written} == {(64, 64)}, "the tiny model's own 64 px"
    bars = capsys.readouterr().err
    assert "generating: 100%" in bars and "%/s" not in bars, "progress in percent done, not percent per second"


@pytest.mark.slow
def test_steps_counts_optimizer_steps(route: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shots = _shots(route / "shots", 3)
    assert main(["train", str(shots), "--name", "me", "--subject", "man", "--steps", "7"]) == 0
    assert "on 3 photos in 7 steps" in capsys.readouterr().out


def test_script_mode_needs_the_chats_minimum_of_photos(
    route: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shots = _shots(route / "shots", 2)
    assert main(["train", str(shots), "--name", "me", "--subject", "woman"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at least 3 are needed (FACECHAIN_MIN_PHOTOS)" in err

    monkeypatch.setenv("FACECHAIN_MIN_PHOTOS", "4")
    shots3 = _shots(route / "three", 3)
    assert main(["train", str(shots3), "--name", "me", "--subject", "woman"]) == 2
    assert "at least 4 are needed" in capsys.readouterr().err


@pytest.mark.slow
def test_too_few_usable_photos_train_nothing(route: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shots = _shots(route / "shots", 2)
    (shots / "cup.png").write_bytes(photos.encode(photos.coffee()))  # three photos, two of them usable
    assert main(["train", str(shots), "--name", "me", "--subject", "woman"]) == 2
    captured = capsys.readouterr()
    assert "dropped cup.png: no face found" in captured.out, "named by the operator's own file name"
    last = captured.err.strip().splitlines()[-1]
    assert last == "facechain-bot train: not trained: 2 of 3 photos usable, at least 3 needed (see above)"
    assert main(["generate", "me", "--out", str(route / "out")]) == 2, "nothing was stored under the name"
    kept = [p for p in (route / "data" / "blobs").rglob("*") if p.is_file() and "photos" in p.parts]
    assert kept == [], "no copy of the photos is left behind"


def test_photos_past_the_maximum_are_left_out_by_name(
    route: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FACECHAIN_MAX_PHOTOS", "3")
    monkeypatch.setenv("FACECHAIN_MAX_TRAIN_STEPS", "2")
    shots = _shots(route / "shots", 5)
    assert main(["train", str(shots), "--name", "me", "--subject", "woman"]) == 0
    out = capsys.readouterr().out
    assert "left out (past FACECHAIN_MAX_PHOTOS=3): 3.png, 4.png" in out
    assert "trained 'me' on 3 photos" in out


@pytest.mark.slow
def test_without_subject_and_without_an_attribute_model_it_asks_for_one(
    route: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shots = _shots(route / "shots", 5)
    assert main(["train", str(shots), "--name", "me"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("facechain-bot train: who is in the photos is not known")
    assert "--subject man, woman, boy, girl or person" in err and "Traceback" not in err
    assert main(["generate", "me", "--out", str(route / "out")]) == 2
    assert "no trained model named 'me'" in capsys.readouterr().err, "no record, not a damaged one"


def test_sd15s_own_size_is_512_and_the_tiny_models_64(tiny_model_dir: Path) -> None:  # noqa: F811
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from pipeline.models import _SD15_UNET, model_side, native_resolution

    class Shape:  # the two parts native_resolution reads, built from SD 1.5's own configs
        def __init__(self, unet: torch.nn.Module, vae: AutoencoderKL) -> None:
            self.unet = unet
            self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)

    with torch.device("meta"):  # the architecture without 3.4 GB of weights
        unet = UNet2DConditionModel(in_channels=4, out_channels=4, **_SD15_UNET)
        vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, sample_size=512,
        )  # fmt: skip
    sd15 = Shape(unet, vae)
    assert native_resolution(sd15) == 512  # type: ignore[arg-type]
    recipe_side = WorkerSettings(_env_file=None).resolution
    assert recipe_side == 512 and model_side(recipe_side, sd15) == 512, "SD 1.5 keeps FaceChain's 512"  # type: ignore[arg-type]

    from pipeline.models import load_base_pipeline

    settings = WorkerSettings(_env_file=None, base_model=str(tiny_model_dir), device="cpu")  # type: ignore[call-arg]
    tiny = load_base_pipeline(settings, "cpu", torch.float32)
    assert native_resolution(tiny) == 64 and model_side(recipe_side, tiny) == 64


def test_small_models_run_on_one_cpu_thread_and_big_ones_on_torchs_default() -> None:
    import torch

    from pipeline.devices import SMALL_MODEL_PARAMETERS, cpu_threads_for

    auto = WorkerSettings(_env_file=None)
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert cpu_threads_for(auto, cpu, 400_000) == 1
    assert cpu_threads_for(auto, cpu, 860_000_000) is None
    assert cpu_threads_for(auto, gpu, 400_000) is None
    assert cpu_threads_for(WorkerSettings(_env_file=None, cpu_threads=3), cpu, 400_000) == 3
    assert SMALL_MODEL_PARAMETERS < 860_000_000
