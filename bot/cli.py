"""``facechain-bot``: the one entry point for operators.

facechain-bot bot        run the chat adapters whose tokens are set
facechain-bot worker     run a GPU worker (train and/or generate queues)
facechain-bot doctor     check settings, Redis, database, GPU and models; say how to fix
facechain-bot discord-sync   upload the Discord slash commands (on purpose: Discord limits creates)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.settings_loader import SettingsError, load_settings

if TYPE_CHECKING:
    from pipeline.config import WorkerSettings

DESCRIPTION = """\
facechain-bot: a self-hosted AI portrait bot for Discord and Telegram.
People send a few selfies, a GPU worker trains a personal face model (FaceChain on
Stable Diffusion 1.5), and /generate returns portraits in a chosen style.

Configuration comes from FACECHAIN_* environment variables or a .env file in the
current directory (see .env.example). Typical deployment: `docker compose up`.
"""


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs full request URLs, and Telegram's carry the bot token.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _cmd_bot(args: argparse.Namespace) -> int:
    from bot.config import BotSettings

    settings = load_settings(BotSettings)
    _configure_logging(settings.log_level)
    from bot.app import main

    main(settings)
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    from pipeline.config import WorkerSettings

    settings = load_settings(WorkerSettings)
    if args.queues:
        settings = settings.model_copy(update={"queues": args.queues.split(",")})
    _configure_logging("INFO")
    from pipeline.worker import run_worker

    asyncio.run(run_worker(settings, burst=args.burst))
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from bot.doctor import run_doctor

    return asyncio.run(run_doctor(gpu=not args.no_gpu))


def _cmd_discord_sync(args: argparse.Namespace) -> int:
    from bot.config import BotSettings

    settings = load_settings(BotSettings)
    _configure_logging(settings.log_level)
    try:
        from bot.discord_adapter import DiscordNotConfigured, run_sync_command
    except ImportError as exc:
        print(f"facechain-bot discord-sync: the Discord adapter cannot be loaded ({exc}); "
              "install the extra: pip install 'facechain-bot[discord]'", file=sys.stderr)  # fmt: skip
        return 2
    try:
        return asyncio.run(run_sync_command(settings, force=not args.if_changed, guild_id=args.guild))
    except DiscordNotConfigured:
        print("facechain-bot discord-sync: set FACECHAIN_DISCORD_TOKEN (see .env.example)", file=sys.stderr)
        return 2


def _worker_settings() -> WorkerSettings:
    from pipeline.config import WorkerSettings

    return load_settings(WorkerSettings)


def _cmd_models(args: argparse.Namespace) -> int:
    from pipeline import models

    if args.action == "make-tiny":
        folder = models.make_tiny_pipeline(Path(args.dir))
        print(f"wrote a tiny random-weight SD pipeline to {folder}")
        print(f"use it with FACECHAIN_BASE_MODEL={folder} FACECHAIN_RANK_FACES=false (its images are noise)")
        return 0
    settings = _worker_settings()
    if args.action == "fetch":
        names = args.names or models.default_model_names(settings)
        for name in names:
            print(f"fetching {name} ...", flush=True)
        for path in models.fetch_models(settings, names):
            print(f"  -> {path}")
        return 0
    try:
        print(f"base model: {models.resolve_base_model(settings)}")
        return 0
    except models.ModelsMissingError as exc:
        print(f"base model: missing: {exc}")
        return 1


def _cmd_styles(args: argparse.Namespace) -> int:
    from pipeline.config import WorkerSettings
    from pipeline.styles import load_styles

    for name, style in load_styles(load_settings(WorkerSettings)).items():
        flag = "" if style.default_enabled else " (off by default)"
        lora = f"  [LoRA {style.lora}]" if style.lora else ""
        print(f"{name:20s} {style.title or style.description}{flag}{lora}")
    return 0


class _Bars:
    """tqdm progress bars, one per stage, for script mode."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self._bar: Any = None
        self._stage: object = None

    def __call__(self, stage: object, fraction: float, message: str) -> None:
        if stage != self._stage:
            self.close()
            self._bar = self._tqdm(total=100, desc=str(stage), unit="%", leave=True)
            self._stage = stage
        self._bar.n = round(fraction * 100)
        self._bar.set_postfix_str(message, refresh=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _cmd_train(args: argparse.Namespace) -> int:
    from pipeline.jobs import Subject
    from pipeline.script import ScriptError, train_from_folder

    settings = _worker_settings()
    bars = _Bars()
    try:
        outcome = train_from_folder(
            settings, Path(args.photo_dir), args.name, subject=Subject(args.subject) if args.subject else None,
            steps=args.steps, report=bars,
        )  # fmt: skip
    except ScriptError as exc:
        print(f"facechain-bot train: {exc}", file=sys.stderr)
        return 2
    finally:
        bars.close()
    for rejection in outcome.rejections:
        print(f"dropped {rejection.photo_key.rsplit('/', 1)[-1]}: {rejection.reason.value} {rejection.detail}".rstrip())
    if not outcome.ok:
        hint = " (pass --subject man|woman|boy|girl|person)" if outcome.needs_subject else ""
        print(f"training failed: {outcome.error or 'subject needed'}{hint} {outcome.message}".rstrip(), file=sys.stderr)
        return 1
    print(f"trained {args.name!r} on {len(outcome.used_photos)} photos in {outcome.steps} steps ({outcome.seconds} s)")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from pipeline.script import ScriptError, generate_for
    from pipeline.styles import load_styles, style_to_spec

    settings = _worker_settings()
    styles = load_styles(settings)
    if args.style not in styles:
        print(f"facechain-bot generate: unknown style {args.style!r}; known: {', '.join(styles)}", file=sys.stderr)
        return 2
    bars = _Bars()
    try:
        outcome, written = generate_for(
            settings, args.name, style_to_spec(styles[args.style]), Path(args.out), count=args.count,
            candidates=args.candidates, seed=args.seed, report=bars,
        )  # fmt: skip
    except ScriptError as exc:
        print(f"facechain-bot generate: {exc}", file=sys.stderr)
        return 2
    finally:
        bars.close()
    if not outcome.ok:
        print(f"no portrait: {outcome.error} (dropped {outcome.dropped}, withheld {outcome.blocked})", file=sys.stderr)
        return 1
    for path, portrait in zip(written, outcome.portraits, strict=True):
        score = "" if portrait.score is None else f"  similarity {portrait.score:.3f}"
        print(f"{path}  seed {portrait.seed}{score}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facechain-bot", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "bot",
        help="run the chat bot (Telegram and/or Discord, whichever tokens are set)",
        description="Run the bot process: the chat adapters whose tokens are set "
        "(FACECHAIN_TELEGRAM_TOKEN, FACECHAIN_DISCORD_TOKEN), the database and the result consumer. "
        "Needs Redis (FACECHAIN_REDIS_URL) and at least one GPU worker somewhere.",
    )
    p.set_defaults(func=_cmd_bot)

    p = sub.add_parser(
        "worker",
        help="run a GPU worker that trains face models and generates portraits",
        description="Run a GPU worker: loads the models once, then takes jobs from Redis. "
        "Run one per GPU; any machine that reaches Redis and the blob store can host one.",
    )
    p.add_argument(
        "--queues",
        help="comma-separated queues to serve: train, generate (default: FACECHAIN_QUEUES, both)",
    )
    p.add_argument("--burst", action="store_true", help="exit once the queues are empty (for tests and batch runs)")
    p.set_defaults(func=_cmd_worker)

    p = sub.add_parser(
        "doctor",
        help="check the configuration, Redis, database, GPU and models, and say how to fix what is missing",
        description="Check every setting and dependency this machine needs; prints one line per check "
        "and exits non-zero if something required is missing.",
    )
    p.add_argument("--no-gpu", action="store_true", help="skip the GPU and model checks (a bot-only machine)")
    p.set_defaults(func=_cmd_doctor)

    p = sub.add_parser(
        "discord-sync",
        help="upload the Discord slash commands and print the bot's invite link",
        description="Upload the slash commands to Discord. The bot also uploads them at start, but only when they "
        "changed since the last upload (Discord allows 200 command creates a day); run this after an upgrade or to "
        "repair commands changed elsewhere. Prints the link that invites the bot with the permissions it needs.",
    )
    p.add_argument("--guild", type=int, help="upload into this server only (shows at once; for trying changes)")
    p.add_argument("--if-changed", action="store_true", help="skip the upload when nothing changed since the last one")
    p.set_defaults(func=_cmd_discord_sync)

    p = sub.add_parser(
        "models",
        help="download model weights, make a tiny test model, or show what is present",
        description="fetch: download the base model and the style LoRAs into FACECHAIN_MODELS_DIR (needs internet; "
        "run it once, on any machine, then copy the folder). make-tiny DIR: write a tiny random-weight SD pipeline "
        "that runs everything without weights or a GPU (its images are noise). list: where the base model resolves.",
    )
    p.add_argument("action", choices=["fetch", "make-tiny", "list"])
    p.add_argument("names", nargs="*", help="fetch: hub ids (modelscope:owner/name, hf:owner/name); default: all")
    p.add_argument("--dir", default="./models/tiny-sd", help="make-tiny: where to write the tiny pipeline")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("styles", help="list the styles (built-in and FACECHAIN_STYLES_DIR)")
    p.set_defaults(func=_cmd_styles)

    p = sub.add_parser(
        "train",
        help="script mode: train a face model from a folder of photos (no Redis, no chat)",
        description="Preprocess the photos in PHOTO_DIR (3-10 of one person, one face each), train a face LoRA "
        "and keep it under NAME for `facechain-bot generate NAME`.",
    )
    p.add_argument("photo_dir")
    p.add_argument("--name", required=True, help="a name for this person's model (letters, digits, _ or -)")
    p.add_argument("--subject", choices=["man", "woman", "boy", "girl", "person"], help="who is in the photos")
    p.add_argument("--steps", type=int, help="training steps (default: 200 a photo, at most 800)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "generate",
        help="script mode: generate portraits of a trained face model into a folder",
        description="Generate candidates in a style, keep those with one good face, rank them by likeness and "
        "write the best COUNT to OUT as JPEG files (with their seeds, to reproduce them).",
    )
    p.add_argument("name")
    p.add_argument("--style", default="business_suit", help="a style name (see `facechain-bot styles`)")
    p.add_argument("--count", type=int, default=4, help="portraits to keep (default 4)")
    p.add_argument("--candidates", type=int, help="candidates to generate (default FACECHAIN_CANDIDATES, 10)")
    p.add_argument("--seed", type=int, help="base seed (candidate i uses seed + i)")
    p.add_argument("--out", required=True, help="folder to write the portraits to")
    p.set_defaults(func=_cmd_generate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
