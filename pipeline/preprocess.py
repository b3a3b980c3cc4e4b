"""FaceChain's training-photo preprocessing: from a user's photos to an aligned, captioned dataset.

For each photo (:func:`preprocess_photos`), in FaceChain's order:

1. decode (Pillow), apply the EXIF orientation, convert to RGB; undecodable → ``NOT_AN_IMAGE``;
   then FaceChain's rotation classifier turns it upright (stage ``orientation``);
2. detect faces, retrying the photo turned by 90/270/180 degrees when none shows up confidently;
   none → ``NO_FACE``;
3. keep the photo only if its largest face dominates (area ≥ ``dominance_ratio`` × the second's),
   else ``SEVERAL_FACES``; a face under ``min_face_px`` → ``FACE_TOO_SMALL``;
4. sharpness = variance of the Laplacian of the face, resampled to a fixed size (so it does not
   depend on the face's pixel size); under ``blur_threshold`` → ``TOO_BLURRY``;
5. the same pixels, or a near-identical face embedding, as an already kept photo → ``DUPLICATE``;
6. align: re-detect the landmarks at a canonical face size (small faces get imprecise landmarks),
   turn about the eye midpoint so the eyes are level, square crop centred on the face with the
   face ≈ ``face_fraction`` of the side (neutral grey where the crop leaves the photo),
   ``resolution``²;
7. FaceChain's stages on the crop (:mod:`pipeline.stages`, each where its model is loaded): skin
   retouching, human parsing (white background), the landmark confidence gate (``LOW_QUALITY``),
   the tagger, face attributes and face quality.

The set then gets a template (the best face by FaceChain's quality model, else by sharpness), a
subject from the summed FairFace attributes (or the backend's gender/age), and, when asked, a
diffusers ``imagefolder`` dataset (``NNN.png`` + ``metadata.jsonl`` with ``<fcsks>, <trigger
phrase>`` captions, as FaceChain v3.0.0 writes them, and the filtered tags beside them).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image, ImageOps

from pipeline import recipe
from pipeline.faces import Face, FaceAnalyzer, cosine, detect_upright, refine_face, rotate_clockwise, warp_affine
from pipeline.jobs import TRIGGER_PHRASES, TRIGGER_TOKEN, RejectReason, Subject
from pipeline.stages import FaceChainStages, load_stages
from pipeline.stages.common import align_face_112

if TYPE_CHECKING:
    from pipeline.config import WorkerSettings

log = logging.getLogger("facechain.preprocess")

#: JPEGs are decoded at the smallest 1/2ᵏ scale that keeps both sides at least this many pixels.
DECODE_MIN_SIDE = 1024
#: Side of the square the face region is resampled to before measuring sharpness.
SHARPNESS_SIDE = 128
#: Cosine similarity at or above which two faces count as the same photo.
DUPLICATE_SIMILARITY = 0.995
#: Fill colour where the aligned crop reaches past the photo's edge.
BORDER_RGB = (127, 127, 127)
#: Children's trigger phrases are used under this age (FaceChain's label post-processing).
CHILD_AGE = recipe.CHILD_AGE


class NotAnImageError(ValueError):
    """The bytes are not a decodable image."""


@dataclass
class KeptPhoto:
    """A photo that made it into the training set."""

    key: str
    #: Aligned ``resolution``² RGB crop, after the optional stages.
    image: Image.Image
    #: Detector confidence of the face.
    score: float
    #: Laplacian variance of the face (see :func:`face_sharpness`).
    sharpness: float
    #: The face in the (possibly rotated) source photo, with the landmarks the alignment used.
    face: Face
    #: L2-normalised identity embedding of the face.
    embedding: np.ndarray
    #: Degrees the source was turned clockwise to find the face (0 when upright).
    rotation: int = 0
    #: Face-quality score, when that stage ran.
    quality: float | None = None
    #: Landmark confidence score, when that stage ran.
    landmark_score: float | None = None
    #: The tagger's tags after FaceChain's tag filter, when that stage ran.
    tags: list[str] = field(default_factory=list)
    #: FairFace's (gender, age-group) probabilities, when that stage ran.
    attributes: tuple[np.ndarray, np.ndarray] | None = None


@dataclass(frozen=True)
class Rejection:
    """A dropped photo and why."""

    key: str
    reason: RejectReason
    detail: str = ""


@dataclass
class PreprocessResult:
    """Everything preprocessing decided about a photo set."""

    kept: list[KeptPhoto] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    #: Aligned image of the best kept face (None when nothing was kept).
    template: Image.Image | None = None
    #: Key of the photo the template came from.
    template_key: str | None = None
    #: Subject derived from gender/age (None when the backend has no attributes).
    subject: Subject | None = None
    #: Where the dataset was written, and the caption it used (None when no dataset was asked).
    dataset_dir: Path | None = None
    caption: str | None = None
    #: The stages that ran on at least one photo, in FaceChain's order.
    stages_run: list[str] = field(default_factory=list)

    @property
    def kept_keys(self) -> list[str]:
        return [k.key for k in self.kept]


def caption(subject: Subject) -> str:
    """FaceChain's training caption for a subject: ``"<fcsks>, a handsome man"`` and so on."""
    return f"{TRIGGER_TOKEN}, {TRIGGER_PHRASES[subject]}"


def subject_of(face: Face) -> Subject | None:
    """The subject one face's attributes suggest (None without gender)."""
    if face.gender is None:
        return None
    child = face.age is not None and face.age < CHILD_AGE
    if face.gender == "male":
        return Subject.BOY if child else Subject.MAN
    return Subject.GIRL if child else Subject.WOMAN


def subject_from_faces(faces: Iterable[Face]) -> Subject | None:
    """The majority subject over a set of faces; None when no face has attributes."""
    votes = Counter(s for s in (subject_of(f) for f in faces) if s is not None)
    return votes.most_common(1)[0][0] if votes else None


# ------------------------------------------------------------------------------------------- decode
def decode_photo(data: bytes, min_side: int = DECODE_MIN_SIDE) -> tuple[np.ndarray, float]:
    """Decode image bytes to an upright RGB uint8 array, and the decode scale (≤ 1).

    Large JPEGs are decoded at a reduced scale (a JPEG decoder feature, much faster than decoding
    in full and resizing); the scale lets callers express sizes in the original's pixels.
    Raises :class:`NotAnImageError`.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            original_width = img.size[0]
            if img.format == "JPEG" and min(img.size) >= 2 * min_side:
                img.draft("RGB", (min_side, min_side))
            img.load()
            scale = img.size[0] / original_width
            upright = ImageOps.exif_transpose(img)
            rgb = _to_rgb(upright)
    except Exception as exc:
        # Untrusted bytes: Pillow raises many exception types on malformed files.
        raise NotAnImageError(f"{type(exc).__name__}: {exc}") from exc
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8)), scale


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grey: Pillow's RGB conversion would clip, not scale.
        arr = np.asarray(img, dtype=np.float32)
        arr = (arr / max(float(arr.max()), 1.0) * 255.0).astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
    return img.convert("RGB")


# ------------------------------------------------------------------------------------------ measures
def face_sharpness(image_rgb: np.ndarray, face: Face) -> float:
    """Variance of the Laplacian over the face box, resampled to :data:`SHARPNESS_SIDE`² first."""
    height, width = image_rgb.shape[:2]
    x, y, w, h = face.box
    x0, y0 = max(int(x), 0), max(int(y), 0)
    x1, y1 = min(int(np.ceil(x + w)), width), min(int(np.ceil(y + h)), height)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return 0.0
    gray = cv2.cvtColor(image_rgb[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY)
    gray = cv2.resize(gray, (SHARPNESS_SIDE, SHARPNESS_SIDE), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


#: The aligned crop's side when a caller names none (FaceChain's 512).
ALIGN_SIDE = 512


def alignment_matrix(face: Face, resolution: int = ALIGN_SIDE, face_fraction: float = 0.3) -> np.ndarray:
    """The 2×3 affine map from the photo to the aligned ``resolution``² crop.

    It turns the photo about the eye midpoint so the eyes are level, scales it so the face's side
    becomes ``face_fraction × resolution`` and moves the face's centre to the crop's centre.
    """
    right_eye, left_eye = face.landmarks[0].astype(np.float64), face.landmarks[1].astype(np.float64)
    eye_mid = (float(right_eye[0] + left_eye[0]) / 2.0, float(right_eye[1] + left_eye[1]) / 2.0)
    angle = float(np.degrees(np.arctan2(left_eye[1] - right_eye[1], left_eye[0] - right_eye[0])))
    scale = resolution * face_fraction / max(face.side, 1.0)
    matrix = cv2.getRotationMatrix2D(eye_mid, angle, scale)
    centre = matrix @ np.array([*face.center, 1.0])
    matrix[:, 2] += (resolution / 2.0 - centre[0], resolution / 2.0 - centre[1])
    return matrix


def align_face(
    image_rgb: np.ndarray, face: Face, resolution: int = ALIGN_SIDE, face_fraction: float = 0.3
) -> np.ndarray:
    """The face with its eyes level, centred in a ``resolution``² square RGB crop.

    The crop's side is ``face.side / face_fraction`` photo pixels; where it reaches past the photo
    it is filled with :data:`BORDER_RGB` (a neutral colour: mirrored edges could add half faces).
    """
    matrix = alignment_matrix(face, resolution, face_fraction)
    return warp_affine(image_rgb, matrix, resolution, border_value=BORDER_RGB)


def _pixel_digest(image: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(image.shape).encode())
    h.update(image.tobytes())
    return h.hexdigest()


# -------------------------------------------------------------------------------------------- stages
def preprocess_photos(
    photos: list[tuple[str, bytes]],
    analyzer: FaceAnalyzer,
    settings: WorkerSettings,
    out_dir: Path | None = None,
    *,
    subject: Subject | None = None,
    stages: FaceChainStages | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PreprocessResult:
    """Turn ``(key, bytes)`` photos into aligned training crops, rejections and a template.

    ``subject`` overrides the one derived from attributes for the captions; with neither, the
    dataset is captioned ``a person``. ``stages`` are FaceChain's loaded stages (loaded from the
    settings when None; a worker loads them once and passes them in). ``progress(done, total)`` is
    called after each photo; it may raise to stop the work. With ``out_dir``, the dataset is written
    there. Never raises for a bad photo: every photo ends up kept or in ``rejections``.
    """
    if stages is None:
        stages = load_stages(settings)
    result = PreprocessResult()
    digests: set[str] = set()
    ran: set[str] = set()
    started = time.perf_counter()
    for index, (key, data) in enumerate(photos):
        outcome = _process_one(key, data, analyzer, settings, stages, result.kept, digests, ran)
        if isinstance(outcome, Rejection):
            result.rejections.append(outcome)
            log.info("photo %s rejected: %s %s", key, outcome.reason.value, outcome.detail)
        else:
            result.kept.append(outcome)
        if progress is not None:
            progress(index + 1, len(photos))
    log.info(
        "preprocessed %d photos in %.0f ms: %d kept",
        len(photos),
        (time.perf_counter() - started) * 1000,
        len(result.kept),
    )
    if result.kept:
        best = _best(result.kept)
        result.template, result.template_key = best.image, best.key
        result.subject = subject_from_attributes(result.kept) or subject_from_faces(k.face for k in result.kept)
    result.stages_run = [name for name in PREPROCESS_STAGES if name in ran]
    if out_dir is not None:
        result.caption = caption(subject or result.subject or Subject.PERSON)
        result.dataset_dir = write_dataset(result.kept, out_dir, result.caption)
    return result


#: What preprocessing can report as run, in FaceChain's order.
PREPROCESS_STAGES = (
    "orientation", "detection", "alignment", "skin_retouch", "human_parsing", "landmark_check", "tagger",
    "face_attributes", "face_quality",
)  # fmt: skip


def subject_from_attributes(kept: Iterable[KeptPhoto]) -> Subject | None:
    """FaceChain's subject: FairFace's gender and age probabilities summed over the photos."""
    from pipeline.stages.attributes import subject_from_scores

    scored = [k.attributes for k in kept if k.attributes is not None]
    if not scored:
        return None
    return subject_from_scores(sum(g for g, _ in scored), sum(a for _, a in scored))


def _best(kept: list[KeptPhoto]) -> KeptPhoto:
    if all(k.quality is not None for k in kept):
        return max(kept, key=lambda k: k.quality or 0.0)
    return max(kept, key=lambda k: k.score * k.sharpness)


def _process_one(
    key: str,
    data: bytes,
    analyzer: FaceAnalyzer,
    settings: WorkerSettings,
    stages: FaceChainStages,
    kept: list[KeptPhoto],
    digests: set[str],
    ran: set[str],
) -> KeptPhoto | Rejection:
    try:
        image, decode_scale = decode_photo(data)
    except NotAnImageError as exc:
        return Rejection(key, RejectReason.NOT_AN_IMAGE, str(exc)[:200])
    digest = _pixel_digest(image)
    if digest in digests:
        return Rejection(key, RejectReason.DUPLICATE, "the same picture as another photo")

    turned = 0
    if stages.orientation is not None:
        ran.add("orientation")
        turned = stages.orientation.rotation(image)
        image = rotate_clockwise(image, turned)
    ran.add("detection")
    found = detect_upright(analyzer, image)
    if not found.faces:
        return Rejection(key, RejectReason.NO_FACE)
    image, faces = found.image, found.faces
    face = faces[0]
    if len(faces) > 1 and face.area < settings.dominance_ratio * faces[1].area:
        return Rejection(key, RejectReason.SEVERAL_FACES, f"{len(faces)} faces of similar size")
    side = face.side / decode_scale
    if side < settings.min_face_px:
        return Rejection(key, RejectReason.FACE_TOO_SMALL, f"face {side:.0f} px < {settings.min_face_px} px")
    sharpness = face_sharpness(image, face)
    if sharpness < settings.blur_threshold:
        detail = f"sharpness {sharpness:.1f} < {settings.blur_threshold}"
        return Rejection(key, RejectReason.TOO_BLURRY, detail)

    embedding = analyzer.embed(image, face)
    for other in kept:
        similarity = cosine(embedding, other.embedding)
        if similarity >= DUPLICATE_SIMILARITY:
            return Rejection(key, RejectReason.DUPLICATE, f"same as {other.key} ({similarity:.3f})")

    ran.add("alignment")
    refined = refine_face(analyzer, image, face)
    matrix = alignment_matrix(refined, settings.resolution, settings.face_fraction)
    aligned = warp_affine(image, matrix, settings.resolution, border_value=BORDER_RGB)
    # The face's landmarks and box in the aligned crop, for the models that look at the face alone.
    points = _transform(matrix, refined.landmarks)
    box = _transform_box(matrix, refined.box)
    if stages.skin_retouch is not None:
        ran.add("skin_retouch")
        aligned = stages.skin_retouch(aligned)
    retouched = aligned
    if stages.human_parsing is not None:
        ran.add("human_parsing")
        mask = stages.human_parsing.head_mask(aligned)
        if mask is not None:
            aligned = composite_on_white(aligned, mask)
    landmark_score = None
    if stages.landmark_check is not None:
        from pipeline.stages.landmarks import MIN_SCORE

        ran.add("landmark_check")
        landmark_score = stages.landmark_check.score(aligned, box)
        if landmark_score < MIN_SCORE:
            return Rejection(key, RejectReason.LOW_QUALITY, f"landmark score {landmark_score:.3f} < {MIN_SCORE:.3f}")
    tags: list[str] = []
    if stages.tagger is not None:
        from pipeline.stages.tagger import filter_tags

        ran.add("tagger")
        tags = filter_tags(stages.tagger.tag(Image.fromarray(aligned)))
    attributes = None
    if stages.face_attributes is not None:
        ran.add("face_attributes")
        attributes = stages.face_attributes.scores(align_face_112(retouched, points))
    quality = None
    if stages.face_quality is not None:
        ran.add("face_quality")
        quality = stages.face_quality.score(align_face_112(aligned, points))
    digests.add(digest)
    return KeptPhoto(
        key=key,
        image=Image.fromarray(aligned),
        score=face.score,
        sharpness=sharpness,
        face=refined,
        embedding=embedding,
        rotation=(turned + found.rotation) % 360,
        quality=quality,
        landmark_score=landmark_score,
        tags=tags,
        attributes=attributes,
    )


def _transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return (pts @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def _transform_box(matrix: np.ndarray, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """The axis-aligned bounds ``(x1, y1, x2, y2)`` of a ``(x, y, w, h)`` box after ``matrix``."""
    x, y, w, h = box
    corners = _transform(matrix, np.array([[x, y], [x + w, y], [x, y + h], [x + w, y + h]]))
    (x1, y1), (x2, y2) = corners.min(axis=0), corners.max(axis=0)
    return float(x1), float(y1), float(x2), float(y2)


def composite_on_white(image_rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image * mask + white * (1 - mask)``, as uint8 RGB (FaceChain's white background)."""
    m = mask.astype(np.float32)[:, :, None]
    return (image_rgb.astype(np.float32) * m + 255.0 * (1.0 - m)).round().astype(np.uint8)


def write_dataset(kept: list[KeptPhoto], out_dir: Path, text: str) -> Path:
    """Write ``NNN.png`` files and ``metadata.jsonl`` (a diffusers ``imagefolder`` dataset)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # A re-run (jobs run at least once) must not leave an earlier attempt's extra images behind.
    for stale in out_dir.glob("[0-9][0-9][0-9].png"):
        stale.unlink()
    lines = []
    for index, photo in enumerate(kept):
        name = f"{index:03d}.png"
        # Fast PNG compression: these files are read once, by the trainer, on the same machine.
        photo.image.save(out_dir / name, format="PNG", compress_level=1)
        row = {"file_name": name, "text": text}
        if photo.tags:
            row["tags"] = ", ".join(photo.tags)
        lines.append(json.dumps(row, ensure_ascii=False))
    (out_dir / "metadata.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return out_dir
