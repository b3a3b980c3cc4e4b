"""Ranking by FaceChain's face recognition model: RTS (``damo/cv_ir_face-recognition-ood_rts``).

Loaded with ModelScope's ``Model.from_pretrained`` from the local folder (its configuration.json
names the ``rts-backbone`` class; the weights are ``pytorch_model.pt``), fed as ModelScope's
pipeline feeds it: the 112² aligned face, RGB, scaled to [-1, 1]. The embedding is L2-normalised,
so the cosine similarity of two faces is their dot product, as FaceChain ranks. The detector of the
face backend finds and aligns the face (the pipeline would run DamoFD, pulled by hub id).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.faces import Face, FaceAnalyzer
from pipeline.stages.common import align_face_112


def model_input(face_112_rgb: np.ndarray) -> np.ndarray:
    pixels = (np.asarray(face_112_rgb, dtype=np.float32) / 255.0 - 0.5) / 0.5
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[None])


class RtsEmbedder:
    """RTS: an identity embedding of an aligned face."""

    def __init__(self, model_dir: Path, device: str = "auto") -> None:
        from pipeline.stages.common import hub_switched_off, torch_device

        self.device = torch_device(device)
        with hub_switched_off():
            from modelscope.models import Model

            model: Any = Model.from_pretrained(str(Path(model_dir).resolve()), device=str(self.device))
        self._model = model.to(self.device).eval()

    def embed_aligned(self, face_112_rgb: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            output = self._model(torch.from_numpy(model_input(face_112_rgb)).to(self.device))
        embedding = output[0][0].float().cpu().numpy()
        norm = float(np.linalg.norm(embedding))
        return embedding / norm if norm > 0 else embedding


class RecognitionOverride:
    """A face backend whose embeddings come from another recogniser (its detection stays)."""

    def __init__(self, backend: FaceAnalyzer, embedder: RtsEmbedder) -> None:
        self.backend = backend
        self.embedder = embedder
        self.has_attributes = backend.has_attributes

    def detect(self, image_rgb: np.ndarray) -> list[Face]:
        faces = self.backend.detect(image_rgb)
        # The backend's own embedding (insightface fills one) is not the one that ranks.
        for face in faces:
            face.embedding = None
        return faces

    def embed(self, image_rgb: np.ndarray, face: Face) -> np.ndarray:
        return self.embedder.embed_aligned(align_face_112(image_rgb, face.landmarks))
