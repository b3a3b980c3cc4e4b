"""Every style of the catalogue generates on the tiny route, with no download: the built-ins and one style
file from FACECHAIN_STYLES_DIR with its own LoRA, in script mode (the real CLI) and through a real arq
worker. A style whose LoRA file is missing is named with `models fetch`, in the CLI (one line, exit 2)
and in chat, and the run is not charged.

The models come from ``facechain-bot models make-tiny`` and the settings it prints, as the README's
tiny route says; Redis, SQLite, arq and the stages are real.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.cli import main
from bot.core.events import Command
from bot.core.limits import Limits
from bot.core.replies import Photos, ProgressMessage, Reply, Text
from bot.queue import ArqJobQueue, build_outcome_worker, create_redis
from bot.service import ConversationService, Origin
from bot.styles import load_catalog
from pipeline import jobs
from pipeline.config import WorkerSettings
from pipeline.models import model_file_path
from pipeline.runner import PipelineRunner
from pipeline.styles import load_catalogue
from pipeline.worker import run_worker
from storage.blobs import LocalBlobStore
from storage.db import open_database
from storage.models import Delivery, Platform, RunStatus
from storage.repositories import Repositories
from tests.pipeline import photos
from tests.pipeline.outcomes import received_outcomes
from tests.pipeline.tiny import kohya_lora_file, random_lora_file

pytestmark = pytest.mark.slow

#: An operator's style file with its own LoRA beside it (a path relative to the style file).
NEON_NOIR = """\
name = "neon_noir"
title = "Neon noir"
description = "Rain, neon and long shadows."
prompt = "film noir portrait, rain-soaked street, neon signs, long shadows"
lora = "loras/noir.safetensors"
style_weight = 0.3
"""
#: The tiny route's speed knobs (the route's own settings come from make-tiny's output).
FAST = {
    "FACECHAIN_DEVICE": "cpu",
    "FACECHAIN_DTYPE": "fp32",
    "FACECHAIN_RESOLUTION": "64",
    "FACECHAIN_INFERENCE_STEPS": "2",
    "FACECHAIN_MAX_TRAIN_STEPS": "2",
    "FACECHAIN_CANDIDATES": "1",
    "FACECHAIN_POST_THREADS": "1",
}


@dataclass
class Route:
    """A tiny route as an operator sets it up: make-tiny's folder and printed settings, a styles folder."""

    root: Path
    models: Path
    styles: Path
    env: dict[str, str]

    def apply(self, monkeypatch: pytest.MonkeyPatch, data: Path | None = None) -> WorkerSettings:
        for name in [n for n in os.environ if n.startswith("FACECHAIN_")]:
            monkeypatch.delenv(name)
        monkeypatch.chdir(self.root)
        for name, value in self.env.items():
            monkeypatch.setenv(name, value)
        if data is not None:
            monkeypatch.setenv("FACECHAIN_DATA_DIR", str(data))
        return WorkerSettings()


@pytest.fixture(scope="module")
def route(tmp_path_factory: pytest.TempPathFactory, tiny_pipe: object) -> Iterator[Route]:
    root = tmp_path_factory.mktemp("every_style")
    styles = root / "styles"
    (styles / "loras").mkdir(parents=True)
    (styles / "neon_noir.toml").write_text(NEON_NOIR)
    kohya_lora_file(tiny_pipe, styles / "loras" / "noir.safetensors", seed=9)  # shaped for the tiny model
    env = {**FAST, "FACECHAIN_DATA_DIR": str(root / "data"), "FACECHAIN_STYLES_DIR": str(styles)}
    route = Route(root, root / "models", styles, env)
    with pytest.MonkeyPatch.context() as monkeypatch:
        route.apply(monkeypatch)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert main(["models", "make-tiny", str(route.models)]) == 0
    # The settings make-tiny tells the operator to use, taken from its output.
    for line in printed.getvalue().splitlines():
        if line.startswith("  FACECHAIN_"):
            name, _, value = line.strip().partition("=")
            env[name] = value
    assert env["FACECHAIN_MODELS_DIR"] == str(route.models.resolve()), printed.getvalue()
    yield route


@pytest.fixture(scope="module")
def trained(route: Route) -> str:
    """A person trained in script mode on the tiny route."""
    shots = photos.photo_folder(route.root / "shots")
    with pytest.MonkeyPatch.context() as monkeypatch:
        route.apply(monkeypatch)
        assert main(["train", str(shots), "--name", "eve", "--subject", "woman"]) == 0
    return "eve"


@contextlib.contextmanager
def lora_hidden(route: Route, style: str) -> Iterator[Path]:
    """The style's LoRA file moved away for the block (as if `models fetch` never ran for it)."""
    reference = load_catalogue(route.styles, route.models).styles[style].lora
    assert reference is not None
    path = model_file_path(route.models, reference)
    aside = path.with_name(path.name + ".aside")
    path.rename(aside)
    try:
        yield path
    finally:
        aside.rename(path)


def _catalogue(route: Route) -> list[str]:
    names = list(load_catalogue(route.styles, route.models).styles)
    assert "neon_noir" in names and {"hanfu", "fairy_tale", "wedding", "winter_snow"} <= set(names)
    return names


# ------------------------------------------------------------------------------------- script mode
def test_script_mode_generates_in_every_style_of_the_catalogue(
    route: Route, trained: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    route.apply(monkeypatch)
    out = route.root / "out"
    failed: dict[str, str] = {}
    for style in _catalogue(route):
        code = main(["generate", trained, "--style", style, "--count", "1", "--seed", "1", "--out", str(out)])
        err = capsys.readouterr().err
        if code != 0 or not (out / f"{trained}-{style}-0-seed1.jpg").is_file():
            failed[style] = f"exit {code}: {err[-400:]}"
    assert not failed, failed


def test_script_mode_names_a_style_whose_lora_is_missing_in_one_line_exit_2(
    route: Route, trained: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    route.apply(monkeypatch)
    capsys.readouterr()
    with lora_hidden(route, "hanfu") as missing:
        code = main(["generate", trained, "--style", "hanfu", "--count", "1", "--out", str(route.root / "o2")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "style 'hanfu'" in err and "facechain-bot models fetch" in err and str(missing) in err


# ------------------------------------------------------------------------------------- the worker
async def test_the_worker_generates_in_every_style_of_the_catalogue(
    route: Route, redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_pipe: object
) -> None:
    settings = route.apply(monkeypatch, data=tmp_path / "data")
    monkeypatch.setenv("FACECHAIN_REDIS_URL", redis_url)
    monkeypatch.setenv("FACECHAIN_QUEUES", '["generate"]')
    settings = WorkerSettings()
    blobs = LocalBlobStore(settings.blob_dir)
    blobs.put_file("runs/t-every-001/face_lora.safetensors", random_lora_file(tiny_pipe, tmp_path / "f.safetensors", 4))
    # The specs exactly as the bot sends them: its catalogue, and a community style an admin uploaded.
    specs = [entry.spec for entry in load_catalog(route.styles, route.models).values()]
    upload = "communities/1/styles/glow-0123456789abcdef.safetensors"
    blobs.put_file(upload, kohya_lora_file(tiny_pipe, tmp_path / "glow.safetensors", seed=12))
    specs.append(jobs.StyleSpec(name="glow", prompt="soft glow", lora_key=upload))
    assert sum(1 for s in specs if s.lora) == 7

    redis = await create_redis(redis_url)
    try:
        queue = ArqJobQueue(redis)
        for i, spec in enumerate(specs):
            request = jobs.GenerateRequest(
                run_id=f"g-every-{i:03d}", user_id=1, model_id=1, lora_key="runs/t-every-001/face_lora.safetensors",
                trigger="<fcsks>, a beautiful woman", style=spec, count=1, candidates=1, seed=5,
            )  # fmt: skip
            await queue.submit(request, attempt=1)
        await asyncio.wait_for(run_worker(settings, burst=True), 240)  # the worker loads its models itself
        outcomes = await received_outcomes(redis_url)
    finally:
        await redis.aclose()

    by_style = {o.style: o for o in outcomes if isinstance(o, jobs.GenerateOutcome)}
    assert set(by_style) == {s.name for s in specs}
    failed = {name: (o.error, o.message) for name, o in by_style.items() if not o.ok or len(o.portraits) != 1}
    assert not failed, failed
    for outcome in by_style.values():
        assert blobs.get_bytes(outcome.portraits[0].key)[:3] == b"\xff\xd8\xff"


# ------------------------------------------------------------------------------------------- chat
@dataclass
class Chat:
    """The platform edge: what the bot would send to the user's chat."""

    sent: list[Reply] = field(default_factory=list)

    async def deliver(self, delivery: Delivery, replies: Sequence[Reply]) -> Mapping[str, str]:
        self.sent.extend(replies)
        return {r.run_id: f"m-{r.run_id}" for r in replies if isinstance(r, ProgressMessage)}

    def texts(self) -> str:
        return "\n".join(r.text for r in self.sent if isinstance(r, Text))


async def test_a_missing_style_lora_is_told_in_chat_and_the_run_is_not_charged(
    route: Route, redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_pipe: object
) -> None:
    route.apply(monkeypatch, data=tmp_path / "data")
    monkeypatch.setenv("FACECHAIN_REDIS_URL", redis_url)
    monkeypatch.setenv("FACECHAIN_QUEUES", '["generate"]')
    settings = WorkerSettings()
    blobs = LocalBlobStore(settings.blob_dir)
    db = await open_database(tmp_path / "data" / "facechain.sqlite3")
    redis = await create_redis(redis_url)
    repos = Repositories(db)
    limits = Limits(daily_generations=1, default_count=1, max_count=1)
    service = ConversationService(
        repos, blobs, ArqJobQueue(redis), load_catalog(route.styles, route.models), limits, candidates=1
    )
    chat = Chat()
    service.register_notifier(Platform.TELEGRAM, chat)
    eve = Origin(platform=Platform.TELEGRAM, user_id="2002", chat_id="2002", private=True, display_name="Eve")
    user = await repos.users.get_or_create(Platform.TELEGRAM, "2002", "Eve")
    face_key = f"users/{user.id}/models/face_lora.safetensors"
    blobs.put_file(face_key, random_lora_file(tiny_pipe, tmp_path / "face.safetensors", seed=6))
    model = await repos.models.create(user.id, None, "woman")
    await repos.models.mark_ready(
        model.id, lora_key=face_key, template_key=None, trigger="<fcsks>, a beautiful woman", subject="woman"
    )
    runner = await asyncio.to_thread(PipelineRunner, settings, blobs)
    today = datetime.now(UTC).date()

    async def ask(*args: str) -> list[Reply]:
        replies = await service.handle(eve, Command("generate", args, text=" ".join(args)))
        for reply in replies:
            if isinstance(reply, ProgressMessage):
                await service.note_progress_message(reply.run_id, f"m-{reply.run_id}")
        return replies

    async def work() -> None:
        await asyncio.wait_for(run_worker(settings, burst=True, ctx={"runner": runner, "blobs": blobs}), 120)
        worker = build_outcome_worker(redis_url, service.on_outcome, burst=True)
        try:
            await asyncio.wait_for(worker.async_run(), 30)
        finally:
            await worker.close()

    try:
        with lora_hidden(route, "hanfu"):
            [queued] = [r for r in await ask("hanfu") if isinstance(r, ProgressMessage)]
            await work()
        told = chat.texts()
        assert 'the style "hanfu"' in told and "facechain-bot models fetch" in told, told
        assert "didn't count against your daily limit" in told
        run = await repos.runs.get(queued.run_id)
        assert run is not None and run.status is RunStatus.FAILED and run.error_code == "model_missing"
        assert await repos.usage.count_user(user.id, today) == 0

        # The quota (1 a day) is whole: the next portrait is made, and only then is the day used up.
        assert any(isinstance(r, ProgressMessage) for r in await ask("watercolor"))
        await work()
        assert any(isinstance(r, Photos) for r in chat.sent)
        assert await repos.usage.count_user(user.id, today) == 1
        refused = await ask("watercolor")
        assert not any(isinstance(r, ProgressMessage) for r in refused)
        assert "used your 1 portrait run for today" in " ".join(r.text for r in refused if isinstance(r, Text))
    finally:
        runner.picker.close()
        await redis.aclose()
        await db.close()


def test_the_tiny_route_leaves_the_styles_folder_alone(route: Route) -> None:
    # make-tiny writes only where `models fetch` would: the operator's own style files are untouched.
    assert sorted(p.relative_to(route.styles) for p in route.styles.rglob("*") if p.is_file()) == [
        Path("loras/noir.safetensors"),
        Path("neon_noir.toml"),
    ]
