"""Operator and user mistakes at the command line: one line on stderr, exit code 2, never a traceback.

Each case runs the real ``facechain-bot`` as a separate process (tests/cli_process.py), as an operator
would meet it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.errors import operator_message
from bot.up import free_port
from tests.cli_process import ROOT, assert_one_line_exit_2, cli_environment, run_cli


@pytest.mark.parametrize("count", ["0", "1000", "many"])
def test_generate_refuses_a_count_out_of_range(tmp_path: Path, redis_url: str, count: str) -> None:
    result = run_cli(
        ["generate", "alice", "--count", count, "--out", "out"], cli_environment(tmp_path, redis_url), tmp_path
    )
    line = assert_one_line_exit_2(result, "--count", count)
    assert "from 1 to 10" in line or "whole number" in line
    assert not (tmp_path / "out").exists(), "nothing was started"


@pytest.mark.parametrize("argv", [["models", "list", "--every"], ["train", "photos", "--name", "me", "--stepz", "5"]])
def test_an_unknown_flag_is_named_with_the_command_whose_help_lists_the_right_ones(
    tmp_path: Path, redis_url: str, argv: list[str]
) -> None:
    result = run_cli(argv, cli_environment(tmp_path, redis_url), tmp_path)
    line = assert_one_line_exit_2(result, f"unrecognized arguments: {argv[-1] if argv[0] == 'models' else '--stepz 5'}")
    assert line.startswith(f"facechain-bot {argv[0]}: ") and f"see facechain-bot {argv[0]} --help" in line


#: What a setting that does not parse adds to the line naming it.
INVALID = "invalid configuration"


@pytest.mark.parametrize(
    ("command", "setting", "value", "expected"),
    [
        ("worker", "queues", "trian", ("FACECHAIN_QUEUES", INVALID)),
        ("worker", "device", "gpu7", ("FACECHAIN_DEVICE", INVALID)),
        ("worker", "redis_url", "http://127.0.0.1:6379/0", ("FACECHAIN_REDIS_URL", INVALID)),
        ("worker", "max_train_steps", "lots", ("FACECHAIN_MAX_TRAIN_STEPS", INVALID)),
        ("bot", "telegram_webhook_listen", "8443", ("FACECHAIN_TELEGRAM_WEBHOOK_LISTEN", INVALID)),
        ("bot", "discord_gateway_url", "ftp://gateway.example", ("FACECHAIN_DISCORD_GATEWAY_URL", INVALID)),
        ("bot", "min_photos", "0", ("FACECHAIN_MIN_PHOTOS", INVALID)),
        ("bot", "styles_dir", "/no/such/styles", ("FACECHAIN_STYLES_DIR /no/such/styles is not a directory",)),
    ],
)
def test_a_bad_setting_is_named_in_one_line_without_the_token(
    tmp_path: Path, redis_url: str, command: str, setting: str, value: str, expected: tuple[str, ...]
) -> None:
    token = "123456789:AAE-secret-value-0123456789abcdefghij"
    env = cli_environment(tmp_path, redis_url, telegram_token=token, **{setting: value})
    line = assert_one_line_exit_2(run_cli([command], env, tmp_path), *expected)
    assert "AAE-secret-value-0123456789" not in line


def test_a_bad_queues_flag_is_named_in_one_line(tmp_path: Path, redis_url: str) -> None:
    result = run_cli(["worker", "--queues", "train,paint"], cli_environment(tmp_path, redis_url), tmp_path)
    assert_one_line_exit_2(result, "--queues train,paint", "train,generate")


def test_the_worker_with_a_missing_model_says_how_to_fetch_it(tmp_path: Path, redis_url: str) -> None:
    result = run_cli(["worker"], cli_environment(tmp_path, redis_url), tmp_path)
    assert_one_line_exit_2(result, "base model", "not found", "facechain-bot models fetch", str(tmp_path / "models"))


@pytest.mark.parametrize("written", ["{tmp}/no/such/model", "./no-such-model", "~/no-such-model-here.safetensors"])
def test_a_base_model_path_that_does_not_exist_is_read_as_a_path(tmp_path: Path, redis_url: str, written: str) -> None:
    value = written.format(tmp=tmp_path)
    result = run_cli(["worker"], cli_environment(tmp_path, redis_url, base_model=value), tmp_path)
    line = assert_one_line_exit_2(result, f"FACECHAIN_BASE_MODEL={value}", "not found")
    assert "hf:" not in line and "modelscope:" not in line, "a path is never read as a hub id"


def test_a_cuda_device_without_cuda_is_one_line(tmp_path: Path, redis_url: str) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    tiny = tmp_path / "tiny"
    (tiny / "unet").mkdir(parents=True)
    (tiny / "model_index.json").write_text("{}")  # found as a model; the device is checked next
    env = cli_environment(tmp_path, redis_url, base_model=str(tiny), device="cuda:1")
    assert_one_line_exit_2(run_cli(["worker"], env, tmp_path), "FACECHAIN_DEVICE=cuda:1", "no CUDA device")


def test_script_mode_reports_a_missing_model_in_one_line(tmp_path: Path, redis_url: str) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"not really a photo")
    env = cli_environment(tmp_path, redis_url, base_model=str(tmp_path / "absent"))
    result = run_cli(["train", str(photos), "--name", "alice", "--subject", "woman"], env, tmp_path)
    assert_one_line_exit_2(result, "facechain-bot train:", "not found")


def test_a_telegram_network_failure_names_the_url_but_not_the_token(tmp_path: Path, redis_url: str) -> None:
    token = "123456789:AAE-never-printed-token-0123456789abc"
    api = f"http://127.0.0.1:{free_port()}"
    env = cli_environment(tmp_path, redis_url, telegram_token=token, telegram_api_url=api)
    process = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "bot"], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    seen: list[str] = []
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            seen.append(line)
            if "not reachable" in line:
                break
    finally:
        process.terminate()
        process.wait(30)
    warning = next((line for line in seen if "not reachable" in line), None)
    assert warning is not None, seen
    assert f"the Bot API at {api} is not reachable" in warning and "retrying" in warning
    assert token not in "".join(seen) and "AAE-never" not in "".join(seen)
    assert str(ROOT) not in warning


@pytest.fixture
def unix_redis(tmp_path: Path) -> Iterator[Path]:
    """A redis-server of this test's own, listening on a Unix socket only."""
    sock = tmp_path / "redis.sock"
    server = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", str(sock), "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        yield sock
    finally:
        server.terminate()
        server.wait(10)


@pytest.mark.parametrize("scheme", ["redis", "rediss", "unix"])
def test_redis_urls_take_every_scheme_arq_reads(scheme: str) -> None:
    from arq.connections import RedisSettings

    from bot.config import BotSettings
    from pipeline.config import WorkerSettings

    url = "unix:///run/redis/redis.sock?db=2" if scheme == "unix" else f"{scheme}://:pw@redis.example:6380/3"
    for cls in (BotSettings, WorkerSettings):
        settings = cls(_env_file=None, redis_url=url)  # type: ignore[call-arg]
        parsed = RedisSettings.from_dsn(settings.redis_url)
        assert parsed.ssl is (scheme == "rediss")
        assert parsed.unix_socket_path == ("/run/redis/redis.sock" if scheme == "unix" else None)


def test_a_unix_socket_redis_is_reached_by_doctor_and_the_queue(
    unix_redis: Path, tmp_path: Path, redis_url: str
) -> None:
    url = f"unix://{unix_redis}"
    result = run_cli(["doctor", "--no-gpu"], cli_environment(tmp_path, url), tmp_path)
    assert "[ ok ] redis" in result.stdout, result.stdout

    import asyncio

    from bot.queue import create_redis

    async def ping() -> bool:
        pool = await create_redis(url)
        try:
            return bool(await pool.ping())
        finally:
            await pool.aclose()

    assert asyncio.run(ping())


@pytest.mark.parametrize(
    ("value", "queues"),
    [("train,generate", ["train", "generate"]), ("generate", ["generate"]), ('["train"]', ["train"])],
)
def test_queues_are_written_comma_separated(value: str, queues: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.settings_loader import load_settings
    from pipeline.config import WorkerSettings

    monkeypatch.setenv("FACECHAIN_QUEUES", value)
    assert load_settings(WorkerSettings).queues == queues


def test_make_tiny_into_a_folder_that_cannot_exist_is_one_line(tmp_path: Path, redis_url: str) -> None:
    result = run_cli(["models", "make-tiny", "/proc/no-such/tiny"], cli_environment(tmp_path, redis_url), tmp_path)
    assert_one_line_exit_2(result, "cannot write or read /proc/no-such", "No such file or directory")


def test_a_gpu_side_command_on_a_bot_only_install_says_what_to_install() -> None:
    missing = ModuleNotFoundError("No module named 'torch'", name="torch")
    line = operator_message(missing)
    assert line is not None and "no torch" in line and "'.[gpu,faces,stages]'" in line
    assert operator_message(ModuleNotFoundError("No module named 'yaml'", name="yaml")) is None, "a bug, not a setup"


def test_a_redis_that_refuses_the_password_is_one_line_not_an_endless_reconnect(tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--requirepass", "the-right-one", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(50):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.1)
        env = {**cli_environment(tmp_path, redis_url), "FACECHAIN_REDIS_URL": f"redis://:hunter2@127.0.0.1:{port}/0"}
        result = run_cli(["worker"], env, tmp_path)
        line = assert_one_line_exit_2(result, "refuses this login", "fix the password in FACECHAIN_REDIS_URL")
        assert "hunter2" not in line
    finally:
        server.terminate()
        server.wait(10)
