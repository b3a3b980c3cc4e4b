"""Every setting of both processes is documented in .env.example, and the file itself loads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.config import BotSettings
from pipeline.config import WorkerSettings

ROOT = Path(__file__).resolve().parents[1]


def _documented() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^(FACECHAIN_[A-Z0-9_]+)=", text, flags=re.MULTILINE))


@pytest.mark.parametrize("settings_class", [BotSettings, WorkerSettings])
def test_every_setting_is_documented(settings_class: type) -> None:
    names = {f"FACECHAIN_{name.upper()}" for name in settings_class.model_fields}
    assert names - _documented() == set()


def test_nothing_documented_is_unknown() -> None:
    known = {f"FACECHAIN_{n.upper()}" for cls in (BotSettings, WorkerSettings) for n in cls.model_fields}
    assert _documented() - known == set()


def test_the_example_copied_to_dotenv_loads_with_blank_tokens_unset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in [n for n in __import__("os").environ if n.startswith("FACECHAIN_")]:
        monkeypatch.delenv(name)
    (tmp_path / ".env").write_text((ROOT / ".env.example").read_text())
    monkeypatch.chdir(tmp_path)
    bot = BotSettings()
    assert bot.telegram_token is None and bot.discord_token is None
    assert "redis_url" not in bot.model_fields_set, "`up` starts its private Redis for a copied example"
    assert bot.styles_dir is None
    worker = WorkerSettings()
    assert worker.queues == ["train", "generate"]
    assert worker.init_face_lora is None
    # The recipe's knobs are left empty there, so that a copied .env follows FACECHAIN_RECIPE.
    assert (worker.recipe, worker.train_batch_size, worker.lr_scheduler) == ("fast", 8, "constant_with_warmup")
    monkeypatch.setenv("FACECHAIN_RECIPE", "fast")
    fast = WorkerSettings()
    assert (fast.train_batch_size, fast.lr_scheduler, fast.lr_warmup_steps) == (8, "constant_with_warmup", 10)


def test_a_worker_from_the_example_starts_with_every_model_fetched_but_no_mmcv(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The image has no mmcv (M2FP imports mmcv.ops): the example switches human parsing off, so the
    models the compose file fetches on first start cannot stop the worker; the class default stays auto."""
    import json

    from pipeline.stage_models import BY_NAME, FETCH_MANIFEST, stage_problems

    for name in [n for n in __import__("os").environ if n.startswith("FACECHAIN_")]:
        monkeypatch.delenv(name)
    (tmp_path / ".env").write_text((ROOT / ".env.example").read_text())
    monkeypatch.chdir(tmp_path)
    worker = WorkerSettings(models_dir=tmp_path / "models")  # type: ignore[call-arg]
    parsing = BY_NAME["m2fp_parsing"]
    folder = parsing.local_dir(worker.models_dir)
    folder.mkdir(parents=True)
    for file in parsing.files:
        (folder / file).write_text("{}")
    (folder / FETCH_MANIFEST).write_text(json.dumps({"files": {f: {} for f in parsing.files}}))
    assert WorkerSettings.model_fields["human_parsing"].default == "auto"
    assert worker.human_parsing == "off"
    assert not [line for line in stage_problems(worker) if "human_parsing" in line]
    monkeypatch.setenv("FACECHAIN_HUMAN_PARSING", "auto")
    [line] = [
        line for line in stage_problems(WorkerSettings(models_dir=tmp_path / "models")) if "human_parsing" in line
    ]  # type: ignore[call-arg]
    assert "mmcv" in line
