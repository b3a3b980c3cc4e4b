"""The landmark confidence gate: FaceChain's FLCM model (``damo/cv_manual_facial-landmark-confidence_flcm``).

Loaded with ModelScope's own model class (``FacialLandmarkConfidence``) from the local folder, and fed
as ModelScope's pipeline feeds it: the photo as BGR float32 and the face's box. FaceChain keeps a
training photo only when ``1 - confidence`` reaches :data:`MIN_SCORE` (``preprocessing.py``: ``< 1 -
0.145`` drops it). The pipeline would find the box with DamoFD (a sub-model pulled by hub id);
here the face the detector already found is passed in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

CHECKPOINT = "pytorch_model.pt"
#: FaceChain's threshold: photos whose landmark score is under this are dropped.
MIN_SCORE = 1 - 0.145


class LandmarkChecker:
    """FLCM: how sure the model is of a face's landmarks (1 - its confidence output, as FaceChain reads it)."""

    def __init__(self, model_dir: Path, device: str = "auto") -> None:
        from pipeline.stages.common import hub_switched_off, torch_device

        self.device = torch_device(device)
        with hub_switched_off():
            from modelscope.models.cv.facial_landmark_confidence import FacialLandmarkConfidence

            self._model: Any = FacialLandmarkConfidence(
                model_path=str(Path(model_dir) / CHECKPOINT), device=self.device
            )

    def score(self, image_rgb: np.ndarray, box_xyxy: tuple[float, float, float, float]) -> float:
        """The landmark score of the face in ``box_xyxy`` of an RGB image (higher is surer)."""
        import torch

        bgr = np.ascontiguousarray(image_rgb[:, :, ::-1]).astype(np.float32)
        with torch.inference_mode():
            _, confidence = self._model({"orig_img": torch.from_numpy(bgr), "bbox": torch.tensor(box_xyxy)})
        return float(1.0 - np.asarray(confidence, dtype=np.float64).ravel()[0])
