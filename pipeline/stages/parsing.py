"""Human parsing's glue: from M2FP's segments to FaceChain's head mask and white background.

FaceChain (``get_mask_head`` in ``preprocessing.py``) keeps the largest confident (> 0.8) Face, Hair
and Human segments, dilates hair + face a little, keeps it inside the person and takes its largest
connected part (plus the face), then paints everything else white.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

#: Segments the human parsing model reports with less confidence than this are ignored.
PARSING_MIN_SCORE = 0.8


def head_mask(result: dict[str, Any], shape: tuple[int, int]) -> np.ndarray | None:
    """A float ``(H, W)`` mask of the head (hair + face, within the person) from a parsing result.

    ``result`` is the human parsing pipeline's output: ``masks``, ``labels`` and ``scores``. None
    when no face segment is confident enough.
    """
    largest: dict[str, np.ndarray] = {}
    for mask, label, score in zip(
        result.get("masks") or [], result.get("labels") or [], result.get("scores") or [], strict=False
    ):
        if float(score) < PARSING_MIN_SCORE or label not in ("Face", "Hair", "Human"):
            continue
        m: np.ndarray = (np.asarray(mask, dtype=np.float32) > 0.5).astype(np.float32)
        if m.shape != shape:
            m = np.asarray(cv2.resize(m, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST))
        if label not in largest or m.sum() > largest[label].sum():
            largest[label] = m
    face = largest.get("Face")
    if face is None or face.sum() == 0:
        return None
    head = np.clip(face + largest.get("Hair", np.zeros_like(face)), 0, 1)
    # Grow a little so the hairline and jaw are not cut; stay inside the person.
    k = max(int(np.sqrt(face.sum()) / 20), 1)
    head = cv2.dilate(head, np.ones((k, k), np.uint8))
    if "Human" in largest:
        head = head * largest["Human"]
    binary = (head > 0.5).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary)
    if count > 1:
        biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        binary = (labels == biggest).astype(np.uint8)
    head_and_face: np.ndarray = np.clip(binary.astype(np.float32) + face, 0, 1)
    return head_and_face


def composite_on_white(image_rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image * mask + white * (1 - mask)``, as uint8 RGB."""
    m = mask.astype(np.float32)[:, :, None]
    return (image_rgb.astype(np.float32) * m + 255.0 * (1.0 - m)).round().astype(np.uint8)
