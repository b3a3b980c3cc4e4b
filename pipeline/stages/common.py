"""What the stage models share: ModelScope's 112² face crop, onnxruntime sessions, hub-free loading."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

#: ModelScope's (and insightface's) 5-point face template in a 112×112 crop, in the landmark order of
#: :data:`pipeline.faces.LANDMARK_ORDER`.
FACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)

#: Where ModelScope code would reach for a hub while a stage loads: an address nothing answers, so a
#: hidden download fails at once instead of hanging (and tests can see it).
DEAD_HUB = "http://127.0.0.1:9"


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2×3 least-squares similarity (rotation, uniform scale, shift) taking ``source`` to ``target``.

    Umeyama's closed form, as scikit-image's ``SimilarityTransform.estimate`` (which ModelScope's
    ``align_face`` uses) computes it.
    """
    src = np.asarray(source, dtype=np.float64)
    dst = np.asarray(target, dtype=np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rotation = u @ sign @ vt
    variance = src_c.var(axis=0).sum()
    scale = float(np.trace(np.diag(singular) @ sign) / variance) if variance > 0 else 1.0
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def align_face_112(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The face cut out as ModelScope's face models expect it: 112×112, eyes and mouth on the template.

    Works on any channel order (the crop keeps the input's); ``landmarks`` are 5 points in
    :data:`pipeline.faces.LANDMARK_ORDER`.
    """
    matrix = similarity_transform(np.asarray(landmarks, np.float64).reshape(5, 2), FACE_TEMPLATE_112)
    return cv2.warpAffine(np.ascontiguousarray(image), matrix, (112, 112))


def onnx_session(path: Path, device: str) -> Any:
    """An onnxruntime session for ``path`` on ``device`` (CUDA when onnxruntime has it)."""
    import onnxruntime

    from pipeline.faces import onnx_providers

    providers, _ = onnx_providers(device)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), sess_options=options, providers=providers)


def torch_device(device: str) -> Any:
    """The torch device a stage model runs on (``auto``: the GPU when there is one)."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@contextlib.contextmanager
def hub_switched_off() -> Iterator[None]:
    """While ModelScope code loads a stage: every hub it could reach points at :data:`DEAD_HUB`.

    Models are built from local folders (absolute paths, so ModelScope never takes them for hub
    ids); this makes sure a sub-model pulled by id, or a remote-code pipeline's own download, fails
    at once with a connection error instead of reaching the internet.
    """
    names = {
        "MODELSCOPE_ENDPOINT": DEAD_HUB,
        "HF_ENDPOINT": DEAD_HUB,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(names)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
