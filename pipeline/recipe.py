"""The training and generation recipe: what FaceChain does, every knob in one place.

Read top to bottom, this is FaceChain v3.0.0's ``train_lora.sh`` and ``facechain/inference.py`` as
data (references are to files of that tag, github.com/modelscope/facechain). The machinery that
runs the recipe fast (CUDA graphs, compilation, cached views, locks, memory handling) lives in
train.py, train_step.py, generate.py and friends, and takes its numbers from here.

Two named recipes:

``facechain`` (the default)
    FaceChain's own numbers: batch 1, 200 steps a photo, lr 1.5e-4 on a cosine schedule.
``fast``
    The same samples in batches of 8, the learning rate × 8 and held after 10 warm-up steps (the
    settings docs/benchmarks.md measured, 118-120 samples/s on an H200), capped at 800 samples.

``FACECHAIN_RECIPE`` picks one; any single knob that is also a setting (``FACECHAIN_LORA_RANK``,
``FACECHAIN_LR_SCHEDULER``...) overrides that knob alone. Which recipe is the default is to be
decided by measurement (``bench/gpu_bench.py --sections recipes``, docs/benchmarks.md).

This module imports nothing outside the standard library: the bot, the job contract and the
style catalogue read it too.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

RecipeName = Literal["facechain", "fast"]
LrBatchScaling = Literal["none", "sqrt", "linear"]
SchedulerName = Literal["dpm_solver_singlestep", "dpm_solver_multistep"]
PromptEncoding = Literal["diffusers", "weighted"]
Medium = Literal["photo", "painting"]

#: Chosen by measurement (docs/benchmarks.md, "Which recipe is the default"; H200, both recipes on the
#: same photos and seed in one call): ``fast`` trains to a lower eval loss on the training and on
#: held-out views (0.138 against 0.148) in 10.7 s against 36.2 s. Its generation is FaceChain's.
DEFAULT_RECIPE: RecipeName = "fast"


@dataclass(frozen=True)
class BaseModelSource:
    """Where a base model lives on ModelScope: repository, pinned revision, diffusers sub-folder."""

    repo: str
    revision: str
    subfolder: str


# ----------------------------------------------------------------------------------- base models
#: FaceChain's SD 1.5 base models (facechain/constants.py:8-16). Training always uses the first one
#: (app.py:775-779); FaceChain generates each style on the base model its style file sits under
#: (styles/<base model>/*.json). Here: fairy_tale, film_retro, school_uniform, wedding and
#: winter_snow come from FaceChain's MajicmixRealistic_v6 styles, hanfu from a leosamsMoonfilm one.
#: This project keeps ONE resident base model (FACECHAIN_BASE_MODEL) for every style.
BASE_MODELS: dict[str, BaseModelSource] = {
    "leosamsMoonfilm_filmGrain20": BaseModelSource("ly261666/cv_portrait_model", "v2.0", "film/film"),
    "MajicmixRealistic_v6": BaseModelSource("YorickHe/majicmixRealistic_v6", "v1.0.0", "realistic"),
}
TRAINING_BASE_MODEL = BASE_MODELS["leosamsMoonfilm_filmGrain20"]

#: Two models FaceChain uses that this project does not (yet), for the record:
#: - every face LoRA starts from this one (train_lora.sh:22 --resume_from_checkpoint='fromfacecommon',
#:   train_text_to_image_lora.py:950-954), a pickled attention-processor state dict; here training
#:   starts from zeros unless FACECHAIN_INIT_FACE_LORA names a safetensors LoRA;
#: - a style without a LoRA of its own gets this one at the style multiplier (inference.py:130-132);
#:   here such a style runs on the face LoRA alone.
FACECHAIN_START_FACE_LORA = "modelscope:damo/face_frombase_c4@v1.0.0/face_frombase_c4.bin"
FACECHAIN_DEFAULT_STYLE_LORA = (
    "modelscope:Cherrytest/zjz_mj_jiyi_small_addtxt_fromleo@v1.0.0/zjz_mj_jiyi_small_addtxt_fromleo.safetensors"
)

# ---------------------------------------------------------------------------------------- labels
#: The token every caption starts with (preprocessing.py:353, inference.py:229).
TRIGGER_TOKEN = "<fcsks>"
#: Label post-processing (preprocessing.py:63-112): FaceChain's face attribute model votes a gender
#: and a FairFace age bucket over the photos, and every caption becomes ``<fcsks>, <phrase>``. The
#: tagger's tags are dropped from the captions (the lines that kept them are commented out there),
#: so inference.py:233-237 (hair/face/mouth/skin/smile tags of most captions) adds nothing either.
#: Keys are :class:`pipeline.jobs.Subject` values; "person" is this project's, for no attributes.
TRIGGER_PHRASES: dict[str, str] = {
    "man": "a handsome man",
    "woman": "a beautiful woman",
    "boy": "a boy, children",
    "girl": "a girl, children",
    "person": "a person",
}
#: Under this age a face is a child's: FairFace buckets 0-2 and 3-9 (preprocessing.py:67).
CHILD_AGE = 10
#: FaceChain's "a mature man/woman" from FairFace bucket 40-49 on (preprocessing.py:72-76); this
#: project has no such subject yet (pipeline.jobs.Subject), so adults are "handsome"/"beautiful".
MATURE_AGE = 40

# --------------------------------------------------------------------------------------- prompts
#: The trigger as FaceChain writes it into every portrait prompt (inference.py:229).
TRIGGER_PROMPT = f"({TRIGGER_TOKEN}:10)"
#: For a style without a LoRA, its text goes into this template (constants.py:5, app.py:216-217), less
#: FaceChain's word "chinese" after "masterpiece": it would pull every user's portrait towards one
#: ethnicity, while the face LoRA already carries who the person is (docs/pipeline.md).
PROMPT_WITH_CLOTH = (
    "raw photo, masterpiece, {}, solo, medium shot, high detail face, looking straight into the "
    "camera with shoulders parallel to the frame, photorealistic, best quality"
)
#: For a style with a LoRA, its text goes into this one (constants.py:6, app.py:218-219).
PROMPT_WITH_STYLE = (
    "{}, upper_body, raw photo, masterpiece, solo, medium shot, high detail face, photorealistic, best quality"
)
#: FaceChain's negative prompt (constants.py:2-4).
NEGATIVE_PROMPT = (
    "(nsfw:2), paintings, sketches, (worst quality:2), (low quality:2), lowers, normal quality, "
    "((monochrome)), ((grayscale)), logo, word, character, bad hand, tattoo, (username, watermark, signature, "
    "time signature, timestamp, artist name, copyright name, copyright),low res, ((monochrome)), ((grayscale)), "
    "skin spots, acnes, skin blemishes, age spot, glans, extra fingers, fewer fingers, strange fingers, bad hand, "
    "mole, ((extra legs)), ((extra hands))"
)
#: Added to the negative prompt for these trigger phrases (inference.py:230-231: adult men only).
NEGATIVE_FOR_PHRASE: dict[str, str] = {"a handsome man": "children", "a mature man": "children"}
#: A painting style (``medium = "painting"`` in its style file) drops these items from the negative
#: prompt and the template: FaceChain has no painting style on SD 1.5 and would fight it.
PAINTING_DROPS_FROM_NEGATIVE: tuple[str, ...] = ("paintings", "sketches")
PAINTING_DROPS_FROM_PROMPT: tuple[str, ...] = ("raw photo", "photorealistic")


# ---------------------------------------------------------------------------------------- recipe
@dataclass(frozen=True)
class Recipe:
    """One training + generation recipe. Fields named like a WorkerSettings field are settings."""

    name: RecipeName
    base_model: str = TRAINING_BASE_MODEL.repo

    # ---- training: train_lora.sh:15-22 (the same flags app.py:183-204 passes)
    #: Training side in pixels (--resolution=512).
    resolution: int = 512
    #: Random horizontal flip (--random_flip).
    random_flip: bool = True
    #: Samples per optimizer step (--train_batch_size=1).
    train_batch_size: int = 1
    #: --num_train_epochs=200 at batch 1 over the labelled photos: 200 steps (samples) a photo.
    steps_per_photo: int = 200
    #: Cap on the samples; None = none. app.py:91 computes min(photos × 200, 800) but never passes
    #: it on (no --max_train_steps), so FaceChain trains 200 × photos (at most 20 photos, app.py:761).
    max_train_steps: int | None = None
    #: --learning_rate=1.5e-04 --lr_scheduler="cosine" --lr_warmup_steps=0.
    learning_rate: float = 1.5e-4
    lr_scheduler: str = "cosine"
    lr_warmup_steps: int = 0
    #: Learning rate × 1, √batch or batch for a batch above 1 (FaceChain trains at batch 1).
    lr_batch_scaling: LrBatchScaling = "none"
    #: --seed=42.
    train_seed: int = 42
    #: --lora_r=4. FaceChain's --lora_alpha=32 is unused: without --use_peft/--use_swift
    #: train_text_to_image_lora.py:703-717 builds diffusers' LoRAAttnProcessor(rank=lora_r) with no
    #: network_alpha, whose LoRA output is not scaled: scale 1, which is peft's alpha = rank = 4.
    lora_rank: int = 4
    lora_alpha: float = 4.0
    #: LoRAAttnProcessor's layers: q, k, v and out of every attention block.
    lora_targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")

    # ---- generation: facechain/inference.py
    #: txt2img(num_images=10) (inference.py:251); FaceChain returns the best min(6, asked) of them.
    candidates: int = 10
    #: inference.py:190-192: DPM-Solver single-step, 40 steps, guidance 7, 512² (txt2img's default).
    scheduler: SchedulerName = "dpm_solver_singlestep"
    inference_steps: int = 40
    guidance_scale: float = 7.0
    #: FaceChain's diffusers pipeline reads prompts as plain text: "(<fcsks>:10)" is not a weight,
    #: and CLIP sees the first 77 tokens. ``weighted`` (this project's): (text:1.2) weights and
    #: prompts past 77 tokens in windows.
    prompt_encoding: PromptEncoding = "diffusers"
    #: Multipliers of a style that names none (app.py:233-234; every FaceChain style file names its own).
    style_weight: float = 0.35
    face_weight: float = 0.95

    def as_settings(self) -> dict[str, object]:
        """The knobs that are WorkerSettings fields, by field name."""
        return {name: getattr(self, name) for name in SETTING_KNOBS}


#: Recipe fields that WorkerSettings has a setting for (same name).
SETTING_KNOBS: tuple[str, ...] = (
    "base_model",
    "resolution",
    "train_batch_size",
    "steps_per_photo",
    "max_train_steps",
    "learning_rate",
    "lr_scheduler",
    "lr_warmup_steps",
    "lr_batch_scaling",
    "train_seed",
    "lora_rank",
    "lora_alpha",
    "candidates",
    "scheduler",
    "inference_steps",
    "guidance_scale",
    "prompt_encoding",
)

FACECHAIN = Recipe(name="facechain")

#: The fast recipe: FaceChain's, with these knobs changed (docs/benchmarks.md, "Training: the same
#: 800 samples in 100 steps of 8"). The budget stays in samples; batches of 8 take 8× fewer steps.
FAST_KNOBS: dict[str, object] = {
    "train_batch_size": 8,
    "lr_batch_scaling": "linear",
    "lr_scheduler": "constant_with_warmup",
    "lr_warmup_steps": 10,
    "max_train_steps": 800,
}
FAST = replace(FACECHAIN, name="fast", **FAST_KNOBS)  # type: ignore[arg-type]

#: Every named recipe. Tests may swap an entry to see the defaults follow.
RECIPES: dict[str, Recipe] = {"facechain": FACECHAIN, "fast": FAST}


def get_recipe(name: str = DEFAULT_RECIPE) -> Recipe:
    """The recipe called ``name``; ValueError naming the known ones otherwise."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(sorted(RECIPES))}") from None


def recipe_default(knob: str, recipe: str = DEFAULT_RECIPE) -> object:
    """One knob of a named recipe, read when called (so a default that uses it follows the recipe)."""
    return getattr(get_recipe(recipe), knob)


__all__ = [
    "BASE_MODELS",
    "DEFAULT_RECIPE",
    "FACECHAIN",
    "FAST",
    "FAST_KNOBS",
    "RECIPES",
    "SETTING_KNOBS",
    "BaseModelSource",
    "Recipe",
    "get_recipe",
    "recipe_default",
]
