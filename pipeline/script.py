"""Script mode: the worker's stages without Redis or a chat, like FaceChain's train_lora.sh and
run_inference.py. A trained person is kept under a NAME in the blob store (``local/NAME/``)."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline import jobs
from pipeline.background import STOP_WAIT_S
from pipeline.config import WorkerSettings
from pipeline.control import StageControl
from pipeline.errors import WorkerSetupError
from pipeline.models import resolve_base_model
from storage.blob_config import open_blob_store
from storage.blobs import BlobStore

if TYPE_CHECKING:
    from pipeline.runner import PipelineRunner

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")

Reporter = Callable[[jobs.Stage, float, str], None]


NEEDS_SUBJECT = (
    "who is in the photos is not known (no face attribute model ran, or it was unsure): "
    "pass --subject man, woman, boy, girl or person"
)


class ScriptError(WorkerSetupError):
    """A problem the user of the command line can fix; its text says how."""


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ScriptError(f"name {name!r}: use letters, digits, '_' or '-' (at most 64)")
    return name


def _model_key(name: str) -> str:
    return f"local/{name}/model.json"


def _control(report: Reporter) -> StageControl:
    return StageControl(report=report, stop_event=threading.Event())


def _runner(settings: WorkerSettings, blobs: BlobStore) -> PipelineRunner:
    """The worker's stages; a FaceChain stage that must run and cannot is a :class:`ScriptError`."""
    from pipeline.runner import PipelineRunner
    from pipeline.stages import StagesUnavailable

    try:
        return PipelineRunner(settings, blobs)
    except StagesUnavailable as exc:
        raise ScriptError(str(exc)) from None


@dataclass(frozen=True)
class FolderTraining:
    """What :func:`train_from_folder` did."""

    outcome: jobs.TrainOutcome
    #: Photo key → the file it was copied from (the outcome's rejections name keys).
    sources: dict[str, Path]
    #: Photos of the folder past ``max_photos``, not used.
    left_out: tuple[Path, ...] = ()


def train_from_folder(
    settings: WorkerSettings,
    photo_dir: Path,
    name: str,
    *,
    subject: jobs.Subject | None = None,
    steps: int | None = None,
    min_photos: int = 3,
    max_photos: int = 10,
    report: Reporter = lambda stage, fraction, message: None,
) -> FolderTraining:
    """Train a face LoRA from the photos in ``photo_dir`` and keep it as ``name``.

    ``steps`` counts optimizer steps (of ``train_batch_size`` samples each); None: the recipe's budget
    of samples (``steps_per_photo`` a photo, at most ``max_train_steps``). As in the chat, at least
    ``min_photos`` must be usable and at most ``max_photos`` are used (the first, by file name). Who is
    in the photos must be known: given as ``subject``, or told by the face attributes; otherwise
    :class:`ScriptError` asks for it. When training fails (an outcome with an error, too few usable
    photos, is returned) nothing is kept: no model under ``name``, no copy of the photos.
    """
    _check_name(name)
    resolve_base_model(settings)  # a missing model is reported before anything is copied or loaded
    if not photo_dir.is_dir():
        raise ScriptError(f"{photo_dir} is not a folder of photos")
    files = sorted(p for p in photo_dir.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    if not files:
        raise ScriptError(f"no photos (.jpg, .png, .webp) in {photo_dir}")
    if len(files) < min_photos:
        raise ScriptError(
            f"{len(files)} photo(s) in {photo_dir}; at least {min_photos} are needed (FACECHAIN_MIN_PHOTOS)"
        )
    files, left_out = files[:max_photos], tuple(files[max_photos:])
    update: dict[str, object] = {"queues": ["train"], "train_compile": "off"}
    if steps is not None:
        # ``steps`` optimizer steps: a sample budget of exactly steps × batch, whatever the photo count.
        samples = steps * settings.train_batch_size
        update |= {"max_train_steps": samples, "steps_per_photo": samples}
    blobs = open_blob_store(settings, settings.data_dir)
    stamp = time.strftime("%Y%m%d%H%M%S")
    photos_prefix = f"local/{name}/photos/{stamp}/"
    sources = {f"{photos_prefix}{index:03d}{path.suffix.lower()}": path for index, path in enumerate(files)}
    kept = False
    try:
        for key, path in sources.items():
            blobs.put_file(key, path)
        # One job: the training step's compile (minutes the first time) would cost more than it saves.
        runner = _runner(settings.model_copy(update=update), blobs)
        request = jobs.TrainRequest(
            run_id=f"cli-{name}-{stamp}"[:64], user_id=0, model_id=0, photo_keys=list(sources), subject=subject,
            min_photos=min_photos,
        )  # fmt: skip
        try:
            outcome = runner.train(request, _control(report))
        finally:
            runner.close(STOP_WAIT_S)  # the warm-up, where one ran
        if outcome.needs_subject:
            raise ScriptError(NEEDS_SUBJECT)
        if outcome.ok and (outcome.lora_key is None or outcome.steps < 1):
            raise RuntimeError(f"training of {name!r} reported success without a trained model")  # a bug
        if outcome.ok:
            blobs.put_bytes(_model_key(name), outcome.model_dump_json(indent=2).encode())
            kept = True
    finally:
        if not kept:
            blobs.delete_prefix(photos_prefix)
    return FolderTraining(outcome, sources, left_out)


def generate_for(
    settings: WorkerSettings,
    name: str,
    style: jobs.StyleSpec,
    out_dir: Path,
    *,
    count: int = 4,
    candidates: int | None = None,
    seed: int | None = None,
    report: Reporter = lambda stage, fraction, message: None,
) -> tuple[jobs.GenerateOutcome, list[Path]]:
    """Generate portraits of the person trained as ``name``; copy them into ``out_dir``."""
    _check_name(name)
    blobs = open_blob_store(settings, settings.data_dir)
    if not blobs.exists(_model_key(name)):
        raise ScriptError(f"no trained model named {name!r}: run `facechain-bot train PHOTO_DIR --name {name}` first")
    model = jobs.parse_outcome_json(blobs.get_bytes(_model_key(name)))
    if not isinstance(model, jobs.TrainOutcome) or model.lora_key is None:
        raise ScriptError(f"the model record of {name!r} is damaged; train it again")
    if style.lora is not None:
        from pipeline.models import ModelsMissingError, StyleLoraRefused, resolve_style_lora

        try:  # before the models load: the message names the style and `models fetch`
            resolve_style_lora(settings, style.name, style.lora)
        except (ModelsMissingError, StyleLoraRefused) as exc:
            raise ScriptError(str(exc)) from None
    resolve_base_model(settings)
    # One job: a compile (tens of seconds, even from the cache) would cost more than it saves.
    runner = _runner(settings.model_copy(update={"queues": ["generate"], "torch_compile": "off"}), blobs)
    request = jobs.GenerateRequest(
        run_id=f"cli-{name}-{time.strftime('%Y%m%d%H%M%S')}"[:64], user_id=0, model_id=0,
        lora_key=model.lora_key, template_key=model.template_key, trigger=model.trigger or "",
        style=style, count=count, candidates=max(candidates or settings.candidates, count), seed=seed,
    )  # fmt: skip
    try:
        outcome = runner.generate(request, _control(report))
    finally:
        runner.close(STOP_WAIT_S)  # the warm-up, where one ran
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for index, portrait in enumerate(outcome.portraits):
        target = out_dir / f"{name}-{style.name}-{index}-seed{portrait.seed}.jpg"
        try:
            shutil.copyfile(blobs.path(portrait.key), target)
        except OSError:
            target.unlink(missing_ok=True)  # a full disk leaves no half-written portrait
            raise
        written.append(target)
    (out_dir / f"{name}-{style.name}.json").write_text(
        json.dumps(
            {
                "style": style.name,
                "portraits": [p.model_dump() for p in outcome.portraits],
                "error": outcome.error,
                "stages_run": outcome.stages_run,
            },
            indent=2,
        )
    )
    # The portraits are in OUT now: the run's own copies would only fill the blob store.
    blobs.delete_prefix(jobs.run_prefix(request.run_id))
    return outcome, written
