"""The stages that run a ModelScope pipeline as FaceChain does: skin retouching, human parsing, face
fusion and the DamoFD detector.

Each pipeline is built from its local folder (an absolute path: ModelScope then never takes it for
a hub id) while :func:`pipeline.stages.common.hub_switched_off` points every hub at a dead address.
Skin retouching and face fusion are ModelScope repositories that carry their own pipeline code
(``skin-retouching-torch``, ``face_fusion_torch``): ``models fetch`` takes the whole repository, and
the code is trusted because the operator fetched that repository at FaceChain's revision.
ModelScope image outputs are BGR; everything here takes and returns RGB.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from pipeline.faces import Face, FaceAnalyzer
from pipeline.stages.common import hub_switched_off
from pipeline.stages.parsing import head_mask


def modelscope_device(device: str) -> str:
    """ModelScope's name for a torch device setting (``gpu``, ``gpu:1`` or ``cpu``)."""
    if device == "cpu":
        return "cpu"
    return device.replace("cuda", "gpu") if device.startswith("cuda") else "gpu"


def build_pipeline(task: str, model_dir: Path, device: str, *, remote_code: bool = False, **kwargs: Any) -> Any:
    """A ModelScope pipeline for ``task`` from a local model folder, with the hub switched off."""
    with hub_switched_off():
        from modelscope.pipelines import pipeline

        return pipeline(
            task=task,
            model=str(Path(model_dir).resolve()),
            device=modelscope_device(device),
            trust_remote_code=remote_code,
            **kwargs,
        )


def _rgb(bgr: Any) -> np.ndarray:
    return np.ascontiguousarray(cv2.cvtColor(np.asarray(bgr, dtype=np.uint8), cv2.COLOR_BGR2RGB))


class SkinRetoucher:
    """FaceChain's ``skin-retouching-torch`` pipeline (``damo/cv_unet_skin_retouching_torch``)."""

    def __init__(self, model_dir: Path, device: str = "auto") -> None:
        self._pipe = build_pipeline("skin-retouching-torch", model_dir, device, remote_code=True)

    def __call__(self, image_rgb: np.ndarray) -> np.ndarray:
        out = self._pipe(Image.fromarray(image_rgb)).get("output_img")
        if out is None:
            raise RuntimeError("skin retouching returned no image")
        return _rgb(out)


class HumanParser:
    """FaceChain's M2FP multi-human parsing (``damo/cv_resnet101_image-multiple-human-parsing``)."""

    def __init__(self, model_dir: Path, device: str = "auto") -> None:
        self._pipe = build_pipeline("image-segmentation", model_dir, device)

    def head_mask(self, image_rgb: np.ndarray) -> np.ndarray | None:
        """The hair-and-face mask (float, H×W), or None when no face segment is confident enough."""
        return head_mask(self._pipe(Image.fromarray(image_rgb)), image_rgb.shape[:2])


class FaceFuser:
    """FaceChain's ``face_fusion_torch`` pipeline (``damo/cv_unet_face_fusion_torch``)."""

    def __init__(self, model_dir: Path, device: str = "auto") -> None:
        self._pipe = build_pipeline("face_fusion_torch", model_dir, device, remote_code=True)

    def __call__(self, portrait_rgb: np.ndarray, user_face_rgb: np.ndarray) -> np.ndarray:
        out = self._pipe({"template": Image.fromarray(portrait_rgb), "user": Image.fromarray(user_face_rgb)})
        fused = out.get("output_img") if isinstance(out, dict) else None
        if fused is None:
            raise RuntimeError("face fusion returned no image")
        return _rgb(fused)


class DamoFdAnalyzer:
    """FaceChain's DamoFD detector (boxes and 5 keypoints); embeddings from the backend's recogniser."""

    def __init__(self, model_dir: Path, backend: FaceAnalyzer, device: str = "auto") -> None:
        self._pipe = build_pipeline("face-detection", model_dir, device)
        self.backend = backend
        self.has_attributes = False

    def detect(self, image_rgb: np.ndarray) -> list[Face]:
        # The pipeline reads ndarrays as BGR (LoadImage); boxes are x1, y1, x2, y2.
        result = self._pipe(np.ascontiguousarray(image_rgb[:, :, ::-1]))
        faces = []
        for box, points, score in zip(result["boxes"], result["keypoints"], result["scores"], strict=False):
            x1, y1, x2, y2 = (float(v) for v in box[:4])
            faces.append(
                Face(box=(x1, y1, x2 - x1, y2 - y1), score=float(score),
                     landmarks=np.asarray(points, np.float32).reshape(5, 2))
            )  # fmt: skip
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces

    def embed(self, image_rgb: np.ndarray, face: Face) -> np.ndarray:
        return self.backend.embed(image_rgb, face)
