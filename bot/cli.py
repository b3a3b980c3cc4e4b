"""``facechain-bot``: the one entry point for operators.

facechain-bot bot        run the chat adapters whose tokens are set
facechain-bot worker     run a GPU worker (train and/or generate queues)
facechain-bot up         both, and a private Redis when none is configured (no Docker needed)
facechain-bot doctor     check settings, Redis, database, GPU and models; say how to fix
facechain-bot discord-sync   upload the Discord slash commands (on purpose: Discord limits creates)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import logging
import math
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pydantic import SecretStr

from bot.config import ChatSecrets
from bot.errors import EXIT_OPERATOR, EXIT_WEDGED, OperatorError, operator_message
from bot.logging_setup import configure_logging
from bot.settings_loader import SettingsError, load_settings
from bot.up import DEFAULT_GRACE_S
from pipeline.jobs import MAX_CANDIDATES, MAX_PORTRAITS
from pipeline.metrics import MetricsServerError

if TYPE_CHECKING:
    from pipeline.config import WorkerSettings

DESCRIPTION = """\
facechain-bot: a self-hosted AI portrait bot for Discord and Telegram.
People send a few selfies, a GPU worker trains a personal face LoRA on Stable Diffusion 1.5
(a pipeline modelled on FaceChain's), and /generate returns portraits in a chosen style.

Configuration comes from FACECHAIN_* environment variables or a .env file in the
current directory (see .env.example). Typical deployment: `docker compose up`;
without Docker: `facechain-bot up`.
"""


def _configure_logging(level: str, secrets: Iterable[SecretStr | None] = ()) -> None:
    """Every command's logging: one place (bot.logging_setup), the secrets taken out of all of it."""
    configure_logging(level, secrets)


@contextlib.contextmanager
def _explained(redis_url: str | None = None) -> Iterator[None]:
    """Turn the library errors that are an operator's to fix (Redis not reachable, a worker's missing
    model) into :class:`OperatorError`, so they end in one line instead of a traceback."""
    try:
        yield
    except OperatorError:
        raise
    except Exception as exc:
        message = operator_message(exc, redis_url)
        if message is None:
            raise
        raise OperatorError(message) from None


def _require_redis(url: str, *, wait_if_down: bool = False) -> None:
    """Fail at once, before minutes of model loading, when Redis refuses the login, or does not answer
    (unless ``wait_if_down``: the bot and the worker wait for it and reconnect). :func:`operator_message`
    says which in one line."""
    from redis import Redis
    from redis.exceptions import AuthenticationError, AuthorizationError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    client = Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except (AuthenticationError, AuthorizationError):
        raise
    except (RedisConnectionError, RedisTimeoutError):
        if not wait_if_down:
            raise
    finally:
        client.close()


def _cmd_bot(args: argparse.Namespace) -> int:
    """Run the chat bot (Telegram and/or Discord, whichever tokens are set).

    Run the bot process: the chat adapters whose tokens are set (FACECHAIN_TELEGRAM_TOKEN,
    FACECHAIN_DISCORD_TOKEN), the database and the result consumer. Needs Redis (FACECHAIN_REDIS_URL) and at
    least one GPU worker somewhere.
    """
    from bot.config import BotSettings

    settings = load_settings(BotSettings)
    _configure_logging(settings.log_level, settings.secrets())
    from bot.app import main

    with _explained(settings.redis_url):
        _require_redis(str(settings.redis_url), wait_if_down=True)
        main(settings)
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    """Run a GPU worker that trains face models and generates portraits.

    Run a GPU worker: loads the models once, then takes jobs from Redis. Run one per GPU; any machine that
    reaches Redis and the blob store can host one.
    """
    from pipeline.config import WorkerSettings

    settings = load_settings(WorkerSettings)
    if args.queues:
        from pydantic import ValidationError

        try:
            settings = WorkerSettings.model_validate({**settings.model_dump(), "queues": args.queues})
        except ValidationError:
            raise OperatorError(f"--queues {args.queues}: expected train, generate or train,generate") from None
    # The worker never uses the chat tokens, but they may be in its environment (one .env for all).
    _configure_logging(settings.log_level, (*load_settings(ChatSecrets).secrets(), settings.s3_secret_access_key))
    from bot.graceful import until_terminated
    from pipeline.background import leave, leave_if_busy
    from pipeline.worker import WorkerWedged, run_worker

    with _explained(settings.redis_url):
        _require_redis(str(settings.redis_url), wait_if_down=True)
        _preflight_worker(settings)
        try:
            asyncio.run(until_terminated(run_worker(settings, burst=args.burst)))
        except WorkerWedged as exc:
            # The stuck thread would keep a normal exit waiting forever; a restart frees the GPU.
            logging.getLogger("facechain.worker").error("exiting to be restarted: %s", exc)
            leave(EXIT_WEDGED)
    leave_if_busy(0)
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    """Run everything on this machine without Docker: the bot, a worker and (if needed) a private Redis.

    Start the bot and a worker as child processes, and a private redis-server (from PATH, data and append-only
    file under FACECHAIN_DATA_DIR/redis) unless FACECHAIN_REDIS_URL is set. Ctrl-C or SIGTERM stops them all
    (SIGKILL after the grace period). If a child exits, `up` says which, stops the others and exits with its
    code (run it under a service manager to have it restarted).
    """
    from bot.app import configured_adapters
    from bot.config import BotSettings
    from bot.up import UpPlan, find_redis_server, run_up
    from pipeline.config import WorkerSettings
    from pipeline.models import resolve_base_model

    bot_settings = load_settings(BotSettings)
    worker_settings = load_settings(WorkerSettings)
    # What would stop a child at once is said here, once, before anything starts.
    if not configured_adapters(bot_settings):
        raise OperatorError("no chat platform configured: set FACECHAIN_TELEGRAM_TOKEN and/or FACECHAIN_DISCORD_TOKEN")
    resolve_base_model(worker_settings)
    external = "redis_url" in bot_settings.model_fields_set
    if external:
        with _explained(bot_settings.redis_url):
            _require_redis(bot_settings.redis_url)
    else:
        find_redis_server()
    plan = UpPlan(
        redis_url=bot_settings.redis_url if external else None,
        redis_dir=bot_settings.data_dir.resolve() / "redis",
        worker_queues=list(worker_settings.queues),
        grace_s=args.grace,
    )
    return run_up(plan)


def _preflight_worker(settings: WorkerSettings) -> None:
    """What stops a worker at start is found before minutes of model loading: the base model, the device.
    (A Redis that is down is waited for: the worker reconnects, logging the URL, see pipeline/worker.py.)"""
    from pipeline.devices import pick_device
    from pipeline.models import resolve_base_model
    from pipeline.stages import StagesUnavailable, check_stages

    try:
        check_stages(settings)
    except StagesUnavailable:
        return  # the worker names each stage that cannot run, in its own lines, as it starts
    resolve_base_model(settings)
    pick_device(settings)


def _cmd_doctor(args: argparse.Namespace) -> int:
    """Check the configuration, Redis, database, GPU and models, and say how to fix what is missing.

    Check every setting and dependency this machine needs; prints one line per check and exits non-zero if
    something required is missing.
    """
    from bot.doctor import run_doctor

    return asyncio.run(run_doctor(gpu=not args.no_gpu))


def _cmd_discord_sync(args: argparse.Namespace) -> int:
    """Upload the Discord slash commands and print the bot's invite link.

    Upload the slash commands to Discord. The bot also uploads them at start, but only when they changed since
    the last upload (Discord allows 200 command creates a day); run this after an upgrade or to repair
    commands changed elsewhere. Prints the link that invites the bot with the permissions it needs.
    """
    from bot.config import BotSettings

    settings = load_settings(BotSettings)
    _configure_logging(settings.log_level, settings.secrets())
    try:
        from bot.discord_adapter import run_sync_command
    except ImportError as exc:
        raise OperatorError(
            f"the Discord adapter cannot be loaded ({exc}); install the extra: pip install 'facechain-bot[discord]'"
        ) from None
    return asyncio.run(run_sync_command(settings, force=not args.if_changed, guild_id=args.guild))


def _worker_settings() -> WorkerSettings:
    from pipeline.config import WorkerSettings

    return load_settings(WorkerSettings)


def _cmd_models(args: argparse.Namespace) -> int:
    """Download model weights, make a tiny test model, or show what is present.

    fetch: download the base model, the style LoRAs and every file of every FaceChain stage the settings
    select into FACECHAIN_MODELS_DIR, with resume (needs internet; run it once, on any machine, then copy the
    folder). make-tiny DIR: write tiny random-weight models into DIR (a folder of their own, never the real
    models' FACECHAIN_MODELS_DIR) where fetch puts the real ones: a tiny SD pipeline (DIR/tiny-sd), a tiny
    LoRA for every style and a tiny model for every stage that runs on this project's own runtimes (not
    skin retouching, human parsing or face fusion: ModelScope pipelines with code of their own), so that
    the route runs without weights or a GPU (its images are noise); it prints the settings to use. list:
    the base model, and every stage's model and alternative: in use, present or missing; it exits 1 while
    anything fetch downloads is missing.
    """

    if args.action == "make-tiny":
        return _make_tiny(args)
    settings = _worker_settings()
    if args.action == "fetch":
        return _fetch_models(settings, args.names, everything=args.all)
    if args.names:
        raise OperatorError(f"models list takes no names ({' '.join(args.names)}): it lists every model")
    return _list_models(settings)


def _fetch_models(settings: WorkerSettings, names: list[str], *, everything: bool) -> int:
    """``models fetch``: every file of every selected stage (and the base model and style LoRAs)."""
    from pipeline import models
    from pipeline.hub_fetch import HubError
    from pipeline.stage_models import BY_NAME

    unknown = [n for n in names if n not in BY_NAME and models.parse_hub_ref(n) is None]
    if unknown:
        print(f"facechain-bot models fetch: unknown model {unknown[0]!r}; `facechain-bot models list` names "
              "the stage models, or give a hub id (modelscope:owner/name, hf:owner/name)", file=sys.stderr)  # fmt: skip
        return 2
    bar = _ByteProgress()

    def say(line: str) -> None:
        bar.end()
        print(line, flush=True)

    try:
        paths = models.fetch_models(
            settings, names or models.default_model_names(settings, everything=everything), report=say, progress=bar
        )
    except HubError as exc:
        bar.end()
        print(f"facechain-bot models fetch: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        bar.end()
        print(f"facechain-bot models fetch: {exc}", file=sys.stderr)
        return 2
    bar.end()
    print(f"done: {len(paths)} model folder(s) under {settings.models_dir}")
    return 0


class _ByteProgress:
    """One self-overwriting line per file while it downloads (only on a terminal)."""

    def __init__(self) -> None:
        self._live = sys.stdout.isatty()
        self._shown = False

    def __call__(self, path: str, done: int, total: int | None) -> None:
        if not self._live:
            return
        of = f" of {total / 1e6:.1f}" if total else ""
        print(f"\r    {done / 1e6:.1f}{of} MB", end="", flush=True)
        self._shown = True

    def end(self) -> None:
        if self._shown:
            print()
            self._shown = False


def _list_models(settings: WorkerSettings) -> int:
    """``models list``: the base model, then every stage model and alternative: in use, present or missing.

    Exits 1 while anything ``models fetch`` would download is missing (the compose file's ``models``
    service fetches then, so a first download that was cut off is finished at the next start).
    """
    from pipeline import models
    from pipeline.stage_models import stage_plan
    from pipeline.styles import load_styles

    code = 0
    try:
        print(f"base model: {models.resolve_base_model(settings)}")
    except models.ModelsMissingError as exc:
        print(f"base model: missing: {exc}")
        code = 1
    print(f"{'stage':15s} {'model':22s} {'role':12s} {'in use':7s} {'files':8s} {'runtime':9s} source")
    for status in stage_plan(settings):
        model = status.model
        files = "present" if status.present else "missing"
        runtime = "ok" if not status.missing_imports else "missing"
        source = model.hub_ref or {"wheel": "PyPI wheel", "manual": "placed by hand"}[model.source]
        print(
            f"{model.stage:15s} {model.name:22s} {model.role:12s} {'yes' if status.in_use else 'no':7s} "
            f"{files:8s} {runtime:9s} {source}"
        )
        if status.problem:
            print(f"  ! {status.problem}")
            code = 1
    unfetched = [
        s.model.name for s in stage_plan(settings) if s.selected and s.model.source == "modelscope" and not s.present
    ]
    for name, style in load_styles(settings).items():
        try:
            if style.lora is not None:
                models.resolve_style_lora(settings, name, style.lora)
        except (models.ModelsMissingError, models.StyleLoraRefused):
            unfetched.append(f"style {name}")
    if unfetched:
        print(f"not fetched yet: {', '.join(unfetched)}: run `facechain-bot models fetch`")
        code = 1
    return code


def _make_tiny(args: argparse.Namespace) -> int:
    from pipeline.tiny_models import make_tiny

    folders = [*args.names, *([args.dir] if args.dir else [])]
    if len(folders) != 1:
        # No default: random-weight models in the real models folder would pass for real ones there.
        given = f"not {len(folders)}: {' '.join(folders)}" if folders else "a folder of their own, e.g. ./models-tiny"
        print(f"facechain-bot models make-tiny: one DIR, {given}", file=sys.stderr)
        return 2
    route = make_tiny(_worker_settings(), Path(folders[0]))
    for line in route.refused_styles:
        print(line, file=sys.stderr)
    for result in route.results:
        for path, what in result.written:
            print(f"wrote {what}: {path}")
        for note in result.notes:
            print(note)
    print("settings for the tiny route (its images are noise; every style runs without a download):")
    for name, value in route.settings.items():
        print(f"  {name}={value}")
    return 0


def _cmd_styles(args: argparse.Namespace) -> int:
    """List the styles (built-in and FACECHAIN_STYLES_DIR)."""
    from pipeline.config import WorkerSettings
    from pipeline.styles import load_catalogue

    settings = load_settings(WorkerSettings)
    catalogue = load_catalogue(settings.styles_dir, settings.models_dir)
    for line in catalogue.refused:
        print(line, file=sys.stderr)
    for name, style in catalogue.styles.items():
        flag = "" if style.default_enabled else " (off by default)"
        lora = f"  [LoRA {style.lora}]" if style.lora else ""
        print(f"{name:20s} {style.title or style.description}{flag}{lora}")
    return 0


_BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {elapsed}{postfix}"


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
            # Percent done and time spent: a rate of "percent per second" tells an operator nothing.
            self._bar = self._tqdm(total=100, desc=str(stage), bar_format=_BAR_FORMAT, leave=True)
            self._stage = stage
        self._bar.n = round(fraction * 100)
        self._bar.set_postfix_str(message, refresh=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _cmd_train(args: argparse.Namespace) -> int:
    """Script mode: train a face model from a folder of photos (no Redis, no chat).

    Preprocess the photos in PHOTO_DIR (FACECHAIN_MIN_PHOTOS to FACECHAIN_MAX_PHOTOS of one person, one face
    each; past that, the first by file name), train a face LoRA and keep it under NAME for `facechain-bot
    generate NAME`. Training and generation run at the base
    model's own size (512 px for SD 1.5, 64 px for `models make-tiny`'s model).
    """
    from bot.config import BotSettings
    from bot.core import texts
    from pipeline.jobs import ErrorCode, Subject
    from pipeline.script import train_from_folder

    settings = _worker_settings()
    chat = load_settings(BotSettings).limits()  # the chat's: FACECHAIN_MIN_PHOTOS, FACECHAIN_MAX_PHOTOS
    bars = _Bars()
    try:
        done = train_from_folder(
            settings, Path(args.photo_dir), args.name, subject=Subject(args.subject) if args.subject else None,
            steps=args.steps, min_photos=chat.min_photos, max_photos=chat.max_photos, report=bars,
        )  # fmt: skip
    finally:
        bars.close()
    outcome = done.outcome
    if done.left_out:
        names = ", ".join(p.name for p in done.left_out)
        print(f"left out (past FACECHAIN_MAX_PHOTOS={chat.max_photos}): {names}")
    for rejection in outcome.rejections:
        source = done.sources.get(rejection.photo_key)
        reason = texts.reject_reason(rejection.reason.value, chat.max_photo_bytes)
        print(f"dropped {source.name if source else rejection.photo_key}: {reason}")
    if not outcome.ok:
        if outcome.error in (ErrorCode.TOO_FEW_PHOTOS, ErrorCode.NO_FACE):
            usable, total = len(done.sources) - len(outcome.rejections), len(done.sources)
            raise OperatorError(
                f"not trained: {usable} of {total} photos usable, at least {chat.min_photos} needed (see above)"
            )
        code = outcome.error.value if outcome.error else "failed"
        raise OperatorError(f"not trained ({code}): {outcome.message or 'see the lines above'}")
    print(f"trained {args.name!r} on {len(outcome.used_photos)} photos in {outcome.steps} steps ({outcome.seconds} s)")
    print(f"stages run: {', '.join(outcome.stages_run)}")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    """Script mode: generate portraits of a trained face model into a folder.

    Generate candidates in a style, keep those with one good face, rank them by likeness and write the best
    COUNT to OUT as JPEG files (with their seeds, to reproduce them).
    """
    from pipeline.jobs import ErrorCode
    from pipeline.script import generate_for
    from pipeline.styles import load_styles, style_to_spec

    settings = _worker_settings()
    styles = load_styles(settings)
    if args.style not in styles:
        raise OperatorError(f"unknown style {args.style!r}; known: {', '.join(styles)}")
    bars = _Bars()
    try:
        outcome, written = generate_for(
            settings, args.name, style_to_spec(styles[args.style]), Path(args.out), count=args.count,
            candidates=args.candidates, seed=args.seed, report=bars,
        )  # fmt: skip
    finally:
        bars.close()
    if outcome.error is ErrorCode.MODEL_MISSING:
        print(f"facechain-bot generate: {outcome.message}", file=sys.stderr)
        return 2
    if not outcome.ok:
        print(f"no portrait: {outcome.error} (dropped {outcome.dropped}, withheld {outcome.blocked})", file=sys.stderr)
        return 1
    for path, portrait in zip(written, outcome.portraits, strict=True):
        score = "" if portrait.score is None else f"  similarity {portrait.score:.3f}"
        print(f"{path}  seed {portrait.seed}{score}")
    print(f"stages run: {', '.join(outcome.stages_run)}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what is wrong, and where the help is), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_OPERATOR, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _seconds(text: str) -> float:
    """An argparse type: a number of seconds, 0 or more (finite)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, not {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 seconds or more, not {text}")
    return value


def _int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high`` (no upper bound when None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {bound}, not {value}")
        return value

    return parse


def _add_command(
    sub: argparse._SubParsersAction[_Parser], run: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    """The sub-command ``run`` implements (``_cmd_discord_sync`` is ``discord-sync``): its parser, for
    its arguments. The docstring's first line is the command's one-line help, the rest its description."""
    name = run.__name__.removeprefix("_cmd_").replace("_", "-")
    doc = inspect.getdoc(run)
    if not doc:
        raise TypeError(f"{run.__name__} needs a docstring: it is the command's help")
    summary, _, details = doc.partition("\n\n")
    parser = sub.add_parser(name, help=summary[0].lower() + summary[1:].rstrip("."), description=details or None)
    # Its own parser reports arguments it does not know (argparse's top-level parser would, unnamed).
    parser.set_defaults(func=run, command_parser=parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="facechain-bot", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    _add_command(sub, _cmd_bot)

    p = _add_command(sub, _cmd_worker)
    p.add_argument(
        "--queues",
        help="comma-separated queues to serve: train, generate (default: FACECHAIN_QUEUES, both)",
    )
    p.add_argument("--burst", action="store_true", help="exit once the queues are empty (for tests and batch runs)")

    p = _add_command(sub, _cmd_up)
    p.add_argument(
        "--grace", type=_seconds, default=DEFAULT_GRACE_S,
        help=f"seconds a child has to stop after SIGTERM before it is killed (default {DEFAULT_GRACE_S:g})",
    )  # fmt: skip

    p = _add_command(sub, _cmd_doctor)
    p.add_argument("--no-gpu", action="store_true", help="skip the GPU and model checks (a bot-only machine)")

    p = _add_command(sub, _cmd_discord_sync)
    p.add_argument("--guild", type=_int_in(1), help="upload into this server only (shows at once; for trying changes)")
    p.add_argument("--if-changed", action="store_true", help="skip the upload when nothing changed since the last one")

    p = _add_command(sub, _cmd_models)
    p.add_argument("action", choices=["fetch", "make-tiny", "list"])
    p.add_argument(
        "names", nargs="*",
        help="fetch: stage models (see `models list`) or hub ids (modelscope:owner/name, hf:owner/name); "
        "default: everything the settings use. make-tiny: DIR",
    )  # fmt: skip
    p.add_argument("--all", action="store_true", help="fetch: also every alternative stage model (DamoFD, RTS)")
    p.add_argument("--dir", help="make-tiny: the same as DIR")

    _add_command(sub, _cmd_styles)

    p = _add_command(sub, _cmd_train)
    p.add_argument("photo_dir")
    p.add_argument("--name", required=True, help="a name for this person's model (letters, digits, _ or -)")
    p.add_argument("--subject", choices=["man", "woman", "boy", "girl", "person"], help="who is in the photos")
    p.add_argument(
        "--steps", type=_int_in(1, 10_000),
        help="optimizer steps, each of FACECHAIN_TRAIN_BATCH_SIZE samples (default: FaceChain's budget of "
        "FACECHAIN_STEPS_PER_PHOTO samples a photo, at most FACECHAIN_MAX_TRAIN_STEPS: 100 steps of 8 for 5 photos)",
    )  # fmt: skip

    p = _add_command(sub, _cmd_generate)
    p.add_argument("name")
    p.add_argument("--style", default="business_suit", help="a style name (see `facechain-bot styles`)")
    p.add_argument(
        "--count", type=_int_in(1, MAX_PORTRAITS), default=4, help=f"portraits to keep, 1-{MAX_PORTRAITS} (default 4)"
    )
    p.add_argument(
        "--candidates", type=_int_in(1, MAX_CANDIDATES),
        help=f"candidates to generate, 1-{MAX_CANDIDATES} (default FACECHAIN_CANDIDATES, 10)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, help="base seed (candidate i uses seed + i)")
    p.add_argument("--out", required=True, help="folder to write the portraits to")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; operator errors end in one line on stderr and exit code 2."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        with _explained():
            return int(args.func(args))
    except (SettingsError, MetricsServerError) as exc:
        print(exc, file=sys.stderr)
        return EXIT_OPERATOR
    except OperatorError as exc:
        print(f"facechain-bot {args.command}: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_OPERATOR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
