"""`models fetch` against a local server in the ModelScope hub's layout: the plan, progress, resume."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pipeline.config import WorkerSettings
from pipeline.hub_fetch import HubError
from pipeline.models import default_model_names, fetch_models, parse_hub_ref
from pipeline.stage_models import BY_NAME, FETCH_MANIFEST, MODELS, fetch_targets, stage_plan
from pipeline.styles import load_styles
from tests.pipeline.hub_server import HubState, serve_hub


def _payload(name: str, size: int = 3000) -> bytes:
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def _publish_everything(state: HubState, settings: WorkerSettings) -> None:
    """Every stage model's repository (its files, a README and a demo picture) and every style's LoRA."""
    for model in MODELS:
        if model.model_id is None or model.revision is None:
            continue
        files = {name: _payload(f"{model.name}/{name}") for name in model.files}
        files["README.md"] = b"# model card"
        files["description/demo.jpg"] = b"\xff\xd8 not needed to run"
        if model.fetch == "repo":
            files["ms_wrapper.py"] = b"# the repo's own pipeline code"
        state.add(model.model_id, model.revision, files)
    for style in load_styles(settings).values():
        ref = parse_hub_ref(style.lora or "")
        if ref is not None:
            state.add(ref.repo, ref.revision or "master", {ref.subpath: _payload(str(ref))})


def _settings(tmp_path: Path, endpoint: str, **overrides: object) -> WorkerSettings:
    values: dict[str, object] = {
        "models_dir": tmp_path / "models",
        "data_dir": tmp_path / "data",
        "base_model": str(tmp_path),  # a local folder: not fetched
        "modelscope_endpoint": endpoint,
    }
    values.update(overrides)
    return WorkerSettings(_env_file=None, **values)  # type: ignore[call-arg]


def test_the_default_fetch_takes_every_file_of_every_selected_stage(tmp_path: Path) -> None:
    with serve_hub(tmp_path / "hub") as (endpoint, state):
        settings = _settings(tmp_path, endpoint)
        _publish_everything(state, settings)
        lines: list[str] = []
        fetch_models(settings, report=lines.append)

    selected = fetch_targets(settings)
    assert {m.stage for m in selected} >= {
        "orientation", "skin_retouch", "human_parsing", "landmark_check", "tagger", "face_attributes",
        "face_quality", "face_fusion",
    }  # fmt: skip
    for model in selected:
        folder = model.local_dir(settings.models_dir)
        for name in model.files:
            assert (folder / name).read_bytes() == _payload(f"{model.name}/{name}"), (model.name, name)
        assert not (folder / "description" / "demo.jpg").exists(), "description media is not fetched"
        if model.fetch == "repo":
            assert (folder / "ms_wrapper.py").is_file(), "a repo with its own code is fetched whole"
        assert any(model.name in line for line in lines)
    # The alternatives are not selected by default, so not fetched...
    for name in ("damofd", "rts"):
        assert not BY_NAME[name].local_dir(settings.models_dir).exists()
    # ...and with everything fetched, every selected stage is present and nothing is missing.
    for status in stage_plan(settings):
        if status.selected:
            assert status.present, status.model.name
    for style in load_styles(settings).values():
        ref = parse_hub_ref(style.lora or "")
        if ref is not None:
            assert (ref.local_dir(settings.models_dir) / ref.subpath).is_file()


def test_alternatives_are_fetched_when_chosen_or_named(tmp_path: Path) -> None:
    with serve_hub(tmp_path / "hub") as (endpoint, state):
        settings = _settings(tmp_path, endpoint, face_recognition="rts", face_detection="damofd")
        _publish_everything(state, settings)
        assert {"rts", "damofd"} <= set(default_model_names(settings))
        fetch_models(settings, ["rts"])
    folder = BY_NAME["rts"].local_dir(settings.models_dir)
    assert (folder / "pytorch_model.pt").is_file() and (folder / "configuration.json").is_file()
    assert "rts" not in [s.model.name for s in stage_plan(settings) if s.problem]


def test_an_interrupted_download_resumes_and_a_second_fetch_downloads_nothing(tmp_path: Path) -> None:
    with serve_hub(tmp_path / "hub") as (endpoint, state):
        settings = _settings(tmp_path, endpoint)
        model = BY_NAME["deepdanbooru"]
        data = _payload("big", 3 * 1024 * 1024)
        state.add(model.model_id or "", model.revision or "", {model.files[0]: data, "other.bin": b"not taken"})
        state.break_after[model.files[0]] = 1024 * 1024 + 5

        with pytest.raises(HubError, match="run `models fetch` again to resume"):
            fetch_models(settings, ["deepdanbooru"])
        folder = model.local_dir(settings.models_dir)
        part = folder / (model.files[0] + ".part")
        assert part.stat().st_size == 1024 * 1024 + 5
        assert not (folder / model.files[0]).exists(), "nothing half-written under the real name"

        fetch_models(settings, ["deepdanbooru"])
        assert (folder / model.files[0]).read_bytes() == data
        assert not part.exists() and not (folder / "other.bin").exists()
        assert state.downloads[-1] == (model.files[0], f"bytes={1024 * 1024 + 5}-"), "resumed with a range request"
        assert (folder / FETCH_MANIFEST).is_file()

        served = len(state.downloads)
        lines: list[str] = []
        fetch_models(settings, ["deepdanbooru"], report=lines.append)
        assert len(state.downloads) == served, "a complete file is not downloaded again"
        assert "0 to download" in lines[0]


def test_a_corrupted_download_is_refused_and_removed(tmp_path: Path) -> None:
    with serve_hub(tmp_path / "hub") as (endpoint, state):
        settings = _settings(tmp_path, endpoint)
        model = BY_NAME["rot_bgr"]
        state.add(model.model_id or "", model.revision or "", {"rot_bgr.onnx": b"A" * 2000})
        folder = model.local_dir(settings.models_dir)
        folder.mkdir(parents=True)
        # A stale partial file from another revision: same length prefix, different bytes.
        (folder / "rot_bgr.onnx.part").write_bytes(b"B" * 1000)
        with pytest.raises(HubError, match="SHA-256"):
            fetch_models(settings, ["rot_bgr"])
        assert not (folder / "rot_bgr.onnx").exists() and not (folder / "rot_bgr.onnx.part").exists()
        fetch_models(settings, ["rot_bgr"])
        assert (folder / "rot_bgr.onnx").read_bytes() == b"A" * 2000


def test_an_unreachable_hub_is_one_clear_error(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "http://127.0.0.1:9")
    with pytest.raises(HubError, match=r"cannot reach the hub at http://127\.0\.0\.1:9"):
        fetch_models(settings, ["fqa"])


def test_a_missing_repository_names_it(tmp_path: Path) -> None:
    with serve_hub(tmp_path / "hub") as (endpoint, _state):
        settings = _settings(tmp_path, endpoint)
        with pytest.raises(HubError, match=r"damo/cv_manual_face-quality-assessment_fqa@v2.0: .*HTTP 404"):
            fetch_models(settings, ["fqa"])
