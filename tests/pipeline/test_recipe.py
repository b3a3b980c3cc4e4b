"""The recipe: FaceChain's values, the fast variant, and the defaults that follow it.

The expected values are read from FaceChain v3.0.0 (github.com/modelscope/facechain, tag v3.0.0,
commit 686a34b); each row names the file and line.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from bot.settings_loader import SettingsError, load_settings
from pipeline import recipe
from pipeline.config import WorkerSettings
from pipeline.recipe import FACECHAIN, FAST, FAST_KNOBS, RECIPES, SETTING_KNOBS
from pipeline.train import TrainArgs

# (recipe field, FaceChain's value, where FaceChain sets it)
FACECHAIN_VALUES = [
    ("base_model", "ly261666/cv_portrait_model", "app.py:777 (revision v2.0, sub_path film/film: 778-779)"),
    ("resolution", 512, "train_lora.sh:15 --resolution=512"),
    ("random_flip", True, "train_lora.sh:15 --random_flip"),
    ("train_batch_size", 1, "train_lora.sh:16 --train_batch_size=1"),
    ("steps_per_photo", 200, "train_lora.sh:17 --num_train_epochs=200; train_text_to_image_lora.py:897-898"),
    ("max_train_steps", None, "app.py:91 computes min(photos*200, 800) but no --max_train_steps is passed"),
    ("learning_rate", 1.5e-4, "train_lora.sh:18 --learning_rate=1.5e-04"),
    ("lr_scheduler", "cosine", "train_lora.sh:18 --lr_scheduler=cosine"),
    ("lr_warmup_steps", 0, "train_lora.sh:18 --lr_warmup_steps=0"),
    ("lr_batch_scaling", "none", "train_lora.sh:16 batch 1, no --scale_lr"),
    ("train_seed", 42, "train_lora.sh:19 --seed=42"),
    ("lora_rank", 4, "train_lora.sh:21 --lora_r=4"),
    # --lora_alpha=32 (train_lora.sh:21) is unused: LoRAAttnProcessor(rank=lora_r) without network_alpha
    # (train_text_to_image_lora.py:715) does not scale its output, i.e. peft's alpha = rank.
    ("lora_alpha", 4.0, "train_text_to_image_lora.py:715"),
    ("lora_targets", ("to_q", "to_k", "to_v", "to_out.0"), "train_text_to_image_lora.py:715 LoRAAttnProcessor"),
    ("candidates", 10, "inference.py:251 txt2img(num_images=10)"),
    ("scheduler", "dpm_solver_singlestep", "inference.py:190 DPMSolverSinglestepScheduler"),
    ("inference_steps", 40, "inference.py:191"),
    ("guidance_scale", 7.0, "inference.py:192"),
    ("prompt_encoding", "diffusers", "inference.py:43 a plain StableDiffusionPipeline call"),
    ("style_weight", 0.35, "app.py:233 multiplier_style=0.35"),
    ("face_weight", 0.95, "app.py:234 multiplier_human=0.95"),
]

FACECHAIN_TEXTS = [
    ("TRIGGER_TOKEN", "<fcsks>", "data_process/preprocessing.py:353"),
    ("TRIGGER_PROMPT", "(<fcsks>:10)", "inference.py:229"),
    (
        "PROMPT_WITH_CLOTH",
        "raw photo, masterpiece, {}, solo, medium shot, high detail face, looking straight into the "
        "camera with shoulders parallel to the frame, photorealistic, best quality",
        "constants.py:5 less its word 'chinese' (docs/pipeline.md says why)",
    ),
    (
        "PROMPT_WITH_STYLE",
        "{}, upper_body, raw photo, masterpiece, solo, medium shot, high detail face, photorealistic, best quality",
        "constants.py:6",
    ),
    (
        "NEGATIVE_PROMPT",
        "(nsfw:2), paintings, sketches, (worst quality:2), (low quality:2), lowers, normal quality, "
        "((monochrome)), ((grayscale)), logo, word, character, bad hand, tattoo, (username, watermark, signature, "
        "time signature, timestamp, artist name, copyright name, copyright),low res, ((monochrome)), ((grayscale)), "
        "skin spots, acnes, skin blemishes, age spot, glans, extra fingers, fewer fingers, strange fingers, "
        "bad hand, mole, ((extra legs)), ((extra hands))",
        "constants.py:2-4",
    ),
    ("NEGATIVE_FOR_PHRASE", {"a handsome man": "children", "a mature man": "children"}, "inference.py:230-231"),
    ("CHILD_AGE", 10, "data_process/preprocessing.py:67 FairFace age bucket < 2 (0-2, 3-9)"),
    ("MATURE_AGE", 40, "data_process/preprocessing.py:72 FairFace age bucket > 4 (40-49 on)"),
]


@pytest.mark.parametrize(("knob", "value", "where"), FACECHAIN_VALUES, ids=[row[0] for row in FACECHAIN_VALUES])
def test_the_facechain_recipe_has_facechains_value(knob: str, value: object, where: str) -> None:
    assert getattr(FACECHAIN, knob) == value, where


@pytest.mark.parametrize(("name", "value", "where"), FACECHAIN_TEXTS, ids=[row[0] for row in FACECHAIN_TEXTS])
def test_the_prompts_and_labels_are_facechains(name: str, value: object, where: str) -> None:
    assert getattr(recipe, name) == value, where


def test_facechains_labels_and_base_models() -> None:
    # data_process/preprocessing.py:67-81: the phrase after "<fcsks>, " in every caption.
    assert {k: v for k, v in recipe.TRIGGER_PHRASES.items() if k != "person"} == {
        "man": "a handsome man",
        "woman": "a beautiful woman",
        "boy": "a boy, children",
        "girl": "a girl, children",
    }
    # constants.py:8-16.
    assert recipe.BASE_MODELS["leosamsMoonfilm_filmGrain20"] == recipe.BaseModelSource(
        "ly261666/cv_portrait_model", "v2.0", "film/film"
    )
    assert recipe.BASE_MODELS["MajicmixRealistic_v6"] == recipe.BaseModelSource(
        "YorickHe/majicmixRealistic_v6", "v1.0.0", "realistic"
    )


def test_the_default_is_the_measured_winner_and_every_recipe_can_be_named() -> None:
    # docs/benchmarks.md: fast reached the lower eval loss, in under a third of the time.
    assert recipe.DEFAULT_RECIPE == "fast"
    assert WorkerSettings(_env_file=None).recipe == "fast"  # type: ignore[call-arg]
    assert WorkerSettings(_env_file=None, recipe="facechain").train_batch_size == 1  # type: ignore[call-arg]
    assert set(typing.get_args(recipe.RecipeName)) == set(RECIPES)


def test_fast_changes_exactly_the_fast_knobs() -> None:
    changed = {f.name for f in dataclasses.fields(FACECHAIN) if getattr(FACECHAIN, f.name) != getattr(FAST, f.name)}
    # docs/benchmarks.md's measured settings: batch 8, lr × 8, held after 10 warm-up steps, 800 samples.
    assert set(FAST_KNOBS) == {
        "train_batch_size",
        "lr_batch_scaling",
        "lr_scheduler",
        "lr_warmup_steps",
        "max_train_steps",
    }
    assert changed == {"name", *FAST_KNOBS}
    assert (FAST.train_batch_size, FAST.lr_batch_scaling, FAST.lr_scheduler, FAST.lr_warmup_steps) == (
        8, "linear", "constant_with_warmup", 10
    )  # fmt: skip
    facechain = WorkerSettings(_env_file=None, recipe="facechain")  # type: ignore[call-arg]
    fast = WorkerSettings(_env_file=None, recipe="fast")  # type: ignore[call-arg]
    differ = {name for name in WorkerSettings.model_fields if getattr(facechain, name) != getattr(fast, name)}
    assert differ == {"recipe", *FAST_KNOBS}
    assert TrainArgs.from_settings(fast) == TrainArgs.from_recipe(FAST, cuda_graphs=True)


def test_a_single_setting_overrides_one_knob(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [n for n in __import__("os").environ if n.startswith("FACECHAIN_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FACECHAIN_RECIPE", "fast")
    monkeypatch.setenv("FACECHAIN_LR_WARMUP_STEPS", "3")
    settings = WorkerSettings()
    assert settings.lr_warmup_steps == 3
    assert settings.recipe_overrides() == {"lr_warmup_steps": 3}  # the worker logs this at start
    assert {k: getattr(settings, k) for k in SETTING_KNOBS if k != "lr_warmup_steps"} == {
        k: v for k, v in FAST.as_settings().items() if k != "lr_warmup_steps"
    }
    # On FaceChain's recipe too, and the training arguments take it.
    monkeypatch.setenv("FACECHAIN_RECIPE", "facechain")
    args = TrainArgs.from_settings(WorkerSettings())
    assert args.lr_warmup_steps == 3
    assert (args.train_batch_size, args.lr_scheduler, args.learning_rate) == (1, "cosine", 1.5e-4)


def test_an_unknown_recipe_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FACECHAIN_RECIPE", "quick")
    with pytest.raises(SettingsError) as caught:
        load_settings(WorkerSettings)
    message = str(caught.value)
    assert "FACECHAIN_RECIPE" in message and "'facechain' or 'fast'" in message and "\n" not in message


@pytest.mark.parametrize("name", ["facechain", "fast"])
def test_training_and_worker_defaults_follow_the_recipe(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    changed = dataclasses.replace(
        RECIPES[name], lora_rank=8, steps_per_photo=7, learning_rate=3e-4, inference_steps=25, candidates=6
    )
    monkeypatch.setitem(RECIPES, name, changed)
    settings = WorkerSettings(_env_file=None, recipe=name)  # type: ignore[call-arg]
    assert (settings.lora_rank, settings.steps_per_photo, settings.learning_rate) == (8, 7, 3e-4)
    assert (settings.inference_steps, settings.candidates) == (25, 6)
    from_settings = TrainArgs.from_settings(settings)
    assert (from_settings.rank, from_settings.steps_per_photo, from_settings.learning_rate) == (8, 7, 3e-4)
    if name == recipe.DEFAULT_RECIPE:  # a bare TrainArgs takes the default recipe's knobs
        assert (TrainArgs().rank, TrainArgs().steps_per_photo, TrainArgs().learning_rate) == (8, 7, 3e-4)


def test_the_sample_budget_follows_the_recipe() -> None:
    # FaceChain: 200 a photo, no cap; fast: the same, capped at 800 samples, in steps of 8.
    facechain, fast = TrainArgs.from_recipe(FACECHAIN), TrainArgs.from_recipe(FAST)
    assert (facechain.total_samples(5), facechain.total_steps(5)) == (1000, 1000)
    assert (facechain.total_samples(20), facechain.scaled_learning_rate()) == (4000, 1.5e-4)
    assert (fast.total_samples(5), fast.total_steps(5), fast.scaled_learning_rate()) == (800, 100, 1.2e-3)
    assert (fast.total_samples(3), fast.total_steps(3)) == (600, 75)


@pytest.mark.parametrize(
    ("scheduler", "kind"),
    [(None, "DPMSolverSinglestepScheduler"), ("dpm_solver_multistep", "DPMSolverMultistepScheduler")],
)
def test_the_loaded_pipeline_denoises_with_the_recipes_scheduler(
    tiny_model_dir: Path, tmp_path: Path, scheduler: str | None, kind: str
) -> None:
    from pipeline.models import clone_pipeline, load_base_pipeline
    from tests.pipeline.tiny import tiny_settings

    overrides = (
        {"scheduler": scheduler, "prepared_model_cache": False} if scheduler else {"prepared_model_cache": False}
    )
    pipe = load_base_pipeline(tiny_settings(tiny_model_dir, tmp_path, **overrides), "cpu", __import__("torch").float32)
    assert type(pipe.scheduler).__name__ == kind
    assert type(clone_pipeline(pipe, pipe.unet.dtype).scheduler).__name__ == kind
