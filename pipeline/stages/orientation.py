"""Orientation: FaceChain's rotation classifier (``Cherrytest/rot_bgr``, ``rot_bgr.onnx``).

FaceChain turns every training photo upright with it before anything else
(``get_rot`` in ``train_text_to_image_lora.py``): the photo as BGR, resized to 224×224, minus the
per-channel mean and times the per-channel scale below, NCHW float32 in; four logits out, one per
quarter turn. The graph's tensor names are not part of the contract (FaceChain feeds
``get_inputs()[0]`` and reads the first output), so neither are they here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

INPUT_SIDE = 224
#: BGR channel means and scales FaceChain normalises with.
BGR_MEAN = np.array([103.53, 116.28, 123.675], dtype=np.float32)
BGR_SCALE = np.array([0.01742919, 0.017507, 0.01712475], dtype=np.float32)
#: Clockwise degrees that make the photo upright, per predicted class: FaceChain's class 1 is a
#: transpose + horizontal flip (90° clockwise), 2 a half turn, 3 a transpose + vertical flip (90°
#: counter-clockwise, i.e. 270° clockwise).
CLASS_TO_CLOCKWISE = (0, 90, 180, 270)


def rot_bgr_input(image_rgb: np.ndarray) -> np.ndarray:
    """The ``(1, 3, 224, 224)`` float32 tensor FaceChain feeds ``rot_bgr.onnx`` for an RGB photo."""
    bgr = cv2.cvtColor(np.ascontiguousarray(image_rgb[:, :, :3]), cv2.COLOR_RGB2BGR)
    small = cv2.resize(bgr, (INPUT_SIDE, INPUT_SIDE)).astype(np.float32)
    normalised = (small - BGR_MEAN) * BGR_SCALE
    return np.ascontiguousarray(normalised.transpose(2, 0, 1)[None])


class OrientationModel:
    """``rot_bgr.onnx`` on onnxruntime: how far a photo must be turned clockwise to stand upright."""

    def __init__(self, model_dir: Path, device: str = "auto") -> None:
        from pipeline.stages.common import onnx_session

        self._session: Any = onnx_session(Path(model_dir) / "rot_bgr.onnx", device)
        self._input = self._session.get_inputs()[0].name

    def logits(self, image_rgb: np.ndarray) -> np.ndarray:
        """The four class scores for an RGB photo."""
        outputs = self._session.run(None, {self._input: rot_bgr_input(image_rgb)})
        return np.asarray(outputs[0], dtype=np.float32).reshape(-1)

    def rotation(self, image_rgb: np.ndarray) -> int:
        """Degrees (0, 90, 180 or 270) to turn the photo clockwise so that it is upright."""
        return CLASS_TO_CLOCKWISE[int(np.argmax(self.logits(image_rgb)[:4]))]
