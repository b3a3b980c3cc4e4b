"""Settings: defaults, environment, .env, and one clear line for a bad value. Tokens never leak."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import BotSettings
from bot.settings_loader import SettingsError, load_settings
from pipeline.config import WorkerSettings

#: An environment with nothing of ours but the code under test (this checkout's, not an installed one).
_BARE_ENV = {"PATH": "/usr/bin:/bin", "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
TOKEN = "123456:AAE-very-secret-token-value-0123456789"
DISCORD_TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GxYzAb.very-secret-discord-token-value-0123"


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
    # The fast recipe, chosen by measurement (docs/benchmarks.md; pipeline/recipe.py): FaceChain's rank and
    # learning rate, 800 samples in batches of 8; FaceChain's generation.
    assert worker.recipe == "fast"
    assert (worker.lora_rank, worker.learning_rate, worker.train_batch_size, worker.max_train_steps) == (
        4, 1.5e-4, 8, 800
    )  # fmt: skip
    assert (worker.inference_steps, worker.guidance_scale, worker.candidates) == (40, 7.0, 10)
    assert settings.candidates == worker.candidates


def test_a_shared_setting_reads_the_same_in_both_processes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`facechain-bot up` runs both from one environment: where the data, models and styles live must agree."""
    shared = {
        "FACECHAIN_DATA_DIR": str(tmp_path / "d"),
        "FACECHAIN_MODELS_DIR": str(tmp_path / "m"),
        "FACECHAIN_STYLES_DIR": str(tmp_path / "s"),
        "FACECHAIN_REDIS_URL": "redis://127.0.0.1:6390/3",
        "FACECHAIN_CANDIDATES": "6",
    }
    for name, value in shared.items():
        monkeypatch.setenv(name, value)
    bot, worker = BotSettings(), WorkerSettings()
    for field in ("data_dir", "models_dir", "styles_dir", "redis_url", "candidates", "base_model", "blob_dir"):
        assert getattr(bot, field) == getattr(worker, field), field
    assert (bot.blob_dir, bot.candidates, str(bot.redis_url)) == (
        tmp_path / "d" / "blobs", 6, "redis://127.0.0.1:6390/3"
    )  # fmt: skip


def test_environment_and_dotenv_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"FACECHAIN_TELEGRAM_TOKEN={TOKEN}\nFACECHAIN_MIN_PHOTOS=5\n")
    monkeypatch.setenv("FACECHAIN_DATA_DIR", str(tmp_path / "d"))
    settings = BotSettings()
    assert settings.telegram_token is not None
    assert settings.telegram_token.get_secret_value() == TOKEN
    assert settings.data_dir == tmp_path / "d"
    assert settings.limits().min_photos == 5


@pytest.mark.parametrize(("written", "limit"), [("off", None), ("Unlimited", None), ("", 20), ("5", 5)])
def test_the_daily_limit_is_switched_off_by_a_word_not_by_an_empty_value(
    monkeypatch: pytest.MonkeyPatch, written: str, limit: int | None
) -> None:
    monkeypatch.setenv("FACECHAIN_DAILY_GENERATIONS", written)
    assert BotSettings(_env_file=None).limits().daily_generations == limit  # type: ignore[call-arg]


def test_tokens_never_appear_in_repr_or_logs(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("FACECHAIN_TELEGRAM_TOKEN", TOKEN)
    monkeypatch.setenv("FACECHAIN_DISCORD_TOKEN", DISCORD_TOKEN)
    settings = BotSettings()
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("settings: %s %r", settings, settings)
    for token in (TOKEN, DISCORD_TOKEN):
        assert token not in repr(settings) and token not in str(settings.model_dump())
        assert token not in caplog.text


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
    env = {**_BARE_ENV, "FACECHAIN_MAX_PHOTOS": "many", "FACECHAIN_TELEGRAM_TOKEN": TOKEN}
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "bot"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "FACECHAIN_MAX_PHOTOS" in result.stderr
    assert TOKEN not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


#: Tokens an operator could paste by mistake: (setting, value, what the one line must say).
BAD_SECRETS = [
    ("FACECHAIN_TELEGRAM_TOKEN", f"{TOKEN}\n", "line break"),
    ("FACECHAIN_TELEGRAM_TOKEN", f"{TOKEN} ", "space"),
    ("FACECHAIN_TELEGRAM_TOKEN", f"123456: {TOKEN[7:]}", "space"),
    ("FACECHAIN_TELEGRAM_TOKEN", TOKEN[:20], "malformed"),
    ("FACECHAIN_TELEGRAM_TOKEN", TOKEN.replace(":", ";"), "malformed"),
    ("FACECHAIN_DISCORD_TOKEN", f"Bot {DISCORD_TOKEN}", "without a 'Bot ' prefix"),
    ("FACECHAIN_DISCORD_TOKEN", f"{DISCORD_TOKEN}\r\n", "line break"),
    ("FACECHAIN_DISCORD_TOKEN", DISCORD_TOKEN.replace(".", ""), "malformed"),
    ("FACECHAIN_TELEGRAM_WEBHOOK_SECRET", "short", "malformed"),
    ("FACECHAIN_TELEGRAM_WEBHOOK_SECRET", "a secret with spaces in it", "space"),
]


@pytest.mark.parametrize("command", ["bot", "worker"])
@pytest.mark.parametrize(("name", "value", "said"), BAD_SECRETS)
def test_a_malformed_token_stops_the_cli_with_one_line_naming_it(
    command: str, name: str, value: str, said: str, tmp_path: Path
) -> None:
    good = {"FACECHAIN_TELEGRAM_TOKEN": TOKEN, "FACECHAIN_DISCORD_TOKEN": DISCORD_TOKEN}
    env = {**_BARE_ENV, **good, name: value}
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", command],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert name in lines[0] and said in lines[0], lines[0]
    for secret in (value, value.strip(), TOKEN, DISCORD_TOKEN, TOKEN.split(":")[1]):
        assert secret not in result.stderr + result.stdout


def test_well_formed_tokens_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACECHAIN_TELEGRAM_TOKEN", "110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw")
    monkeypatch.setenv("FACECHAIN_DISCORD_TOKEN", DISCORD_TOKEN)
    monkeypatch.setenv("FACECHAIN_TELEGRAM_WEBHOOK_SECRET", "s3cret_Token")
    settings = load_settings(BotSettings)
    assert settings.telegram_token is not None and settings.discord_token is not None


def _cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        capture_output=True, text=True, env={**_BARE_ENV, **env}, cwd=cwd, timeout=120,
    )  # fmt: skip


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    return lines[0]


def test_a_dotenv_that_is_not_utf8_stops_with_one_line(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes("FACECHAIN_STYLES_DIR=caf\u00e9\n".encode("latin-1"))
    assert "the .env file is not UTF-8 text" in _one_line(_cli(["styles"], tmp_path))


def test_a_data_dir_that_is_a_file_stops_with_one_line_naming_it(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("not a folder")
    line = _one_line(_cli(["bot"], tmp_path, FACECHAIN_DATA_DIR="data", FACECHAIN_TELEGRAM_TOKEN=TOKEN))
    assert line == (
        "facechain-bot bot: cannot write or read data: not a folder (check the path, its owner and free space)"
    )
