"""Every command the bot offers, once: its name, what it does and its arguments.

/help's text, Telegram's command menus (setMyCommands), Discord's slash commands and the command
table in ``docs/commands.md`` are all rendered from these tuples; ``tests/core/test_catalogue.py``
and the adapters' tests hold them equal. Pure data: no platform library is imported here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Argument:
    """One argument of a command: ``<name>`` when required, ``[name]`` when optional."""

    name: str
    help: str
    required: bool = True
    #: The values it takes when they are few and fixed (shown as ``a|b``; Discord offers them as choices).
    choices: tuple[str, ...] = ()
    #: A file sent with the command (a caption on Telegram, an attachment option on Discord), not text.
    attached: bool = False

    @property
    def usage(self) -> str:
        inner = "|".join(self.choices) if self.choices else self.name
        return f"<{inner}>" if self.required else f"[{inner}]"


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """A command: its core name, a one-line description, and its arguments in order."""

    name: str
    help: str
    arguments: tuple[Argument, ...] = ()
    #: Listed by /help and in Telegram's menu. /start is not: every chat opens with it.
    listed: bool = True
    #: The Discord name where it differs (Discord's admin subcommands read better without "style").
    discord_name: str | None = None
    #: Sent with photos (a caption), it runs before them: it opens the set they join. Any other
    #: command runs after them (``/done`` then counts them).
    before_files: bool = False

    @property
    def usage(self) -> str:
        """``name <arg> [arg]``, without the slash."""
        return " ".join((self.name, *(a.usage for a in self.arguments)))

    @property
    def slash_name(self) -> str:
        return self.discord_name or self.name

    @property
    def takes_file(self) -> bool:
        """Whether a file sent with the command is one of its arguments (else it is offered as a photo)."""
        return any(argument.attached for argument in self.arguments)


#: The highest daily limit /admin quota takes.
MAX_QUOTA = 10_000

COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec("start", "what this bot does and how to begin", listed=False, before_files=True),
    CommandSpec("train", "start a new set of photos (in a private chat)", before_files=True),
    CommandSpec("done", "finish the set and start training"),
    CommandSpec(
        "generate",
        "make portraits",
        (
            Argument("style", "A style enabled here", required=False),
            Argument("count", "How many portraits", required=False),
        ),
    ),
    CommandSpec("styles", "list the styles"),
    CommandSpec("status", "what I'm doing for you"),
    CommandSpec("cancel", "stop what's in progress"),
    CommandSpec("forget", "delete everything I keep about you"),
    CommandSpec("help", "this list"),
)

#: ``/admin`` in Telegram; ``/facechain-admin`` (a command group, server only) in Discord.
ADMIN = CommandSpec("admin", "manage styles, quotas and results here", discord_name="facechain-admin")

ADMIN_COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec("styles", "all styles, on or off, and the settings here"),
    CommandSpec("enable", "let members use a style", (Argument("style", "A style known here"),)),
    CommandSpec("disable", "switch a style off", (Argument("style", "A style known here"),)),
    CommandSpec(
        "addstyle",
        "add a style (attach a .safetensors LoRA if you have one)",
        (
            Argument("name", "a-z, 0-9, _ or -"),
            Argument("prompt", "What the portraits look like"),
            Argument("lora", "A style LoRA (.safetensors), attached", required=False, attached=True),
        ),
        discord_name="add",
    ),
    CommandSpec(
        "removestyle", "remove a style you added", (Argument("name", "A style added here"),), discord_name="remove"
    ),
    CommandSpec(
        "quota",
        f"portrait runs a day (0 to {MAX_QUOTA}), per member or for everyone",
        (
            Argument("scope", "Per member or for everyone", choices=("user", "group")),
            Argument("limit", "A number, or off", choices=("number", "off")),
        ),
    ),
    CommandSpec(
        "results",
        "post portraits here or send them privately",
        (Argument("where", "Here or privately", choices=("channel", "direct")),),
    ),
    CommandSpec("nsfw", "allow or block NSFW results", (Argument("value", "Allow or block", choices=("on", "off")),)),
)


def help_line(command: CommandSpec, parent: CommandSpec | None = None) -> str:
    """``/generate [style] [count] - make portraits`` (``/admin quota ...`` under ``parent``)."""
    prefix = f"/{parent.name} " if parent is not None else "/"
    return f"{prefix}{command.usage} - {command.help}"


def listed() -> tuple[CommandSpec, ...]:
    """The commands /help and Telegram's menu show, in order."""
    return tuple(c for c in COMMANDS if c.listed)


def runs_before_files(name: str) -> bool:
    """Whether command ``name``, sent with photos, runs before they are offered (see ``before_files``)."""
    return any(c.name == name and c.before_files for c in COMMANDS)


def admin_command(name: str) -> CommandSpec | None:
    return next((c for c in ADMIN_COMMANDS if c.name == name), None)


def markdown_table() -> str:
    """The command table of ``docs/commands.md`` (a test keeps the file equal to this)."""
    rows = ["| Telegram | Discord | what it does |", "|---|---|---|"]
    for command in COMMANDS:
        rows.append(_row(f"/{command.usage}", f"/{_discord_usage(command)}", command.help))
    for command in ADMIN_COMMANDS:
        telegram = f"/{ADMIN.name} {command.usage}"
        discord = f"/{ADMIN.slash_name} {_discord_usage(command)}"
        rows.append(_row(telegram, discord, f"{command.help} (admins)"))
    return "\n".join(rows)


def _row(telegram: str, discord: str, help_: str) -> str:
    cells = (f"`{telegram}`", f"`{discord}`", help_)
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _discord_usage(command: CommandSpec) -> str:
    options = (f"{a.name}:" if a.required else f"[{a.name}:]" for a in command.arguments)
    return " ".join((command.slash_name, *options))
