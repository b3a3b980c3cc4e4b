"""The stage registry's data file: a registry that does not fit is refused with the problem named."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.stage_models import CATALOGUE, MODELS, read_catalogue

_GOOD = """
[[model]]
name = "rot_bgr"
stage = "orientation"
title = "rotation"
runtime = "onnxruntime"
role = "default"
setting = "orientation"
selects = "auto|on"
model_id = "Cherrytest/rot_bgr"
revision = "v1.0.0"
"""


def test_the_shipped_registry_reads_back_every_model_with_facechains_pins() -> None:
    assert read_catalogue(CATALOGUE) == MODELS
    pins = {m.name: (m.model_id, m.revision) for m in MODELS}
    assert pins["rot_bgr"] == ("Cherrytest/rot_bgr", "v1.0.0")
    assert pins["fqa"] == ("damo/cv_manual_face-quality-assessment_fqa", "v2.0")
    assert pins["rts"] == ("damo/cv_ir_face-recognition-ood_rts", "v2.5")
    # FaceChain's face pipelines run DamoFD inside; the note says what this project does instead.
    assert "DamoFD" in next(m for m in MODELS if m.name == "fairface").note


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda text: text + 'revison = "v2"\n', "revison"),
        (lambda text: text.replace('stage = "orientation"', 'stage = "orientaton"'), "unknown stage 'orientaton'"),
        (lambda text: text + text, "rot_bgr: named twice"),
        (lambda text: text.replace('revision = "v1.0.0"\n', ""), "needs model_id and revision"),
        (lambda text: text + 'pipeline_sub_models = ["damofd"]\n', "unknown sub-model 'damofd'"),
        (lambda text: text.replace('runtime = "onnxruntime"', 'runtime = "tensorflow"'), "runtime"),
        (lambda text: text.replace("[[model]]", "[[model]"), "stage registry"),
    ],
)
def test_a_registry_that_does_not_fit_is_refused_naming_the_problem(
    tmp_path: Path, change: Callable[[str], str], named: str
) -> None:
    good = tmp_path / "good.toml"
    good.write_text(_GOOD)
    assert [m.name for m in read_catalogue(good)] == ["rot_bgr"]
    bad = tmp_path / "bad.toml"
    bad.write_text(change(_GOOD))
    with pytest.raises(ValueError, match="stage registry") as refused:
        read_catalogue(bad)
    assert named in str(refused.value)
