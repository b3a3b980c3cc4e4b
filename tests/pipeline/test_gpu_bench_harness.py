"""The GPU bench's recipes section (bench/gpu_bench.py), run on the CPU with the tiny model.

The numbers mean nothing here; the test holds the harness: both recipes train on the same photos
and seed in one run, and each row carries the eval losses and the face similarity (None, and said
so, on random weights). The GPU run's figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_recipes_section_trains_both_recipes_on_the_same_photos_and_scores_them(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    command = [
        sys.executable, str(ROOT / "bench" / "gpu_bench.py"), "--tiny", "--model", str(tiny_model_dir),
        "--sections", "recipes", "--photos", "2", "--held-out", "1", "--recipe-samples", "2", "--steps", "2",
        "--candidates", "1", "--out", str(out), "--work", str(tmp_path / "work"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-2000:]

    rows = [json.loads(line) for line in (out / "bench.jsonl").read_text().splitlines()]
    assert not [row for row in rows if "error" in row], rows
    recipes = {row["name"]: row for row in rows if row["section"] == "recipes"}
    assert set(recipes) == {"setup", "facechain", "fast"}
    setup, facechain, fast = recipes["setup"], recipes["facechain"], recipes["fast"]
    assert setup["random_weights"] is True and "meaningless" in setup["note"]
    assert setup["held_out_faces"] == 1  # the held-out photo's face is found by the worker's recognizer
    # The same photos, seed and sample budget; each recipe's own batch, learning rate and schedule.
    assert facechain["seed"] == fast["seed"] == 42 and facechain["samples"] == fast["samples"] == 2
    assert (facechain["batch"], facechain["lr_scheduler"], facechain["steps"]) == (1, "cosine", 2)
    assert (fast["batch"], fast["lr_scheduler"], fast["steps"]) == (8, "constant_with_warmup", 1)
    for row in (facechain, fast):
        assert isinstance(row["eval_loss"], float) and isinstance(row["eval_loss_held_out"], float)
        assert row["candidates"] == 1 and row["face_similarity_mean"] is None
    # Fast's one step is the first of its warm-up (learning rate 0): its LoRA is still the untrained one.
    assert fast["eval_loss"] == setup["untrained_eval_loss"]
