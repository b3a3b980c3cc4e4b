"""The command line as an operator uses it: doctor, models make-tiny, and script-mode train/generate."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from bot.cli import main
from tests.conftest import TINY_SCRIPT_SETTINGS, set_settings
from tests.pipeline import photos


@pytest.fixture
def env(cli_env: Path) -> Path:
    return cli_env


def test_help_names_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for command in ("bot", "worker", "up", "doctor", "models", "styles", "train", "generate"):
        assert f"    {command} " in out
    assert "discord-sync\n                upload the Discord slash commands" in out
    assert "    styles      list the styles (built-in and FACECHAIN_STYLES_DIR)\n" in out


def test_a_commands_help_shows_its_description(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["up", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "Start the bot and a worker as child processes" in out
    assert "--grace GRACE seconds a child has to stop" in out


def test_doctor_passes_on_a_bot_machine_with_redis(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--no-gpu"]) == 0
    out = capsys.readouterr().out
    assert "[ ok ] redis" in out and "[ ok ] database" in out and "[ ok ] styles" in out
    assert "no token" in out, "a missing chat token is reported as a warning"


def test_doctor_fails_and_says_how_when_redis_is_down(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FACECHAIN_REDIS_URL", "redis://:hunter2@127.0.0.1:1/0")
    assert main(["doctor", "--no-gpu"]) == 1
    out = capsys.readouterr().out
    assert "[ ERR] redis" in out and "FACECHAIN_REDIS_URL" in out
    assert "hunter2" not in out, "the Redis password is never printed"


def test_doctor_without_a_redis_url_checks_what_up_needs_to_start_its_own(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FACECHAIN_REDIS_URL")
    monkeypatch.setenv("PATH", str(env / "bin"))  # no redis-server anywhere
    assert main(["doctor", "--no-gpu"]) == 1
    assert (
        "[ ERR] redis: FACECHAIN_REDIS_URL is not set and no Redis to use: install redis-server"
        in capsys.readouterr().out
    )
    (env / "bin").mkdir()
    (env / "bin" / "redis-server").write_text("#!/bin/sh\n")
    (env / "bin" / "redis-server").chmod(0o755)
    assert main(["doctor", "--no-gpu"]) == 0
    assert (
        "[ ok ] redis: FACECHAIN_REDIS_URL is not set: `facechain-bot up` starts a private one"
        in capsys.readouterr().out
    )


def test_doctor_fails_where_the_bot_would_refuse_its_styles_folder(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FACECHAIN_STYLES_DIR", str(env / "no-such-styles"))
    assert main(["doctor", "--no-gpu"]) == 1
    out = capsys.readouterr().out
    assert "[ ERR] styles" in out and "is not a directory: the bot refuses to start" in out


def test_doctor_fails_when_the_device_the_settings_name_is_not_there(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """This machine has no CUDA device (the GPU tests run elsewhere): the worker would refuse to start."""
    monkeypatch.setenv("FACECHAIN_DEVICE", "cuda")
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "[ ERR] gpu: FACECHAIN_DEVICE=cuda but torch" in out and "sees no CUDA device" in out


def test_script_mode_on_a_missing_device_names_the_device_not_the_stages(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "make-tiny", str(env / "tiny")]) == 0
    tiny = {"MODELS_DIR": str(env / "tiny"), "BASE_MODEL": str(env / "tiny" / "tiny-sd")}
    set_settings(monkeypatch, {**tiny, **TINY_SCRIPT_SETTINGS, "DEVICE": "cuda"})
    shots = photos.photo_folder(env / "shots")
    capsys.readouterr()
    assert main(["train", str(shots), "--name", "me", "--subject", "woman"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("facechain-bot train: FACECHAIN_DEVICE=cuda but torch") and "models fetch" not in err, err


def test_doctor_reports_a_missing_base_model(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "[ ERR] base model" in out and "models fetch" in out
    assert "[warn] style LoRAs: 6 of 6 style LoRAs missing (fairy_tale, film_retro, hanfu," in out


def test_doctor_finds_every_style_lora_that_make_tiny_wrote(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "make-tiny", str(env / "models")]) == 0
    capsys.readouterr()
    main(["doctor"])
    assert "[ ok ] style LoRAs: 6 of 12 styles have a LoRA, all present" in capsys.readouterr().out


def test_doctor_says_when_compiled_kernels_would_not_survive_a_restart(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    main(["doctor"])
    out = capsys.readouterr().out
    assert "[warn] compile" in out and "TORCHINDUCTOR_CACHE_DIR is unset" in out

    cache = env / "inductor"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(cache))
    main(["doctor"])
    out = capsys.readouterr().out
    assert "[ ok ] compile" in out and str(cache) in out and cache.is_dir()

    monkeypatch.setenv("PATH", str(env / "empty-path"))
    monkeypatch.delenv("CC", raising=False)
    main(["doctor"])
    assert "no C compiler" in capsys.readouterr().out


def test_the_bot_refuses_to_start_without_any_platform(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bot"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "FACECHAIN_TELEGRAM_TOKEN" in err


@pytest.mark.slow
def test_script_mode_trains_and_generates_with_a_tiny_model(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "make-tiny", str(env / "tiny")]) == 0
    tiny = {"MODELS_DIR": str(env / "tiny"), "BASE_MODEL": str(env / "tiny" / "tiny-sd")}
    set_settings(monkeypatch, {**tiny, **TINY_SCRIPT_SETTINGS})
    shots = photos.photo_folder(env / "shots")
    (shots / "notes.txt").write_text("not a photo, and ignored")
    assert main(["train", str(shots), "--name", "eileen", "--subject", "woman"]) == 0
    assert "trained 'eileen' on 3 photos" in capsys.readouterr().out

    out = env / "out"
    assert main(["generate", "eileen", "--style", "watercolor", "--count", "2", "--seed", "5", "--out", str(out)]) == 0
    written = sorted(out.glob("*.jpg"))
    assert [p.name for p in written] == ["eileen-watercolor-0-seed5.jpg", "eileen-watercolor-1-seed6.jpg"]
    assert Image.open(written[0]).size == (64, 64)
    left = list((env / "data" / "blobs" / "runs").rglob("*.jpg"))
    assert left == [], "the portraits are in OUT, not kept twice (the training's LoRA and template stay)"


def test_make_tiny_writes_into_the_folder_given_and_prints_the_settings(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "make-tiny"]) == 2, "no DIR: random weights never land in the real models folder"
    assert (
        capsys.readouterr().err
        == "facechain-bot models make-tiny: one DIR, a folder of their own, e.g. ./models-tiny\n"
    )
    assert not (env / "models" / "tiny-sd").exists()
    assert main(["models", "make-tiny", str(env / "models")]) == 0
    out = capsys.readouterr().out
    models = (env / "models").resolve()
    assert (models / "tiny-sd" / "model_index.json").is_file()
    assert (models / "ly261666" / "civitai_xiapei_lora" / "xiapei.safetensors").is_file()
    assert f"  FACECHAIN_MODELS_DIR={models}\n" in out and f"  FACECHAIN_BASE_MODEL={models / 'tiny-sd'}\n" in out
    assert out.count("wrote a tiny LoRA for style ") == 6

    assert main(["models", "make-tiny", "a", "--dir", "b"]) == 2
    assert capsys.readouterr().err == "facechain-bot models make-tiny: one DIR, not 2: a b\n"


def test_styles_lists_the_catalogue_and_names_a_refused_style_file(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    styles = env / "styles"
    styles.mkdir()
    (styles / "sneaky.toml").write_text('name = "sneaky"\nprompt = "p"\nlora = "../../../etc/passwd"\n')
    (styles / "mine.toml").write_text('name = "mine"\nprompt = "p"\n')
    monkeypatch.setenv("FACECHAIN_STYLES_DIR", str(styles))

    assert main(["styles"]) == 0
    captured = capsys.readouterr()
    assert "mine " in captured.out and "hanfu " in captured.out and "sneaky" not in captured.out
    [line] = captured.err.splitlines()
    assert line.startswith(f"style file refused: {styles / 'sneaky.toml'}: lora '../../../etc/passwd' refused")


def test_generate_for_an_unknown_name_says_how_to_train(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "nobody", "--style", "watercolor", "--out", str(env / "o")]) == 2
    assert "facechain-bot train" in capsys.readouterr().err


@pytest.mark.parametrize(("unet", "training", "needs_compiler"), [("off", "off", False), ("off", "on", True)])
def test_doctor_asks_for_a_compiler_while_either_compile_is_on(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], unet: str, training: str,
    needs_compiler: bool,
) -> None:  # fmt: skip
    monkeypatch.setenv("FACECHAIN_TORCH_COMPILE", unet)
    monkeypatch.setenv("FACECHAIN_TRAIN_COMPILE", training)
    monkeypatch.setenv("PATH", str(env / "empty-path"))
    monkeypatch.delenv("CC", raising=False)
    main(["doctor"])
    out = capsys.readouterr().out
    assert ("no C compiler" in out) is needs_compiler
    assert ("FACECHAIN_TRAIN_COMPILE=off: the UNet runs uncompiled" in out) is not needs_compiler


def test_doctor_warns_when_a_worker_would_compile_its_imports_at_every_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    import compileall
    import sys

    from bot.doctor import _check_bytecode

    package = tmp_path / "site" / "heavypkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(sys, "pycache_prefix", None)

    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    assert asyncio.run(_check_bytecode(("heavypkg",))).ok  # the first start writes it

    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # PYTHONDONTWRITEBYTECODE=1, as in many images
    check = asyncio.run(_check_bytecode(("heavypkg",)))
    assert not check.ok and not check.required
    assert "heavypkg" in check.detail and "compileall" in check.detail and "PYTHONPYCACHEPREFIX" in check.detail

    assert compileall.compile_dir(str(package), quiet=1)
    assert asyncio.run(_check_bytecode(("heavypkg",))).ok


@pytest.mark.parametrize("grace", ["-5", "nan", "inf", "soon"])
def test_up_refuses_a_grace_period_that_is_no_number_of_seconds(grace: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["up", "--grace", grace])
    assert exited.value.code == 2
    assert "--grace" in capsys.readouterr().err
