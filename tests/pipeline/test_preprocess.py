"""Preprocessing on real photos with the real YuNet/SFace models.

YuNet's int8 landmarks wobble by a few degrees from one rendering of a face to the next, so
"eyes level" is checked twice: exactly, on the landmarks the alignment used, and by re-detecting
the face on the aligned crop (within 3° for the photos as they are, a little more for edits).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pipeline.config import WorkerSettings
from pipeline.faces import Face, OpenCVFaceAnalyzer, refine_face
from pipeline.jobs import RejectReason, Subject
from pipeline.preprocess import (
    PreprocessResult,
    alignment_matrix,
    caption,
    decode_photo,
    preprocess_photos,
    subject_from_faces,
)
from pipeline.stages import FaceChainStages
from pipeline.stages.parsing import head_mask
from tests.pipeline import photos


def _run(analyzer: Any, settings: WorkerSettings, items: list[tuple[str, bytes]], **kwargs: Any) -> PreprocessResult:
    return preprocess_photos(items, analyzer, settings, stages=kwargs.pop("stages", FaceChainStages()), **kwargs)


def _redetect(analyzer: OpenCVFaceAnalyzer, image: Image.Image) -> Face:
    faces = analyzer.detect(np.asarray(image))
    assert len(faces) == 1
    return faces[0]


# ------------------------------------------------------------------------------------------- kept
def test_a_same_person_set_is_kept_aligned_and_written_as_a_dataset(
    opencv_face_analyzer: OpenCVFaceAnalyzer, preprocess_settings: WorkerSettings, tmp_path: Path
) -> None:
    originals = {"astronaut": photos.astronaut(), "hopper": photos.grace_hopper()}
    edits = photos.same_person_set(photos.astronaut())[1:]
    items = [(key, photos.encode(image)) for key, image in originals.items()]
    items += [(f"astronaut-edit-{i}", photos.encode(image)) for i, image in enumerate(edits)]

    result = _run(opencv_face_analyzer, preprocess_settings, items, out_dir=tmp_path / "dataset")

    assert result.rejections == []
    assert result.kept_keys == [key for key, _ in items]
    angles = {}
    for photo in result.kept:
        assert photo.image.size == (512, 512) and photo.image.mode == "RGB"
        assert photo.rotation == 0 and photo.score > 0.8 and photo.sharpness > 25
        face = _redetect(opencv_face_analyzer, photo.image)
        angles[photo.key] = abs(face.eye_angle)
        assert face.side / 512 == pytest.approx(0.3, abs=0.04)
        assert np.hypot(face.center[0] - 256, face.center[1] - 256) < 0.1 * 512
    assert angles["astronaut"] < 3 and angles["hopper"] < 3, angles
    assert max(angles.values()) < 6 and np.mean(list(angles.values())) < 3, angles

    # Grace Hopper's big, sharp face wins the template.
    assert result.template_key == "hopper"
    assert result.template is result.kept[1].image
    # The opencv backend has no attributes: no subject, captions say "a person".
    assert result.subject is None
    assert result.caption == "<fcsks>, a person"
    files = sorted(p.name for p in (tmp_path / "dataset").iterdir())
    assert files == [f"{i:03d}.png" for i in range(len(items))] + ["metadata.jsonl"]
    lines = (tmp_path / "dataset" / "metadata.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"file_name": f"{i:03d}.png", "text": "<fcsks>, a person"} for i in range(len(items))
    ]
    with Image.open(tmp_path / "dataset" / "001.png") as written:
        assert written.size == (512, 512)
        assert np.array_equal(np.asarray(written.convert("RGB")), np.asarray(result.kept[1].image))


def test_alignment_levels_the_eyes_it_used_exactly(opencv_face_analyzer: OpenCVFaceAnalyzer) -> None:
    image = photos.rotated(photos.grace_hopper(), -12)  # head tilted by 12°
    (face,) = opencv_face_analyzer.detect(image)
    face = refine_face(opencv_face_analyzer, image, face)
    assert abs(face.eye_angle) > 8
    matrix = alignment_matrix(face, 512, 0.3)
    eyes = np.c_[face.landmarks[:2], np.ones(2)] @ matrix.T
    assert eyes[0, 1] == pytest.approx(eyes[1, 1], abs=1e-6)
    assert eyes[0, 0] < eyes[1, 0]
    assert matrix @ np.array([*face.center, 1.0]) == pytest.approx([256, 256])
    assert np.sqrt(np.linalg.det(matrix[:, :2])) * face.side == pytest.approx(0.3 * 512)


def test_a_tilted_head_comes_out_level(
    opencv_face_analyzer: OpenCVFaceAnalyzer, preprocess_settings: WorkerSettings
) -> None:
    items = [(f"tilt{d}", photos.encode(photos.rotated(photos.grace_hopper(), d))) for d in (-12, 12)]
    result = _run(opencv_face_analyzer, preprocess_settings, items)
    assert result.kept_keys == ["tilt-12", "tilt12"]
    for photo in result.kept:
        assert abs(_redetect(opencv_face_analyzer, photo.image).eye_angle) < 4


def test_sideways_and_exif_rotated_photos_are_turned_upright(
    opencv_face_analyzer: OpenCVFaceAnalyzer, preprocess_settings: WorkerSettings
) -> None:
    hopper = photos.grace_hopper()
    items = [
        ("sideways", photos.encode(photos.turned_clockwise(hopper))),
        ("exif6", photos.jpeg_with_orientation(photos.flipped(hopper), 6)),
    ]
    result = _run(opencv_face_analyzer, preprocess_settings, items)
    assert result.rejections == []
    rotations = {photo.key: photo.rotation for photo in result.kept}
    assert rotations == {"sideways": 270, "exif6": 0}
    for photo in result.kept:
        assert abs(_redetect(opencv_face_analyzer, photo.image).eye_angle) < 3


def test_exif_orientation_is_applied_on_decode() -> None:
    hopper = photos.grace_hopper()
    data = photos.jpeg_with_orientation(hopper, 6)
    with Image.open(__import__("io").BytesIO(data)) as raw:
        assert raw.size == (hopper.shape[0], hopper.shape[1])  # stored sideways
    image, scale = decode_photo(data)
    assert image.shape == hopper.shape and scale == 1.0
    assert np.abs(image.astype(int) - hopper.astype(int)).mean() < 4


def test_big_jpegs_are_decoded_at_a_reduced_scale(
    opencv_face_analyzer: OpenCVFaceAnalyzer, preprocess_settings: WorkerSettings
) -> None:
    big = photos.scaled(photos.grace_hopper(), 4.5)  # 2304×2700
    data = photos.encode(big, "JPEG", quality=90)
    image, scale = decode_photo(data)
    assert scale == 0.5 and min(image.shape[:2]) >= 1024
    # Face sizes are judged in the original's pixels: a 400 px floor passes the ~850 px face.
    settings = preprocess_settings.model_copy(update={"min_face_px": 400})
    result = _run(opencv_face_analyzer, settings, [("big", data)])
    assert result.kept_keys == ["big"]


# --------------------------------------------------------------------------------------- rejected
def test_each_bad_photo_is_rejected_with_its_reason(
    opencv_face_analyzer: OpenCVFaceAnalyzer, preprocess_settings: WorkerSettings
) -> None:
    astronaut, hopper = photos.astronaut(), photos.grace_hopper()
    items = [
        ("good", photos.encode(hopper)),
        ("coffee", photos.encode(photos.coffee())),
        ("cat", photos.encode(photos.chelsea())),
        ("two", photos.encode(photos.side_by_side(astronaut, photos.flipped(astronaut)))),
        ("small", photos.encode(photos.with_small_face(astronaut))),
        ("blurry", photos.encode(photos.blurred(hopper))),
        ("same-file", photos.encode(hopper)),
        ("recompressed", photos.encode(hopper, "JPEG", quality=95)),
        ("text", photos.TEXT_BYTES),
        ("truncated", photos.truncated_jpeg(hopper)),
        ("empty", b""),
    ]
    result = _run(opencv_face_analyzer, preprocess_settings, items)
    assert result.kept_keys == ["good"]
    reasons = {r.key: r.reason for r in result.rejections}
    assert reasons == {
        "coffee": RejectReason.NO_FACE,
        "cat": RejectReason.NO_FACE,
        "two": RejectReason.SEVERAL_FACES,
        "small": RejectReason.FACE_TOO_SMALL,
        "blurry": RejectReason.TOO_BLURRY,
        "same-file": RejectReason.DUPLICATE,
        "recompressed": RejectReason.DUPLICATE,
        "text": RejectReason.NOT_AN_IMAGE,
        "truncated": RejectReason.NOT_AN_IMAGE,
        "empty": RejectReason.NOT_AN_IMAGE,
    }
    details = {r.key: r.detail for r in result.rejections}
    assert "px" in details["small"] and "sharpness" in details["blurry"] and "good" in details["recompressed"]


def test_a_dominant_face_keeps_the_photo(
    opencv_face_analyzer: OpenCVFaceAnalyzer, preprocess_settings: WorkerSettings
) -> None:
    # A big face beside a much smaller one (area ratio ≈ 6) passes the 4× dominance rule.
    hopper = photos.grace_hopper()
    background = photos.with_small_face(photos.astronaut(), factor=0.75, canvas=hopper.shape[0])
    image = photos.side_by_side(hopper, background)
    faces = opencv_face_analyzer.detect(image)
    assert len(faces) == 2 and faces[0].area > 4 * faces[1].area
    result = _run(opencv_face_analyzer, preprocess_settings, [("dominant", photos.encode(image))])
    assert result.kept_keys == ["dominant"]


def test_no_usable_photo_is_an_empty_result_not_an_error(
    opencv_face_analyzer: OpenCVFaceAnalyzer, preprocess_settings: WorkerSettings, tmp_path: Path
) -> None:
    items = [("coffee", photos.encode(photos.coffee())), ("text", photos.TEXT_BYTES)]
    (tmp_path / "000.png").write_bytes(b"left by an earlier attempt")
    result = _run(opencv_face_analyzer, preprocess_settings, items, out_dir=tmp_path)
    assert result.kept == [] and len(result.rejections) == 2
    assert not (tmp_path / "000.png").exists()
    assert result.template is None and result.template_key is None and result.subject is None
    assert (tmp_path / "metadata.jsonl").read_text() == ""


# --------------------------------------------------------------------------------- subject, caption
def test_captions_follow_the_subject() -> None:
    assert caption(Subject.MAN) == "<fcsks>, a handsome man"
    assert caption(Subject.WOMAN) == "<fcsks>, a beautiful woman"
    assert caption(Subject.BOY) == "<fcsks>, a boy, children"
    assert caption(Subject.GIRL) == "<fcsks>, a girl, children"


def _face(gender: str | None, age: float | None) -> Face:
    return Face(box=(0, 0, 10, 10), score=1.0, landmarks=np.zeros((5, 2), np.float32), gender=gender, age=age)


def test_subject_is_the_majority_of_the_faces_attributes() -> None:
    assert subject_from_faces([_face("male", 30), _face("male", 41), _face("female", 35)]) is Subject.MAN
    assert subject_from_faces([_face("female", 8), _face("female", 9), _face("female", 30)]) is Subject.GIRL
    assert subject_from_faces([_face("male", 7)]) is Subject.BOY
    # FaceChain's children are FairFace's 0-2 and 3-9 buckets (data_process/preprocessing.py:67).
    assert subject_from_faces([_face("female", 10)]) is Subject.WOMAN
    assert subject_from_faces([_face("female", 13)]) is Subject.WOMAN
    assert subject_from_faces([_face(None, None), _face(None, None)]) is None
    assert subject_from_faces([]) is None


class _WithAttributes:
    """The real opencv backend, plus fixed gender/age: stands in for an attribute model."""

    has_attributes = True

    def __init__(self, base: OpenCVFaceAnalyzer, gender: str, age: float) -> None:
        self.base, self.gender, self.age = base, gender, age

    def detect(self, image_rgb: np.ndarray) -> list[Face]:
        return [replace(f, gender=self.gender, age=self.age) for f in self.base.detect(image_rgb)]

    def embed(self, image_rgb: np.ndarray, face: Face) -> np.ndarray:
        return self.base.embed(image_rgb, face)


def test_attributes_give_the_subject_and_an_explicit_subject_wins(
    opencv_face_analyzer: OpenCVFaceAnalyzer, preprocess_settings: WorkerSettings, tmp_path: Path
) -> None:
    items = [("a", photos.encode(photos.grace_hopper()))]
    analyzer = _WithAttributes(opencv_face_analyzer, "female", 8)
    result = _run(analyzer, preprocess_settings, items, out_dir=tmp_path / "auto")
    assert result.subject is Subject.GIRL and result.caption == "<fcsks>, a girl, children"
    chosen = _run(analyzer, preprocess_settings, items, out_dir=tmp_path / "chosen", subject=Subject.WOMAN)
    assert chosen.subject is Subject.GIRL and chosen.caption == "<fcsks>, a beautiful woman"
    assert "a beautiful woman" in (tmp_path / "chosen" / "metadata.jsonl").read_text()


def test_progress_is_reported_per_photo(
    opencv_face_analyzer: OpenCVFaceAnalyzer, preprocess_settings: WorkerSettings
) -> None:
    calls: list[tuple[int, int]] = []
    items = [("a", photos.encode(photos.coffee())), ("b", photos.TEXT_BYTES)]
    _run(
        opencv_face_analyzer,
        preprocess_settings,
        items,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(1, 2), (2, 2)]


# ---------------------------------------------------------------------------- ModelScope stages' glue
def test_skin_retouching_then_human_parsing_whiten_all_but_the_head(
    opencv_face_analyzer: OpenCVFaceAnalyzer, preprocess_settings: WorkerSettings
) -> None:
    """FaceChain's order and its white background, with stand-ins for the two ModelScope pipelines
    (neither runs here: skin retouching brings its own code, M2FP needs timm)."""
    order: list[str] = []

    class Retouch:
        def __call__(self, image: np.ndarray) -> np.ndarray:
            order.append("skin_retouch")
            return image

    class Parse:
        def head_mask(self, image: np.ndarray) -> np.ndarray | None:
            order.append("human_parsing")
            face = np.zeros(image.shape[:2], np.float32)
            face[180:340, 190:330] = 1
            # The shape of M2FP's output, as ModelScope's pipeline returns it.
            segments = {"masks": [face, np.ones_like(face)], "labels": ["Face", "Human"], "scores": [0.99, 0.99]}
            return head_mask(segments, image.shape[:2])

    stages = FaceChainStages(skin_retouch=Retouch(), human_parsing=Parse())  # type: ignore[arg-type]
    result = preprocess_photos(
        [("p", photos.encode(photos.grace_hopper()))], opencv_face_analyzer, preprocess_settings, stages=stages
    )
    assert order == ["skin_retouch", "human_parsing"]
    pixels = np.asarray(result.kept[0].image)
    assert (pixels[:40, :40] == 255).all() and (pixels[-40:, -40:] == 255).all()
    assert pixels[250, 250].tolist() != [255, 255, 255]
    assert result.stages_run == ["detection", "alignment", "skin_retouch", "human_parsing"]


# ----------------------------------------------------------------------------------------- timing
def test_time_per_photo(opencv_face_analyzer: OpenCVFaceAnalyzer, preprocess_settings: WorkerSettings) -> None:
    """Prints ms per photo for the opencv backend (a measurement, never asserted)."""
    items = [
        (f"a{i}", photos.encode(image, "JPEG", quality=92))
        for i, image in enumerate(photos.same_person_set(photos.astronaut()))
    ]
    items += [
        (f"h{i}", photos.encode(image, "JPEG", quality=92))
        for i, image in enumerate(photos.same_person_set(photos.grace_hopper()))
    ]
    _run(opencv_face_analyzer, preprocess_settings, items[:2])  # warm up
    started = time.perf_counter()
    result = _run(opencv_face_analyzer, preprocess_settings, items)
    elapsed = (time.perf_counter() - started) * 1000 / len(items)
    print(f"\npreprocess (opencv backend): {elapsed:.1f} ms/photo over {len(items)} photos ~512 px")
    assert len(result.kept) == len(items)
