"""``facechain-bot``: the one entry point for operators.

facechain-bot bot        run the chat adapters whose tokens are set
facechain-bot worker     run a GPU worker (train and/or generate queues)
facechain-bot doctor     check settings, Redis, database, GPU and models; say how to fix
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from bot.settings_loader import SettingsError, load_settings

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
    from bot.app import run_bot

    asyncio.run(run_bot(settings))
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
