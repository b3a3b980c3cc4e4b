"""What an operator meets when setting up more machines: doctor checks the bucket, an unreachable
bucket is an error within a bound (not a hang), a taken metrics port is one line and exit code 2, a
scrape still answers while Redis is down, and log lines carry the run id across threads."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from bot.cli import main
from bot.up import free_port
from pipeline.metrics import MetricsServer, Registered, queue_depth_gauge
from pipeline.runlog import LOG_FORMAT, RunIdFilter, in_this_context, run_context
from storage.blob_config import BlobStoreSettings, open_blob_store
from tests.s3_server import SECRET_KEY, S3Bucket, s3_bucket, s3_endpoint
from tests.scale.procs import REPO

__all__ = ["s3_bucket", "s3_endpoint"]


def test_doctor_writes_reads_and_deletes_a_probe_in_the_bucket(
    cli_env: Path, s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in s3_bucket.env().items():
        monkeypatch.setenv(name, value)
    assert main(["doctor", "--no-gpu"]) == 0
    out = capsys.readouterr().out
    assert f"[ ok ] blob store: s3://{s3_bucket.name}/facechain at {s3_bucket.endpoint}: a probe blob" in out
    assert s3_bucket.object_names() == [], "the probe is gone"
    assert SECRET_KEY not in out


def test_doctor_names_the_settings_when_the_bucket_is_missing(
    cli_env: Path, s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in s3_bucket.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FACECHAIN_BLOB_URL", "s3://no-such-bucket/facechain")
    assert main(["doctor", "--no-gpu"]) == 1
    [line] = [line for line in capsys.readouterr().out.splitlines() if "blob store" in line]
    assert line.startswith("[ ERR] blob store: s3://no-such-bucket/facechain: ")
    assert "FACECHAIN_S3_ENDPOINT_URL" in line and "bucket exists" in line
    assert SECRET_KEY not in line


def test_an_unreachable_bucket_is_an_error_within_the_retry_bound(tmp_path: Path) -> None:
    settings = BlobStoreSettings(
        blob_url="s3://facechain/x", s3_endpoint_url=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        s3_access_key_id="key", s3_secret_access_key=SECRET_KEY,
    )  # fmt: skip
    store = open_blob_store(settings, tmp_path, retry_timeout_s=2)
    started = time.monotonic()
    with pytest.raises(Exception) as caught:
        store.put_bytes("users/1/photos/a.jpg", b"x")
    assert time.monotonic() - started < 60, "eventually an error, not a hang"
    assert SECRET_KEY not in str(caught.value)


def _found_model(tmp_path: Path) -> Path:
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "model_index.json").write_text("{}")
    return model


def test_a_taken_metrics_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with __import__("socket").socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "bot.cli", "worker"],
            # A base model that is found: the worker checks it before it serves metrics.
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "FACECHAIN_WORKER_METRICS_PORT": str(port),
                 "FACECHAIN_DATA_DIR": str(tmp_path / "data"), "FACECHAIN_BASE_MODEL": str(_found_model(tmp_path))},
            capture_output=True, text=True, cwd=tmp_path, timeout=120,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "cannot serve metrics" in line]
    assert errors == [
        f"facechain-bot: cannot serve metrics on port {port} (Address already in use); choose a free port in "
        "FACECHAIN_WORKER_METRICS_PORT, or leave it unset for no metrics endpoint"
    ]
    assert "Traceback" not in result.stderr


async def test_a_scrape_answers_without_the_queue_depths_while_redis_is_down() -> None:
    from redis.asyncio import Redis

    registry = CollectorRegistry()
    redis = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    server = MetricsServer(free_port(), "FACECHAIN_BOT_METRICS_PORT", registry=registry)
    try:
        with Registered(queue_depth_gauge(redis, ["train"], asyncio.get_running_loop()), registry=registry):
            url = f"http://127.0.0.1:{server.port}/metrics"
            text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=30).read().decode())
        assert "# TYPE facechain_queue_depth gauge" in text
        assert 'facechain_queue_depth{queue="train"}' not in text, "no stale or made-up value"
    finally:
        server.close()
        await redis.aclose()


def test_the_run_id_follows_work_into_pool_threads_only_when_handed_over() -> None:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    handler.addFilter(RunIdFilter())
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    log = logging.getLogger("facechain.test.runlog")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        with ThreadPoolExecutor(2) as pool, run_context("g-run-1"):
            log.info("in the job")
            list(pool.map(in_this_context(lambda n: log.info("ranked %d", n)), range(4)))
            pool.submit(log.info, "not handed over").result()
        log.info("after the job")
    finally:
        log.removeHandler(handler)
    seen = [(r.getMessage(), r.run_id) for r in records]  # type: ignore[attr-defined]
    assert seen[0] == ("in the job", "g-run-1")
    assert sorted(seen[1:5]) == [(f"ranked {n}", "g-run-1") for n in range(4)], "pool threads, handed over"
    assert seen[5:] == [("not handed over", "-"), ("after the job", "-")]
    assert " facechain.test.runlog run=g-run-1: in the job" in handler.format(records[0])
    assert " facechain.test.runlog: after the job" in handler.format(records[-1])
