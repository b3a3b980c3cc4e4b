"""``facechain-bot doctor``: check what this machine needs and say how to fix what is missing."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from pydantic import ValidationError

from bot.errors import redacted_url
from bot.settings_loader import describe
from storage.files import make_private_dirs

if TYPE_CHECKING:
    from bot.config import BotSettings
    from pipeline.config import WorkerSettings

S = TypeVar("S")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    #: A failed optional check is a warning; a failed required one makes doctor exit 1.
    required: bool = True

    def line(self) -> str:
        mark = "ok " if self.ok else ("ERR" if self.required else "warn")
        return f"[{mark:>4}] {self.name}: {self.detail}"


async def _guard(name: str, probe: Callable[[], Awaitable[Check]], required: bool = True) -> Check:
    try:
        return await probe()
    except Exception as exc:
        return Check(name, False, f"{type(exc).__name__}: {str(exc)[:600]}", required)


def _load_settings(name: str, load: Callable[[], S], checks: list[Check]) -> S | None:
    """Settings read from the environment, with a check line saying whether they loaded; None if not."""
    try:
        settings = load()
    except ValidationError as exc:
        checks.append(Check(name, False, describe(exc)))
        return None
    checks.append(Check(name, True, "loaded"))
    return settings


async def run_doctor(*, gpu: bool = True, print_line: Callable[[str], None] = print) -> int:
    """Run every check, print one line each; return the exit code (1 if a required check failed)."""
    from bot.config import BotSettings
    from pipeline.config import WorkerSettings

    checks: list[Check] = []
    bot_settings = _load_settings("bot settings", BotSettings, checks)
    worker_settings = _load_settings("worker settings", WorkerSettings, checks)

    if bot_settings is not None:
        platforms = [
            name
            for name, token in (
                ("telegram", bot_settings.telegram_token),
                ("discord", bot_settings.discord_token),
            )
            if token is not None
        ]
        checks.append(
            Check(
                "chat platforms",
                bool(platforms),
                ", ".join(platforms)
                if platforms
                else "no token: set FACECHAIN_TELEGRAM_TOKEN or FACECHAIN_DISCORD_TOKEN",
                required=False,
            )
        )
        if "redis_url" in bot_settings.model_fields_set:
            checks.append(await _guard("redis", lambda: _check_redis(str(bot_settings.redis_url))))
        else:
            checks.append(_check_private_redis(str(bot_settings.redis_url)))
        checks.append(await _guard("database", lambda: _check_database(bot_settings.database_path)))
        checks.append(await _guard("blob store", lambda: _check_blob_store(bot_settings)))
        checks.append(await _guard("styles", lambda: _check_styles(bot_settings.styles_dir, bot_settings.models_dir)))

    if gpu and worker_settings is not None:
        checks.append(await _guard("gpu", lambda: _check_gpu(worker_settings), required=False))
        checks.append(await _guard("base model", lambda: _check_base_model(worker_settings)))
        checks.append(await _guard("face backend", lambda: _check_faces(worker_settings)))
        checks.append(await _guard("style LoRAs", lambda: _check_style_loras(worker_settings), required=False))
        checks += await asyncio.to_thread(stage_checks, worker_settings)
        checks.append(await _guard("compile", lambda: _check_compile(worker_settings), required=False))
        checks.append(await _guard("bytecode", _check_bytecode, required=False))

    for check in checks:
        print_line(check.line())
    failed = [c for c in checks if c.required and not c.ok]
    print_line("all required checks passed" if not failed else f"{len(failed)} required check(s) failed")
    return 1 if failed else 0


def _check_private_redis(default_url: str) -> Check:
    """FACECHAIN_REDIS_URL unset: ``up`` starts a private Redis (``bot`` and ``worker`` alone use the default)."""
    from bot.errors import NO_REDIS

    server = shutil.which("redis-server")
    if server is None:
        return Check("redis", False, f"FACECHAIN_REDIS_URL is not set and {NO_REDIS}")
    return Check(
        "redis",
        True,
        f"FACECHAIN_REDIS_URL is not set: `facechain-bot up` starts a private one ({server}); "
        f"`bot` and `worker` alone use {redacted_url(default_url)}",
    )


async def _check_redis(url: str) -> Check:
    from redis.asyncio import Redis

    from pipeline import jobs

    client = Redis.from_url(
        url, socket_connect_timeout=jobs.REDIS_CONNECT_TIMEOUT_S, socket_timeout=jobs.REDIS_COMMAND_TIMEOUT_S
    )
    try:
        await client.ping()
        info = await client.info("server")
        return Check("redis", True, f"{redacted_url(url)} answers (redis {info.get('redis_version', '?')})")
    except Exception as exc:
        where = redacted_url(url)
        return Check("redis", False, f"{where} does not answer ({exc}); start redis or fix FACECHAIN_REDIS_URL")
    finally:
        await client.aclose()


async def _check_database(path: Path) -> Check:
    from storage.db import open_database, schema_version

    db = await open_database(path)
    try:
        version = await schema_version(db.conn)
    finally:
        await db.close()
    return Check("database", True, f"{path} (schema version {version})")


async def _check_blob_store(settings: BotSettings) -> Check:
    """The local folder is writable, or the bucket takes, returns and deletes a probe blob."""
    if settings.blob_url is None:
        return await _check_writable(settings.blob_dir)
    from storage.blob_config import open_blob_store

    def probe() -> str:
        store = open_blob_store(settings, settings.data_dir, retry_timeout_s=10)
        key = f"doctor/probe-{os.getpid()}"
        store.put_bytes(key, b"facechain-bot doctor")
        try:
            if store.get_bytes(key) != b"facechain-bot doctor":
                raise RuntimeError("the probe blob came back different")
        finally:
            store.delete(key)
        return store.location

    try:
        location = await asyncio.wait_for(asyncio.to_thread(probe), 30)
    except Exception as exc:
        return Check(
            "blob store", False,
            f"{settings.blob_url}: {type(exc).__name__}: {_first_line(exc)}; check FACECHAIN_BLOB_URL, "
            "FACECHAIN_S3_ENDPOINT_URL, the credentials and that the bucket exists",
        )  # fmt: skip
    return Check("blob store", True, f"{location}: a probe blob was written, read and deleted")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else ""


async def _check_writable(directory: Path) -> Check:
    """``directory`` exists (made if needed) and a file can be written in it; raises otherwise."""

    def probe() -> None:
        make_private_dirs(directory)
        with tempfile.NamedTemporaryFile(dir=directory):
            pass

    await asyncio.to_thread(probe)
    return Check("blob store", True, f"{directory} is writable")


async def _check_gpu(settings: WorkerSettings) -> Check:
    if importlib.util.find_spec("torch") is None:
        return Check("gpu", False, "torch is not installed: pip install 'facechain-bot[gpu]'", required=False)
    import torch

    from pipeline.devices import DeviceUnavailable, pick_device

    try:
        pick_device(settings)
    except DeviceUnavailable as exc:
        # A device the settings name is required: the worker refuses to start without it.
        return Check("gpu", False, str(exc))

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return Check("gpu", True, ", ".join(names))
    return Check("gpu", False, "no CUDA device: a worker here runs on the CPU (very slow)", required=False)


async def _check_base_model(settings: WorkerSettings) -> Check:
    if importlib.util.find_spec("diffusers") is None:
        return Check("base model", False, "diffusers is not installed: pip install 'facechain-bot[gpu]'")
    from pipeline.models import resolve_base_model

    path = await asyncio.to_thread(resolve_base_model, settings)
    return Check("base model", True, str(path))


async def _check_faces(settings: WorkerSettings) -> Check:
    if importlib.util.find_spec("cv2") is None:
        return Check("face backend", False, "OpenCV is not installed: pip install 'facechain-bot[faces]'")
    from pipeline.faces import load_face_analyzer

    analyzer = await asyncio.to_thread(load_face_analyzer, settings)
    return Check("face backend", True, type(analyzer).__name__)


def stage_checks(settings: WorkerSettings) -> list[Check]:
    """One line per FaceChain stage: enabled or not, its model's files present, its runtime importable.

    A stage that must run and cannot is an error (the worker would not start); a stage on ``auto``
    whose files are absent is a warning (it stays off, and runs say so).
    """
    from pipeline.stage_models import SWITCHED_STAGES, import_failures, stage_plan

    checks = []
    for status in stage_plan(settings):
        model = status.model
        name = f"stage {model.stage}"
        if not status.selected:
            if model.role == "default" and model.stage in SWITCHED_STAGES:
                checks.append(Check(name, True, f"off (FACECHAIN_{model.setting.upper()}=off)", required=False))
            continue
        files = "files present" if status.present else f"files missing ({status.missing_files[0]})"
        failures = import_failures(model) if status.present else []
        runtime = "runtime importable" if not failures and not status.missing_imports else (
            "runtime not importable: " + "; ".join(failures or status.missing_imports)
        )  # fmt: skip
        detail = f"{model.name} ({model.runtime}): {files}, {runtime}"
        if status.present and not failures and not status.missing_imports:
            checks.append(Check(name, True, f"{model.name} enabled: {files}, {runtime}"))
        elif not status.present and not status.required:
            hint = f"stays off until `facechain-bot models fetch {model.name}`"
            checks.append(Check(name, False, f"{detail}; {hint}", required=False))
        else:
            fix = status.problem or "its runtime is installed but does not import: pip install 'facechain-bot[stages]'"
            checks.append(Check(name, False, f"{detail}; {fix.split('; ', 1)[-1]}"))
    return checks


__all__ = ["Check", "run_doctor"]


async def _check_compile(settings: WorkerSettings) -> Check:
    """torch.compile of the UNet needs a C compiler (Triton) and a cache that survives restarts."""
    if settings.torch_compile == "off" and settings.train_compile == "off":
        return Check(
            "compile",
            True,
            "FACECHAIN_TORCH_COMPILE=off, FACECHAIN_TRAIN_COMPILE=off: the UNet runs uncompiled",
            required=False,
        )
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return Check(
            "compile",
            False,
            "no C compiler: torch.compile cannot build its GPU kernels and the worker runs uncompiled "
            "(a /generate about 25% slower, training about 40%); install gcc, or set FACECHAIN_TORCH_COMPILE=off "
            "and FACECHAIN_TRAIN_COMPILE=off",
            required=False,
        )
    cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not cache:
        return Check(
            "compile",
            False,
            f"compiler {compiler}, but TORCHINDUCTOR_CACHE_DIR is unset: compiled kernels go to /tmp and "
            "every restart compiles again (minutes); point it at a persistent folder",
            required=False,
        )
    await _check_writable(Path(cache))
    return Check("compile", True, f"compiler {compiler}, compile cache {cache} (writable)", required=False)


#: The packages whose imports are most of a worker's start (torch alone is thousands of modules).
WORKER_PACKAGES = ("torch", "diffusers", "transformers", "sympy")


async def _check_bytecode(packages: tuple[str, ...] = WORKER_PACKAGES) -> Check:
    """Python's compiled bytecode for the worker's big packages is there, or Python can write it.

    Without either, every worker start compiles them from source again: on an H200 a restart's
    imports took 11-15 s instead of 6 s (docs/benchmarks.md).
    """
    checked, missing = await asyncio.to_thread(_find_uncompiled, packages)
    if missing:
        return Check(
            "bytecode",
            False,
            f"no compiled bytecode for {', '.join(missing)}, and Python cannot write it here "
            "(PYTHONDONTWRITEBYTECODE or a read-only folder): every worker start compiles them again "
            "(seconds); run `python -m compileall -q -j 0 <site-packages>` once, or set "
            "PYTHONPYCACHEPREFIX to a writable folder that persists",
            required=False,
        )
    return Check("bytecode", True, "compiled or writable: " + (", ".join(checked) or "none installed"), required=False)


def _find_uncompiled(packages: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(installed packages looked at, those whose bytecode is neither there nor writable)."""
    checked, missing = [], []
    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            continue
        checked.append(name)
        cached = Path(importlib.util.cache_from_source(spec.origin))
        if cached.is_file():
            continue
        writable_at = cached.parent if cached.parent.exists() else cached.parent.parent
        if not sys.dont_write_bytecode and os.access(writable_at, os.W_OK):
            continue  # written by the first start
        missing.append(name)
    return checked, missing


async def _check_styles(styles_dir: Path | None, models_dir: Path | None) -> Check:
    """The style catalogue loads: FACECHAIN_STYLES_DIR, when set, is a folder (else the bot refuses to start)."""
    from pipeline.styles import StyleFileError, load_catalogue

    try:
        catalogue = load_catalogue(styles_dir, models_dir)
    except StyleFileError as exc:
        return Check("styles", False, f"{exc}: the bot refuses to start; create it or fix the setting")
    refused = len(catalogue.refused)
    named = f"; {refused} file(s) refused: `facechain-bot styles` names them" if refused else ""
    return Check("styles", True, f"{len(catalogue.styles)} styles{named}")


async def _check_style_loras(settings: WorkerSettings) -> Check:
    """Every style's LoRA is on this worker (a missing one fails that style's requests, not the worker)."""
    from pipeline.models import ModelsMissingError, StyleLoraRefused, resolve_style_lora
    from pipeline.styles import load_catalogue

    catalogue = load_catalogue(settings.styles_dir, settings.models_dir)
    missing: list[str] = []
    for name, style in catalogue.styles.items():
        try:
            if style.lora is not None:
                resolve_style_lora(settings, name, style.lora)
        except (ModelsMissingError, StyleLoraRefused):
            missing.append(name)
    with_lora = sum(1 for style in catalogue.styles.values() if style.lora)
    problems = []
    if missing:
        problems.append(
            f"{len(missing)} of {with_lora} style LoRAs missing ({', '.join(missing)}): "
            "run `facechain-bot models fetch` (those styles fail until then)"
        )
    if catalogue.refused:
        problems.append(f"{len(catalogue.refused)} style file(s) refused: `facechain-bot styles` names them")
    if problems:
        return Check("style LoRAs", False, "; ".join(problems), required=False)
    return Check("style LoRAs", True, f"{with_lora} of {len(catalogue.styles)} styles have a LoRA, all present")
