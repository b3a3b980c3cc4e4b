"""`facechain-bot models fetch|list` and doctor's stage lines, as an operator runs them."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.cli import main
from pipeline.stage_models import BY_NAME, MODELS
from tests.conftest import TINY_SCRIPT_SETTINGS, set_settings
from tests.pipeline import photos
from tests.pipeline.hub_server import serve_hub


@pytest.fixture
def env(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FACECHAIN_BASE_MODEL", str(cli_env))  # a local folder: nothing to fetch for it
    return cli_env


def _rows(out: str) -> dict[str, list[str]]:
    return {line.split()[1]: line.split() for line in out.splitlines() if line and line.split()[0] != "stage"}


def test_models_list_names_every_stage_model_and_alternative(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list"]) == 1  # the base model folder has no model_index.json
    rows = _rows(capsys.readouterr().out)
    for model in MODELS:
        row = rows[model.name]
        assert row[0] == model.stage and row[2] == model.role
    assert rows["yunet"][3:5] == ["yes", "present"], "the wheel's YuNet is in use"
    assert rows["rot_bgr"][3:5] == ["no", "missing"], "auto and absent: not in use"
    assert rows["damofd"][3] == "no" and rows["rts"][3] == "no"
    assert "modelscope:Cherrytest/rot_bgr@v1.0.0" in rows["rot_bgr"]


def test_models_fetch_then_list_shows_the_stage_in_use(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    model = BY_NAME["fqa"]
    with serve_hub(env / "hub") as (endpoint, state):
        state.add(model.model_id or "", model.revision or "", {"configuration.json": b"{}", "model.onnx": b"x" * 100})
        monkeypatch.setenv("FACECHAIN_MODELSCOPE_ENDPOINT", endpoint)
        assert main(["models", "fetch", "fqa"]) == 0
    out = capsys.readouterr().out
    assert "fqa (modelscope:damo/cv_manual_face-quality-assessment_fqa@v2.0): 2 file(s), 2 to download" in out
    assert "model.onnx" in out and "done: 1 model folder(s)" in out

    main(["models", "list"])
    assert _rows(capsys.readouterr().out)["fqa"][3:6] == ["yes", "present", "ok"]


def test_models_fetch_of_an_unknown_name_or_an_unreachable_hub_is_one_line(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "fetch", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown model 'no-such-model'" in err and "models list" in err

    monkeypatch.setenv("FACECHAIN_MODELSCOPE_ENDPOINT", "http://127.0.0.1:9")
    assert main(["models", "fetch", "rot_bgr"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot reach the hub at http://127.0.0.1:9" in err


def test_doctor_says_per_stage_enabled_files_and_runtime(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FACECHAIN_TAGGER", "off")
    monkeypatch.setenv("FACECHAIN_LANDMARK_CHECK", "on")
    main(["doctor"])
    out = capsys.readouterr().out
    assert "[warn] stage orientation: rot_bgr (onnxruntime): files missing" in out
    assert "stays off until `facechain-bot models fetch rot_bgr`" in out
    assert "[ ok ] stage tagger: off (FACECHAIN_TAGGER=off)" in out
    (line,) = [line for line in out.splitlines() if "stage landmark_check" in line]
    assert line.startswith("[ ERR]") and "models fetch flcm" in line
    assert "[ ok ] stage detection: yunet enabled: files present, runtime importable" in out


def test_an_enabled_stage_with_a_missing_file_stops_the_worker_at_start(
    env: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FACECHAIN_LANDMARK_CHECK", "on")
    with caplog.at_level(logging.ERROR, logger="facechain.worker"), pytest.raises(SystemExit) as exited:
        main(["worker", "--burst"])
    assert exited.value.code == 2
    (line,) = [r.getMessage() for r in caplog.records if r.name == "facechain.worker"]
    assert line.startswith("worker not started: stage landmark_check: flcm")
    assert "`facechain-bot models fetch flcm`" in line and "FACECHAIN_LANDMARK_CHECK=off" in line


@pytest.mark.slow
def test_script_mode_runs_every_stage_with_a_tiny_model(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.models import make_tiny_pipeline
    from pipeline.stages.tiny import write_tiny_stage_models

    make_tiny_pipeline(env / "tiny")
    write_tiny_stage_models(env / "models")
    set_settings(monkeypatch, {
        "BASE_MODEL": str(env / "tiny"), **TINY_SCRIPT_SETTINGS,
        # Every stage that runs on this machine must run; the three ModelScope pipelines cannot here.
        "ORIENTATION": "on", "LANDMARK_CHECK": "on", "TAGGER": "on", "FACE_ATTRIBUTES": "on", "FACE_QUALITY": "on",
        "SKIN_RETOUCH": "off", "HUMAN_PARSING": "off", "FACE_FUSION": "off",
    })  # fmt: skip
    shots = photos.photo_folder(env / "shots")

    # No --subject: the face attribute model names her.
    assert main(["train", str(shots), "--name", "eileen"]) == 0
    out = capsys.readouterr().out
    assert "trained 'eileen' on 3 photos" in out
    assert (
        "stages run: orientation, detection, alignment, landmark_check, tagger, face_attributes, face_quality, "
        "lora_training" in out
    )
    assert main(["generate", "eileen", "--style", "watercolor", "--count", "1", "--out", str(env / "out")]) == 0
    assert "stages run: generation, nsfw_check" in capsys.readouterr().out


def test_models_list_fails_until_everything_fetch_downloads_is_there(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The compose file runs `models list || models fetch`: a cut-off first download is finished later."""
    models = cli_env / "models"
    assert main(["models", "make-tiny", str(models)]) == 0
    monkeypatch.setenv("FACECHAIN_BASE_MODEL", str(models / "tiny-sd"))
    for stage in ("SKIN_RETOUCH", "HUMAN_PARSING", "FACE_FUSION"):  # no tiny model exists for these
        monkeypatch.setenv(f"FACECHAIN_{stage}", "off")
    capsys.readouterr()
    assert main(["models", "list"]) == 0, capsys.readouterr().out

    style_loras = [p for p in models.rglob("*.safetensors") if "tiny-sd" not in p.parts]
    assert style_loras, "make-tiny wrote the style LoRAs"
    style_loras[0].unlink()  # as a download cut off before the last style
    assert main(["models", "list"]) == 1
    assert "not fetched yet: style " in capsys.readouterr().out


def test_models_list_with_a_name_says_it_takes_none(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list", "foo"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "facechain-bot models: models list takes no names (foo): it lists every model"
    )
