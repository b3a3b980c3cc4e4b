"""Choosing what a /generate delivers from its candidates: face filter, ranking, NSFW gate.

As FaceChain does, a candidate without exactly one face of a sensible size is dropped, the rest are
sorted by how close their face is to the user's template face, and the best ones that pass the NSFW
check are delivered. Each candidate's face detection and embedding, and each NSFW check, is
independent CPU work, so a thread pool runs them side by side (OpenCV and onnxruntime release the
GIL while they compute): with one thread, 10 candidates and 4 checks took 0.24 s on the CPU of an
H200 host, after the GPU had finished: on the critical path of every /generate.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from PIL import Image

from pipeline.faces import FaceAnalyzer, cosine
from pipeline.nsfw import NsfwChecker
from pipeline.runlog import in_this_context

#: A candidate's face must be at least this fraction of the image side to count as a portrait.
MIN_PORTRAIT_FACE = 0.08

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Ranked:
    """A candidate kept for delivery: its image, seed and face-recognition similarity to the template face
    (None: not ranked, there was no template face or ranking is off)."""

    image: Image.Image
    seed: int
    score: float | None


@dataclass(frozen=True)
class Picked:
    portraits: list[Ranked]
    #: Candidates without exactly one sensible face.
    dropped: int
    #: Candidates the NSFW check withheld.
    blocked: int
    #: The portraits are sorted by recognition similarity to the template face (their scores).
    ranked: bool = False


class PortraitPicker:
    """Ranks candidates and applies the NSFW gate, ``threads`` images at a time (1: one after another)."""

    def __init__(self, analyzer: FaceAnalyzer, nsfw: NsfwChecker | None, threads: int) -> None:
        self.analyzer = analyzer
        self.nsfw = nsfw
        self.threads = max(1, threads)
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="portraits") if self.threads > 1 else None

    def submit(self, fn: Callable[..., T], *args: object) -> Future[T]:
        """Run ``fn`` on the pool (at once, in this thread, without one), e.g. while the GPU denoises."""
        if self._pool is not None:
            return self._pool.submit(in_this_context(fn), *args)
        done: Future[T] = Future()
        try:
            done.set_result(fn(*args))
        except BaseException as exc:
            done.set_exception(exc)
        return done

    def _map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        if self._pool is None or len(items) < 2:
            return [fn(item) for item in items]
        return list(self._pool.map(in_this_context(fn), items))

    def embed_template(self, image: np.ndarray | None) -> np.ndarray | None:
        """The user's template face embedding (None without a template or a face in it)."""
        if image is None:
            return None
        faces = self.analyzer.detect(image)
        return self.analyzer.embed(image, faces[0]) if faces else None

    def check_face(self, image: Image.Image, template: np.ndarray | None) -> tuple[bool, float | None]:
        """(the candidate has exactly one sensible face, its recognition similarity to the template face).

        The similarity is None without a template: never the detector's confidence, which says how
        sure it is of *a* face, not whose.
        """
        pixels = np.asarray(image.convert("RGB"))
        faces = self.analyzer.detect(pixels)
        if len(faces) != 1 or faces[0].side < MIN_PORTRAIT_FACE * min(image.size):
            return False, None
        if template is None:
            return True, None
        return True, cosine(self.analyzer.embed(pixels, faces[0]), template)

    def pick(
        self,
        candidates: Sequence[tuple[Image.Image, int]],
        count: int,
        *,
        rank: bool,
        template: np.ndarray | None,
        nsfw_threshold: float | None,
    ) -> Picked:
        """The best ``count`` candidates ((image, seed) pairs) that pass the gate, best first.

        ``rank=True`` drops candidates without exactly one sensible face and, with a ``template``
        embedding, sorts the rest by recognition similarity to it (without one they keep their order
        and get no score); ``rank=False`` keeps the candidates' order and drops none.
        ``nsfw_threshold=None`` skips the NSFW check. Checks run on as few candidates as the outcome
        needs: the best ``count`` first, then the next ones for each that was withheld.
        """
        ranked: list[Ranked]
        if rank:
            checks = self._map(lambda c: self.check_face(c[0], template), candidates)
            ranked = [
                Ranked(image, seed, similarity)
                for (image, seed), (one_face, similarity) in zip(candidates, checks, strict=True)
                if one_face
            ]
            if template is not None:
                ranked.sort(key=lambda r: r.score if r.score is not None else -2.0, reverse=True)
        else:
            ranked = [Ranked(image, seed, None) for image, seed in candidates]
        dropped = len(candidates) - len(ranked)
        by_likeness = rank and template is not None
        if self.nsfw is None or nsfw_threshold is None:
            return Picked(ranked[:count], dropped, 0, by_likeness)

        checker, threshold = self.nsfw, nsfw_threshold
        portraits: list[Ranked] = []
        blocked = 0
        queue = iter(ranked)
        while len(portraits) < count:
            batch = list(itertools.islice(queue, count - len(portraits)))
            if not batch:
                break
            flags = self._map(lambda r: checker.is_blocked(r.image, threshold), batch)
            portraits += [r for r, flagged in zip(batch, flags, strict=True) if not flagged]
            blocked += sum(1 for flagged in flags if flagged)
        return Picked(portraits, dropped, blocked, by_likeness)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
