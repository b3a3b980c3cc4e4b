"""The runner's choices after generation: face filter, ranking by similarity, NSFW gate, delivery.

Tiny random models draw noise, never faces, so here the candidates are real photos handed over by a
stand-in for the diffusion step; everything after it (YuNet/SFace, open_nsfw, blob writes) is real.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pipeline import jobs
from pipeline.control import StageCancelled, StageControl
from pipeline.faces import cosine
from pipeline.generate import Candidate
from pipeline.models import model_file_path
from pipeline.runner import PipelineRunner
from pipeline.styles import load_styles, style_to_spec
from storage.blobs import LocalBlobStore
from tests.pipeline import photos
from tests.pipeline.tiny import tiny_settings


@dataclass
class PhotoCandidates:
    """Stands in for PortraitGenerator.generate: returns these photos as candidates, in order."""

    images: list[np.ndarray]
    calls: list[dict[str, Any]] = field(default_factory=list)
    #: The style LoRA file each call was given (None: no style LoRA).
    style_loras: list[Path | None] = field(default_factory=list)

    def generate(self, *args: Any, **kwargs: Any) -> list[Candidate]:
        self.calls.append(kwargs)
        self.style_loras.append(args[2])  # (face_lora, style, style_lora, ...), as the runner calls it
        return [Candidate(Image.fromarray(img), seed=100 + i) for i, img in enumerate(self.images)]


def _control(stages: list[jobs.Stage] | None = None) -> StageControl:
    """A stage control; the stages reported are appended to ``stages``."""
    seen = stages if stages is not None else []
    return StageControl(report=lambda stage, fraction, message: seen.append(stage), stop_event=threading.Event())


@pytest.fixture
def runner(tiny_model_dir: Path, tmp_path: Path) -> PipelineRunner:
    settings = tiny_settings(tiny_model_dir, tmp_path, queues=["generate"], rank_faces=True, nsfw_check=True)
    return PipelineRunner(settings, LocalBlobStore(settings.blob_dir))


def _request(runner: PipelineRunner, count: int = 2, style: jobs.StyleSpec | None = None) -> jobs.GenerateRequest:
    template = photos.encode(photos.astronaut())
    runner.blobs.put_bytes("runs/t-runner-01/template.png", template)
    runner.blobs.put_bytes("runs/t-runner-01/face_lora.safetensors", b"unused by the stand-in")
    return jobs.GenerateRequest(
        run_id="g-runner-0001", user_id=1, model_id=1, lora_key="runs/t-runner-01/face_lora.safetensors",
        template_key="runs/t-runner-01/template.png", trigger="<fcsks>, a handsome man",
        style=style or jobs.StyleSpec(name="suit", prompt="a suit"), count=count, candidates=4,
    )  # fmt: skip


def test_candidates_without_one_face_are_dropped_and_the_rest_ranked_by_likeness(runner: PipelineRunner) -> None:
    astronaut = photos.astronaut()
    runner.generator = PhotoCandidates(  # type: ignore[assignment]
        [
            photos.coffee(),  # no face: dropped
            photos.grace_hopper(),  # a face, another person: ranked last
            photos.side_by_side(astronaut, astronaut),  # two faces: dropped
            photos.exposed(photos.flipped(astronaut), 1.1),  # the same person: ranked first
        ]
    )
    outcome = runner.generate(_request(runner, count=2), _control())
    assert outcome.ok
    assert outcome.dropped == 2
    assert [p.seed for p in outcome.portraits] == [103, 101]
    best, other = (p.score for p in outcome.portraits)
    assert best is not None and other is not None and best > other
    for portrait in outcome.portraits:
        assert Image.open(runner.blobs.path(portrait.key)).format == "JPEG"


def test_a_style_files_lora_resolves_in_the_models_dir_and_an_upload_in_the_blob_store(
    runner: PipelineRunner,
) -> None:
    # The bug users hit: a built-in style's model reference was looked up as a blob key (InvalidBlobKey).
    hanfu = style_to_spec(load_styles(runner.settings)["hanfu"])
    assert hanfu.lora is not None and hanfu.lora.startswith("modelscope:")
    fetched = model_file_path(runner.settings.models_dir, hanfu.lora)
    fetched.parent.mkdir(parents=True)
    fetched.write_bytes(b"a style LoRA")
    upload = "communities/3/styles/noir-0123456789abcdef.safetensors"
    runner.blobs.put_bytes(upload, b"an admin's LoRA")
    custom = jobs.StyleSpec(name="noir", prompt="film noir", lora_key=upload)
    plain = jobs.StyleSpec(name="suit", prompt="a suit")
    stand_in = PhotoCandidates([photos.astronaut()])
    runner.generator = stand_in  # type: ignore[assignment]

    for style in (hanfu, custom, plain):
        outcome = runner.generate(_request(runner, style=style), _control())
        assert outcome.ok, outcome
    assert stand_in.style_loras == [fetched, runner.blobs.path(upload), None]


def test_a_missing_style_lora_names_the_style_and_models_fetch_before_any_gpu_work(runner: PipelineRunner) -> None:
    stand_in = PhotoCandidates([photos.astronaut()])
    runner.generator = stand_in  # type: ignore[assignment]
    wedding = style_to_spec(load_styles(runner.settings)["wedding"])

    outcome = runner.generate(_request(runner, style=wedding), _control())

    assert outcome.error is jobs.ErrorCode.MODEL_MISSING and outcome.style == "wedding"
    assert "style 'wedding'" in outcome.message and "facechain-bot models fetch" in outcome.message
    assert str(model_file_path(runner.settings.models_dir, wedding.lora or "")) in outcome.message
    removed = jobs.StyleSpec(name="noir", prompt="film noir", lora_key="communities/3/styles/gone.safetensors")
    outcome = runner.generate(_request(runner, style=removed), _control())
    assert outcome.error is jobs.ErrorCode.MODEL_MISSING and "style 'noir'" in outcome.message
    assert stand_in.calls == [], "nothing was generated"


def test_a_job_whose_style_lora_is_a_file_outside_the_models_and_styles_dirs_is_refused(
    runner: PipelineRunner, tmp_path: Path
) -> None:
    # A job from Redis is not a style file: the worker bounds `file:` paths itself (symlinks followed).
    outside = tmp_path / "elsewhere" / "x.safetensors"
    outside.parent.mkdir()
    outside.write_bytes(b"not for the worker to open")
    link = runner.settings.models_dir / "link.safetensors"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside)
    stand_in = PhotoCandidates([photos.astronaut()])
    runner.generator = stand_in  # type: ignore[assignment]

    for reference in (f"file:{outside}", f"file:{link}", "file:/etc/passwd"):
        style = jobs.StyleSpec(name="sneaky", prompt="p", lora=reference)
        outcome = runner.generate(_request(runner, style=style), _control())
        assert outcome.error is jobs.ErrorCode.BAD_PAYLOAD, reference
        assert "style 'sneaky'" in outcome.message and "outside FACECHAIN_MODELS_DIR" in outcome.message
    assert stand_in.calls == []


def test_scores_are_recognition_similarity_and_ranking_is_reported_only_when_it_ran(runner: PipelineRunner) -> None:
    astronaut = photos.astronaut()
    candidates = [photos.grace_hopper(), photos.coffee(), photos.exposed(photos.flipped(astronaut), 1.1)]
    runner.generator = PhotoCandidates(candidates)  # type: ignore[assignment]
    template = runner.picker.embed_template(astronaut)
    assert template is not None

    stages: list[jobs.Stage] = []
    ranked = runner.generate(_request(runner, count=2), _control(stages))
    assert jobs.Stage.RANKING in stages
    [hopper_face] = runner.analyzer.detect(photos.grace_hopper())
    similarity = cosine(runner.analyzer.embed(photos.grace_hopper(), hopper_face), template)
    assert [p.seed for p in ranked.portraits] == [102, 100]
    assert ranked.portraits[1].score == pytest.approx(similarity, abs=1e-4), "the score is the likeness"

    # No template face to compare with (a model trained before templates, or a faceless one): the
    # face filter still runs, but nothing is ranked, no score is shown and no ranking is reported.
    stages.clear()
    request = _request(runner, count=2).model_copy(update={"template_key": None})
    unranked = runner.generate(request, _control(stages))
    assert unranked.ok and unranked.dropped == 1
    assert [p.seed for p in unranked.portraits] == [100, 102] and all(p.score is None for p in unranked.portraits)
    assert jobs.Stage.RANKING not in stages

    stages.clear()
    runner.settings = runner.settings.model_copy(update={"rank_faces": False})
    off = runner.generate(_request(runner, count=3), _control(stages))
    assert [p.seed for p in off.portraits] == [100, 101, 102] and all(p.score is None for p in off.portraits)
    assert jobs.Stage.RANKING not in stages


def test_no_usable_candidate_is_a_typed_outcome_not_an_empty_success(runner: PipelineRunner) -> None:
    runner.generator = PhotoCandidates([photos.coffee(), photos.chelsea()])  # type: ignore[assignment]
    outcome = runner.generate(_request(runner), _control())
    assert outcome.error is jobs.ErrorCode.NO_USABLE_PORTRAIT
    assert outcome.dropped == 2 and outcome.portraits == []


def test_the_nsfw_gate_withholds_what_it_flags(runner: PipelineRunner) -> None:
    runner.generator = PhotoCandidates([photos.astronaut(), photos.flipped(photos.astronaut())])  # type: ignore[assignment]
    runner.settings = runner.settings.model_copy(update={"nsfw_threshold": 0.0})  # flags everything
    outcome = runner.generate(_request(runner), _control())
    assert outcome.error is jobs.ErrorCode.NO_USABLE_PORTRAIT
    assert outcome.blocked == 2
    assert not runner.blobs.list("runs/g-runner-0001"), "a blocked image is never written for delivery"


def test_a_cancelled_generation_stops_as_cancelled(runner: PipelineRunner) -> None:
    from pipeline.generate import GenerationCancelled

    class Stops:
        def generate(self, *args: Any, **kwargs: Any) -> list[Candidate]:
            raise GenerationCancelled()

    runner.generator = Stops()  # type: ignore[assignment]
    with pytest.raises(StageCancelled):
        runner.generate(_request(runner), _control())


def test_face_fusion_blends_the_template_face_into_each_candidate_before_ranking(runner: PipelineRunner) -> None:
    import cv2

    seen: list[dict[str, Image.Image]] = []

    def fusion(inputs: dict[str, Image.Image]) -> dict[str, np.ndarray]:
        # A stand-in for ModelScope's face fusion model: it returns the user's face (BGR, as ModelScope does).
        seen.append(inputs)
        return {"output_img": cv2.cvtColor(np.asarray(inputs["user"]), cv2.COLOR_RGB2BGR)}

    from pipeline.stages.modelscope_pipelines import FaceFuser

    fuser = FaceFuser.__new__(FaceFuser)  # the glue around ModelScope's pipeline, with the stand-in inside
    fuser._pipe = fusion
    runner.stages.face_fusion = fuser
    runner.generator = PhotoCandidates([photos.coffee(), photos.chelsea()])  # type: ignore[assignment]
    outcome = runner.generate(_request(runner), _control())
    assert len(seen) == 2 and set(seen[0]) == {"template", "user"}
    assert outcome.ok, "without fusion these candidates have no face; fused, they show the user"
    assert all(p.score is not None and p.score > 0.9 for p in outcome.portraits)
    assert outcome.stages_run == ["generation", "face_fusion", "ranking", "nsfw_check"]


def test_the_warm_up_builds_the_training_step_that_jobs_then_reuse(tiny_model_dir: Path, tmp_path: Path) -> None:
    # On a GPU the worker runs this on a background thread at start; here it is called directly.
    settings = tiny_settings(tiny_model_dir, tmp_path, rank_faces=False, nsfw_check=False)
    runner = PipelineRunner(settings, LocalBlobStore(settings.blob_dir))
    assert runner.trainer is not None and runner.trainer.step is None

    runner._warm_up()

    assert runner.warmed_up.is_set() and runner.trainer.compiled_ready.is_set()
    assert {"generation_warm_up", "training_warm_up"} <= runner.startup_seconds.keys()
    step = runner.trainer.step
    assert step is not None
    keys = []
    for i, image in enumerate(photos.same_person_set(photos.astronaut())[:3]):
        keys.append(f"users/1/photos/1/{i}.png")
        runner.blobs.put_bytes(keys[-1], photos.encode(image))
    outcome = runner.train(
        jobs.TrainRequest(run_id="t-warm-0001", user_id=1, model_id=1, photo_keys=keys, subject=jobs.Subject.MAN),
        _control(),
    )
    assert outcome.ok, outcome
    assert runner.trainer.step is step, "the job trained on the step built at start"
    runner.trainer.close()
