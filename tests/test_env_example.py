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
    assert bot.styles_dir is None
    worker = WorkerSettings()
    assert worker.queues == ["train", "generate"]
    assert worker.init_face_lora is None
