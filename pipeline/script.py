"""Script mode: the worker's stages without Redis or a chat, like FaceChain's train_lora.sh and
run_inference.py. A trained person is kept under a NAME in the blob store (``local/NAME/``)."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pipeline import jobs
from pipeline.config import WorkerSettings
from pipeline.control import StageControl
from storage.blobs import BlobStore

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")

Reporter = Callable[[jobs.Stage, float, str], None]


class ScriptError(Exception):
    """A problem the user of the command line can fix; its text says how."""


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ScriptError(f"name {name!r}: use letters, digits, '_' or '-' (at most 64)")
    return name


def _model_key(name: str) -> str:
    return f"local/{name}/model.json"


def _control(report: Reporter) -> StageControl:
    return StageControl(report=report, stop_event=threading.Event())


def train_from_folder(
    settings: WorkerSettings,
    photo_dir: Path,
    name: str,
    *,
    subject: jobs.Subject | None = None,
    steps: int | None = None,
    report: Reporter = lambda stage, fraction, message: None,
) -> jobs.TrainOutcome:
    """Train a face LoRA from the photos in ``photo_dir`` and keep it as ``name``."""
    from pipeline.runner import PipelineRunner

    _check_name(name)
    files = sorted(p for p in photo_dir.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES) if photo_dir.is_dir() else []
    if not files:
        raise ScriptError(f"no photos (.jpg, .png, .webp) in {photo_dir}")
    blobs = BlobStore(settings.blob_dir)
    stamp = time.strftime("%Y%m%d%H%M%S")
    keys = []
    for index, path in enumerate(files):
        key = f"local/{name}/photos/{stamp}/{index:03d}{path.suffix.lower()}"
        blobs.put_file(key, path)
        keys.append(key)
    # One job: the training step's compile (minutes the first time) would cost more than it saves.
    runner = PipelineRunner(settings.model_copy(update={"queues": ["train"], "train_compile": "off"}), blobs)
    request = jobs.TrainRequest(
        run_id=f"cli-{name}-{stamp}"[:64], user_id=0, model_id=0, photo_keys=keys, subject=subject,
        min_photos=1, max_train_steps=steps,
    )  # fmt: skip
    outcome = runner.train(request, _control(report))
    if outcome.ok:
        blobs.put_bytes(_model_key(name), outcome.model_dump_json(indent=2).encode())
    return outcome


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
    from pipeline.runner import PipelineRunner

    _check_name(name)
    blobs = BlobStore(settings.blob_dir)
    if not blobs.exists(_model_key(name)):
        raise ScriptError(f"no trained model named {name!r}: run `facechain-bot train PHOTO_DIR --name {name}` first")
    model = jobs.parse_outcome_json(blobs.get_bytes(_model_key(name)))
    if not isinstance(model, jobs.TrainOutcome) or model.lora_key is None:
        raise ScriptError(f"the model record of {name!r} is damaged; train it again")
    # One job: a compile (tens of seconds, even from the cache) would cost more than it saves.
    runner = PipelineRunner(settings.model_copy(update={"queues": ["generate"], "torch_compile": "off"}), blobs)
    request = jobs.GenerateRequest(
        run_id=f"cli-{name}-{time.strftime('%Y%m%d%H%M%S')}"[:64], user_id=0, model_id=0,
        lora_key=model.lora_key, template_key=model.template_key, trigger=model.trigger or "",
        style=style, count=count, candidates=max(candidates or settings.candidates, count), seed=seed,
    )  # fmt: skip
    outcome = runner.generate(request, _control(report))
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for index, portrait in enumerate(outcome.portraits):
        target = out_dir / f"{name}-{style.name}-{index}-seed{portrait.seed}.jpg"
        shutil.copyfile(blobs.path(portrait.key), target)
        written.append(target)
    (out_dir / f"{name}-{style.name}.json").write_text(
        json.dumps(
            {"style": style.name, "portraits": [p.model_dump() for p in outcome.portraits], "error": outcome.error},
            indent=2,
        )
    )
    return outcome, written
