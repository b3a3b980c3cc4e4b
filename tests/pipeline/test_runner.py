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
from pipeline.generate import Candidate
from pipeline.runner import PipelineRunner
from storage.blobs import BlobStore
from tests.pipeline import photos
from tests.pipeline.tiny import tiny_settings


@dataclass
class PhotoCandidates:
    """Stands in for PortraitGenerator.generate: returns these photos as candidates, in order."""

    images: list[np.ndarray]
    calls: list[dict[str, Any]] = field(default_factory=list)

    def generate(self, *args: Any, **kwargs: Any) -> list[Candidate]:
        self.calls.append(kwargs)
        return [Candidate(Image.fromarray(img), seed=100 + i) for i, img in enumerate(self.images)]


def _control() -> StageControl:
    return StageControl(report=lambda stage, fraction, message: None, stop_event=threading.Event())


@pytest.fixture
def runner(tiny_model_dir: Path, tmp_path: Path) -> PipelineRunner:
    settings = tiny_settings(tiny_model_dir, tmp_path, queues=["generate"], rank_faces=True, nsfw_check=True)
    return PipelineRunner(settings, BlobStore(settings.blob_dir))


def _request(runner: PipelineRunner, count: int = 2) -> jobs.GenerateRequest:
    template = photos.encode(photos.astronaut())
    runner.blobs.put_bytes("runs/t-runner-01/template.png", template)
    runner.blobs.put_bytes("runs/t-runner-01/face_lora.safetensors", b"unused by the stand-in")
    return jobs.GenerateRequest(
        run_id="g-runner-0001", user_id=1, model_id=1, lora_key="runs/t-runner-01/face_lora.safetensors",
        template_key="runs/t-runner-01/template.png", trigger="<fcsks>, a handsome man",
        style=jobs.StyleSpec(name="suit", prompt="a suit"), count=count, candidates=4,
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

    runner.stages.face_fusion = fusion
    runner.generator = PhotoCandidates([photos.coffee(), photos.chelsea()])  # type: ignore[assignment]
    outcome = runner.generate(_request(runner), _control())
    assert len(seen) == 2 and set(seen[0]) == {"template", "user"}
    assert outcome.ok, "without fusion these candidates have no face; fused, they show the user"
    assert all(p.score is not None and p.score > 0.9 for p in outcome.portraits)


def test_the_warm_up_builds_the_training_step_that_jobs_then_reuse(tiny_model_dir: Path, tmp_path: Path) -> None:
    # On a GPU the worker runs this on a background thread at start; here it is called directly.
    settings = tiny_settings(tiny_model_dir, tmp_path, rank_faces=False, nsfw_check=False)
    runner = PipelineRunner(settings, BlobStore(settings.blob_dir))
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
