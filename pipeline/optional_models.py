"""The optional ModelScope stages of FaceChain's preprocessing.

Three stages, each switched on by a worker setting and backed by a ModelScope model that
``facechain-bot models fetch`` places under ``models_dir/<owner>/<name>`` (the layout
:meth:`pipeline.models.HubRef.local_dir` uses for every hub model):

- ``human_parsing``: segment hair, face and body; paint everything around the head white.
- ``skin_retouch``: smooth skin blemishes.
- ``face_quality``: score each aligned face; photos under :data:`FACE_QUALITY_MIN` are rejected
  (``LOW_QUALITY``) and the best-scored photo becomes the template.

A stage that is switched on but whose model directory or Python packages are missing is skipped
with one log line when the stages are loaded; training goes on without it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from pipeline.config import WorkerSettings

log = logging.getLogger("facechain.preprocess")

#: A loaded ModelScope pipeline: called with a PIL image, returns its output dict.
ModelscopePipeline = Callable[[Any], dict[str, Any]]
#: Builds a pipeline from (task, local model directory, device); raises when it cannot.
PipelineFactory = Callable[[str, Path, str], ModelscopePipeline]

#: Aligned faces whose quality score is below this are rejected as ``LOW_QUALITY``.
FACE_QUALITY_MIN = 0.3
#: Segments the human parsing model reports with less confidence than this are ignored.
PARSING_MIN_SCORE = 0.8


@dataclass(frozen=True)
class OptionalModel:
    """One optional stage: the setting that switches it on, its ModelScope id and task."""

    setting: str
    model_id: str
    task: str


HUMAN_PARSING = OptionalModel("human_parsing", "damo/cv_resnet101_image-multiple-human-parsing", "image-segmentation")
SKIN_RETOUCH = OptionalModel("skin_retouch", "damo/cv_unet_skin-retouching", "skin-retouching")
FACE_QUALITY = OptionalModel("face_quality", "damo/cv_manual_face-quality-assessment_fqa", "face-quality-assessment")
FACE_FUSION = OptionalModel("face_fusion", "damo/cv_unet-image-face-fusion_damo", "image-face-fusion")
OPTIONAL_MODELS: tuple[OptionalModel, ...] = (HUMAN_PARSING, SKIN_RETOUCH, FACE_QUALITY, FACE_FUSION)


def modelscope_model_dir(models_dir: Path, model_id: str) -> Path:
    """Where a ModelScope model ``owner/name`` is expected on disk: ``models_dir/owner/name``."""
    owner, name = model_id.split("/")
    return Path(models_dir) / owner / name


def load_modelscope_pipeline(task: str, model_dir: Path, device: str) -> ModelscopePipeline:
    """A ModelScope pipeline for ``task`` from a local model directory (imports modelscope lazily)."""
    from modelscope.pipelines import pipeline

    result: ModelscopePipeline = pipeline(task=task, model=str(model_dir), device=device)
    return result


def _modelscope_device(device: str) -> str:
    if device == "cpu":
        return "cpu"
    # ModelScope falls back to the CPU by itself when CUDA is not there.
    return device.replace("cuda", "gpu") if device.startswith("cuda") else "gpu"


@dataclass
class OptionalStages:
    """The optional stages that could be loaded; a None member is a stage that is off or absent."""

    human_parsing: ModelscopePipeline | None = None
    skin_retouch: ModelscopePipeline | None = None
    face_quality: ModelscopePipeline | None = None
    face_fusion: ModelscopePipeline | None = None

    def quality(self, image_rgb: np.ndarray) -> float | None:
        """Face quality score of an aligned face, or None when the stage is off."""
        if self.face_quality is None:
            return None
        scores = self.face_quality(Image.fromarray(image_rgb)).get("scores")
        return float(np.ravel(scores)[0]) if scores is not None and len(np.ravel(scores)) else 0.0

    def retouch(self, image_rgb: np.ndarray) -> np.ndarray:
        """Skin-retouched copy of an aligned image (unchanged when the stage is off)."""
        if self.skin_retouch is None:
            return image_rgb
        out = self.skin_retouch(Image.fromarray(image_rgb)).get("output_img")
        if out is None:
            return image_rgb
        # ModelScope image outputs are BGR.
        return np.ascontiguousarray(cv2.cvtColor(np.asarray(out, dtype=np.uint8), cv2.COLOR_BGR2RGB))

    def fuse_face(self, portrait_rgb: np.ndarray, template_rgb: np.ndarray) -> np.ndarray:
        """The portrait with the user's template face blended in (unchanged when the stage is off)."""
        if self.face_fusion is None:
            return portrait_rgb
        out = self.face_fusion({"template": Image.fromarray(portrait_rgb), "user": Image.fromarray(template_rgb)})
        fused = out.get("output_img") if isinstance(out, dict) else None
        if fused is None:
            return portrait_rgb
        # ModelScope image outputs are BGR.
        return np.ascontiguousarray(cv2.cvtColor(np.asarray(fused, dtype=np.uint8), cv2.COLOR_BGR2RGB))

    def whiten_background(self, image_rgb: np.ndarray) -> np.ndarray:
        """The image with everything but hair and face painted white (unchanged when off)."""
        if self.human_parsing is None:
            return image_rgb
        mask = head_mask(self.human_parsing(Image.fromarray(image_rgb)), image_rgb.shape[:2])
        if mask is None:
            return image_rgb
        return composite_on_white(image_rgb, mask)


def head_mask(result: dict[str, Any], shape: tuple[int, int]) -> np.ndarray | None:
    """A float ``(H, W)`` mask of the head (hair + face, within the person) from a parsing result.

    ``result`` is the human parsing pipeline's output: ``masks``, ``labels`` and ``scores``. None
    when no face segment is confident enough.
    """
    largest: dict[str, np.ndarray] = {}
    for mask, label, score in zip(
        result.get("masks") or [], result.get("labels") or [], result.get("scores") or [], strict=False
    ):
        if float(score) < PARSING_MIN_SCORE or label not in ("Face", "Hair", "Human"):
            continue
        m: np.ndarray = (np.asarray(mask, dtype=np.float32) > 0.5).astype(np.float32)
        if m.shape != shape:
            m = np.asarray(cv2.resize(m, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST))
        if label not in largest or m.sum() > largest[label].sum():
            largest[label] = m
    face = largest.get("Face")
    if face is None or face.sum() == 0:
        return None
    head = np.clip(face + largest.get("Hair", np.zeros_like(face)), 0, 1)
    # Grow a little so the hairline and jaw are not cut; stay inside the person.
    k = max(int(np.sqrt(face.sum()) / 20), 1)
    head = cv2.dilate(head, np.ones((k, k), np.uint8))
    if "Human" in largest:
        head = head * largest["Human"]
    binary = (head > 0.5).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary)
    if count > 1:
        biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        binary = (labels == biggest).astype(np.uint8)
    head_and_face: np.ndarray = np.clip(binary.astype(np.float32) + face, 0, 1)
    return head_and_face


def composite_on_white(image_rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image * mask + white * (1 - mask)``, as uint8 RGB."""
    m = mask.astype(np.float32)[:, :, None]
    return (image_rgb.astype(np.float32) * m + 255.0 * (1.0 - m)).round().astype(np.uint8)


def load_optional_stages(
    settings: WorkerSettings, factory: PipelineFactory = load_modelscope_pipeline
) -> OptionalStages:
    """Load the stages the settings switch on; log one line for each one that must be skipped."""
    stages = OptionalStages()
    device = _modelscope_device(settings.device)
    for spec in OPTIONAL_MODELS:
        if not getattr(settings, spec.setting):
            continue
        model_dir = modelscope_model_dir(settings.models_dir, spec.model_id)
        if not model_dir.is_dir():
            log.warning(
                "%s is on but its model %s is not at %s (`facechain-bot models fetch` downloads it): skipped",
                spec.setting,
                spec.model_id,
                model_dir,
            )
            continue
        try:
            pipe = factory(spec.task, model_dir, device)
        except ImportError as exc:
            log.warning("%s is on but ModelScope cannot be imported (%s): skipped", spec.setting, exc)
            continue
        except Exception as exc:
            # Any failure of a third-party loader must not stop training: the stage is optional.
            log.warning("%s is on but %s could not be loaded (%s): skipped", spec.setting, model_dir, exc)
            continue
        setattr(stages, spec.setting, pipe)
    return stages
