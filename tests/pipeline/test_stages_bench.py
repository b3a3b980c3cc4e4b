"""bench/stages_bench.py on the tiny stage models (CPU), so that the GPU bench of issue 14 cannot rot.

The bench runs once per session on a lent GPU; this runs the same script end to end with ``--tiny``
and checks that each row a reader of docs/benchmarks.md relies on is there and says what it measured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
RUNNABLE = ("orientation", "landmark_check", "tagger", "face_attributes", "face_quality")


def _run_bench(tmp_path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    out = tmp_path / "out"
    command = [sys.executable, str(ROOT / "bench" / "stages_bench.py"), "--tiny", "--repeats", "1"]
    command += ["--out", str(out), "--work", str(tmp_path / "work")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "stages.jsonl").read_text().splitlines()]
    assert not [r for r in rows if r["name"] == "error"], rows
    return {(r["section"], r["name"]): r for r in rows}


def test_the_stages_bench_times_each_stage_and_the_ranking_and_names_what_did_not_run(tmp_path: Path) -> None:
    rows = _run_bench(tmp_path)
    for stage in (*RUNNABLE, "ranking"):
        assert rows[("setup", f"model_{stage}")]["size"] == "tiny"

    # Preprocessing: every runnable stage was loaded by the production loader and timed on each photo.
    for stage in RUNNABLE:
        loaded = rows[("preprocess", f"load_{stage}")]
        timed = rows[("preprocess", f"stage_{stage}")]
        assert loaded["runs_on"] in ("torch:cpu", "onnxruntime:CPUExecutionProvider"), loaded
        assert timed["calls_per_run"] == 5 and timed["seconds_per_photo_median"] > 0, timed
    assert rows[("preprocess", "stage_detection")]["runs_on"].startswith("opencv:cpu")
    total = rows[("preprocess", "total")]
    assert total["kept"] == 5 and total["rejected"] == []
    assert total["stages_run"] == [
        "orientation", "detection", "alignment", "landmark_check", "tagger", "face_attributes", "face_quality",
    ]  # fmt: skip
    assert len(total["photo_seconds_median"]) == 5 and total["seconds_per_photo_median"] > 0
    assert total["tags_of_first"] == ["black_hair", "smile", "solo"], "the tagger's answer reached the dataset"

    # Ranking: the worker's picker ranked 10 candidates by each recogniser, best first.
    for recogniser, runs_on in (("sface", "opencv:cpu"), ("rts", "torch:cpu")):
        ranked = rows[("ranking", f"{recogniser}_threads_1")]
        assert ranked["candidates"] == 10 and ranked["ranked"] and ranked["delivered"] == 4, ranked
        assert ranked["scores"] == sorted(ranked["scores"], reverse=True)
        assert ranked["runs_on"].startswith(runs_on) and ranked["seconds_median"] > 0

    # What cannot run is a row with its reason, never a silent gap.
    for stage in ("skin_retouch", "human_parsing", "face_fusion", "damofd"):
        assert len(rows[("not_run", stage)]["reason"]) > 40
