"""Settings: defaults, environment, .env, and one clear line for a bad value. Tokens never leak."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import BotSettings
from bot.settings_loader import SettingsError, load_settings
from pipeline.config import WorkerSettings

TOKEN = "123456:AAE-very-secret-token-value"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("FACECHAIN_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_match_the_documented_ones() -> None:
    settings = BotSettings()
    assert settings.data_dir == Path("data")
    assert str(settings.redis_url) == "redis://127.0.0.1:6379/0"
    assert str(settings.telegram_api_url).rstrip("/") == "https://api.telegram.org"
    assert settings.telegram_token is None and settings.discord_token is None
    worker = WorkerSettings()
    assert (worker.lora_rank, worker.learning_rate, worker.max_train_steps) == (4, 1.5e-4, 800)
    assert (worker.inference_steps, worker.guidance_scale, worker.candidates) == (40, 7.0, 10)


def test_environment_and_dotenv_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"FACECHAIN_TELEGRAM_TOKEN={TOKEN}\nFACECHAIN_MIN_PHOTOS=5\n")
    monkeypatch.setenv("FACECHAIN_DATA_DIR", str(tmp_path / "d"))
    settings = BotSettings()
    assert settings.telegram_token is not None
    assert settings.telegram_token.get_secret_value() == TOKEN
    assert settings.data_dir == tmp_path / "d"
    assert settings.limits().min_photos == 5


def test_tokens_never_appear_in_repr_or_logs(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("FACECHAIN_TELEGRAM_TOKEN", TOKEN)
    monkeypatch.setenv("FACECHAIN_DISCORD_TOKEN", TOKEN)
    settings = BotSettings()
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("settings: %s %r", settings, settings)
    assert TOKEN not in repr(settings) and TOKEN not in str(settings.model_dump())
    assert TOKEN not in caplog.text


def test_a_malformed_setting_stops_with_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACECHAIN_REDIS_URL", "not a url")
    monkeypatch.setenv("FACECHAIN_TELEGRAM_TOKEN", TOKEN)
    with pytest.raises(SettingsError) as info:
        load_settings(BotSettings)
    message = str(info.value)
    assert "FACECHAIN_REDIS_URL" in message
    assert "\n" not in message
    assert TOKEN not in message


def test_the_cli_exits_2_with_the_setting_named(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "FACECHAIN_MAX_PHOTOS": "many", "FACECHAIN_TELEGRAM_TOKEN": TOKEN}
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "bot"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "FACECHAIN_MAX_PHOTOS" in result.stderr
    assert TOKEN not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
