"""The compose profiles for more machines (parsed: no Docker engine runs in CI): a bucket beside Redis
on the first machine, and a worker alone on the others, set up through the same FACECHAIN_* settings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from bot.config import BotSettings
from pipeline.config import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]


def _services() -> dict[str, Any]:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert isinstance(services, dict)
    return services


def test_the_bucket_profile_runs_minio_with_the_s3_settings_as_its_root_user() -> None:
    services = _services()
    for name in ("minio", "bucket-init"):
        assert services[name]["profiles"] == ["bucket"], "off unless asked for: `docker compose up` is unchanged"
        env = services[name]["environment"]
        assert env["MINIO_ROOT_USER"] == "${FACECHAIN_S3_ACCESS_KEY_ID:-}"
        assert env["MINIO_ROOT_PASSWORD"] == "${FACECHAIN_S3_SECRET_ACCESS_KEY:-}"
    assert "9000:9000" in services["minio"]["ports"], "other machines reach the bucket"
    assert services["bucket-init"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "mc mb --ignore-existing local/facechain" in services["bucket-init"]["command"][0]


def test_the_remote_worker_reaches_redis_and_the_bucket_through_its_env_file() -> None:
    worker = _services()["remote-worker"]
    assert worker["profiles"] == ["remote-worker"]
    # Its models volume is its own: it fills it on the first start, then serves.
    assert worker["command"][:2] == ["sh", "-c"] and worker["command"][2] == (
        "(facechain-bot models list >/dev/null || facechain-bot models fetch) && exec facechain-bot worker"
    )
    assert "depends_on" not in worker, "Redis and the bucket are on the first machine"
    assert "FACECHAIN_REDIS_URL" not in worker["environment"], "it comes from this machine's .env"
    assert worker["env_file"] == [".env"], "the pre-2.24 form: Compose v2.17 is the minimum (README)"
    port = worker["environment"]["FACECHAIN_WORKER_METRICS_PORT"]
    assert f"{port}:{port}" in worker["ports"]
    assert any(d["driver"] == "nvidia" for d in worker["deploy"]["resources"]["reservations"]["devices"])


def test_every_setting_the_profiles_and_docs_name_exists() -> None:
    known = {f"FACECHAIN_{n.upper()}" for cls in (BotSettings, WorkerSettings) for n in cls.model_fields}
    text = (ROOT / "docker-compose.yml").read_text() + (ROOT / "docs" / "scaling.md").read_text()
    named = set(re.findall(r"FACECHAIN_[A-Z0-9_]*[A-Z0-9]\b", text))
    assert named - known == set()
