"""Picking the delivered portraits on a thread pool: the same choice as one after another.

Real YuNet/SFace and open_nsfw models on real photos; only the thread count varies.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from pipeline.faces import OpenCVFaceAnalyzer
from pipeline.nsfw import NsfwChecker
from pipeline.portraits import PortraitPicker
from tests.pipeline import photos


class CountingNsfw(NsfwChecker):
    """The real checker, counting the images it was asked about."""

    def __init__(self) -> None:
        super().__init__()
        self.checked = 0
        self._count_lock = threading.Lock()

    def is_blocked(self, image: Image.Image, threshold: float) -> bool:
        with self._count_lock:
            self.checked += 1
        return super().is_blocked(image, threshold)


def _candidates() -> list[tuple[Image.Image, int]]:
    astronaut = photos.astronaut()
    images = [
        photos.coffee(),  # no face: dropped
        photos.grace_hopper(),  # another person
        photos.exposed(photos.flipped(astronaut), 1.1),  # the user
        photos.side_by_side(astronaut, astronaut),  # two faces: dropped
        photos.exposed(astronaut, 0.9),  # the user
        photos.chelsea(),  # a cat: dropped
    ]
    return [(Image.fromarray(image), 100 + i) for i, image in enumerate(images)]


@pytest.mark.parametrize("threshold", [None, 0.5, 0.0])
def test_a_pool_picks_exactly_what_one_thread_picks(
    opencv_face_analyzer: OpenCVFaceAnalyzer, threshold: float | None
) -> None:
    template_photo = photos.astronaut()
    picks = []
    for threads in (1, 4):
        picker = PortraitPicker(opencv_face_analyzer, CountingNsfw(), threads=threads)
        try:
            template = picker.submit(picker.embed_template, template_photo).result()
            picked = picker.pick(_candidates(), 2, rank=True, template=template, nsfw_threshold=threshold)
        finally:
            picker.close()
        picks.append([(p.seed, p.score) for p in picked.portraits] + [picked.dropped, picked.blocked])
    assert picks[0] == picks[1]
    assert picks[0][-2] == 3
    if threshold == 0.0:  # flags everything: nothing delivered, the three ranked ones withheld
        assert picks[0] == [3, 3]
    else:
        assert {seed for seed, _ in picks[0][:2]} == {102, 104}  # the user's faces, not Grace Hopper's


def test_the_nsfw_check_runs_on_as_few_candidates_as_the_outcome_needs(
    opencv_face_analyzer: OpenCVFaceAnalyzer,
) -> None:
    nsfw = CountingNsfw()
    picker = PortraitPicker(opencv_face_analyzer, nsfw, threads=4)
    try:
        picked = picker.pick(_candidates(), 1, rank=True, template=None, nsfw_threshold=0.5)
        assert len(picked.portraits) == 1 and nsfw.checked == 1
        unranked = picker.pick(_candidates(), 6, rank=False, template=None, nsfw_threshold=None)
        assert [p.seed for p in unranked.portraits] == list(range(100, 106)) and unranked.dropped == 0
        assert nsfw.checked == 1  # no threshold: no check
    finally:
        picker.close()


def test_one_face_analyzer_serves_many_threads_at_once(opencv_face_analyzer: OpenCVFaceAnalyzer) -> None:
    # Different image sizes: a detector shared without care would detect at another thread's size.
    images = [photos.astronaut(), photos.grace_hopper(), photos.side_by_side(photos.astronaut(), photos.astronaut())]
    images += [np.ascontiguousarray(image[::2, ::2]) for image in images]

    def analyse(image: np.ndarray) -> list[tuple[tuple[float, ...], np.ndarray]]:
        return [(face.box, opencv_face_analyzer.embed(image, face)) for face in opencv_face_analyzer.detect(image)]

    alone = [analyse(image) for image in images]
    with ThreadPoolExecutor(6) as pool:
        for _ in range(5):
            together = list(pool.map(analyse, images))
            for one, other in zip(alone, together, strict=True):
                assert [box for box, _ in one] == [box for box, _ in other]
                for (_, a), (_, b) in zip(one, other, strict=True):
                    np.testing.assert_allclose(a, b, atol=1e-5)


def test_without_a_template_face_candidates_are_filtered_but_never_scored(
    opencv_face_analyzer: OpenCVFaceAnalyzer,
) -> None:
    # The detector's confidence says how sure it is of *a* face, not whose: it is never shown as a likeness.
    picker = PortraitPicker(opencv_face_analyzer, None, threads=1)
    try:
        picked = picker.pick(_candidates(), 6, rank=True, template=None, nsfw_threshold=None)
    finally:
        picker.close()
    assert [p.seed for p in picked.portraits] == [101, 102, 104], "one-face candidates, in their order"
    assert all(p.score is None for p in picked.portraits) and not picked.ranked
