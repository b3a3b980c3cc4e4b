"""Face quality: FaceChain's FQA model (``damo/cv_manual_face-quality-assessment_fqa``, ``model.onnx``).

FaceChain scores its training crops with it and fuses the best-scored face into the portraits
(``select_high_quality_face``); it gates nothing. Input as ModelScope's pipeline prepares it: the
112² aligned face, RGB, scaled to [-1, 1], NCHW float32; the score is the mean of the first output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

MODEL_FILE = "model.onnx"


def model_input(face_112_rgb: np.ndarray) -> np.ndarray:
    """The ``(1, 3, 112, 112)`` float32 tensor for a 112² RGB face."""
    pixels = (np.asarray(face_112_rgb, dtype=np.float32) / 255.0 - 0.5) / 0.5
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[None])


class FaceQuality:
    """FQA on onnxruntime: a higher score is a better face."""

    def __init__(self, model_dir: Path, device: str = "auto") -> None:
        from pipeline.stages.common import onnx_session

        self._session: Any = onnx_session(Path(model_dir) / MODEL_FILE, device)
        self._input = self._session.get_inputs()[0].name
        self._outputs = [o.name for o in self._session.get_outputs()]

    def score(self, face_112_rgb: np.ndarray) -> float:
        """The quality score of a 112² aligned face."""
        result = self._session.run(self._outputs, {self._input: model_input(face_112_rgb)})
        return float(np.mean(result[0][0]))
