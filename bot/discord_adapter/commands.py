"""The slash commands: each one turns its options into the core's :class:`Command` and hands it on.

The command texts the core writes (``/train``, ``/done``, ``/generate <style>``) are the same here;
the core's ``/admin <subcommand> ...`` is ``/facechain-admin <subcommand>`` with typed options.

/train opens a modal with a file-upload field in a DM (photos go to the bot only, never to a
channel). In a server it is passed on as it is, and the core says where photos are collected. The
modal has a fixed custom id and one instance, registered at start-up, handles every submission: one
submitted after a restart, or long after it was opened, still arrives.
"""

# No ``from __future__ import annotations``: discord.py reads the option types (a count range that
# depends on the settings) from the evaluated annotations of functions built at runtime.

import logging
from typing import Any, Literal, Protocol, TypedDict

import discord
from discord import app_commands

from bot.core import catalogue
from bot.core.events import Command, Event, PhotosOffered
from bot.core.limits import Limits
from bot.core.state import StyleInfo
from bot.discord_adapter.translate import offered_file
from bot.service import Downloader

log = logging.getLogger("facechain.discord")

ADMIN_GROUP = catalogue.ADMIN.slash_name
#: Discord's limits: autocomplete choices, characters of a choice's name and value.
MAX_CHOICES = 25
MAX_CHOICE_CHARS = 100
#: custom_id of the /train upload modal and of its file field.
UPLOAD_MODAL_ID = "fc-train"
UPLOAD_FIELD_ID = "fc-train-photos"


class InteractionRunner(Protocol):
    """What the commands need from the client."""

    async def run_interaction(
        self, interaction: discord.Interaction[Any], events: list[Event], download: Downloader | None = None
    ) -> None:
        """Hand the events to the core, one after another, and answer the interaction with the replies."""
        ...

    async def styles_here(self, interaction: discord.Interaction[Any], *, every: bool) -> tuple[StyleInfo, ...]:
        """The styles enabled where the interaction happens (or every style known there)."""
        ...

    async def training_now(self, interaction: discord.Interaction[Any]) -> bool:
        """Whether the user's face model is training now."""
        ...

    def downloader(self, attachments: list[discord.Attachment], limit: int) -> Downloader:
        """A downloader for these attachments that refuses files over ``limit`` bytes before fetching."""
        ...


class UploadModal(discord.ui.Modal):
    """/train in a DM: up to ``max_photos`` selfies in one go (more can follow as DM attachments).

    Persistent: one instance per client, registered with ``Client.add_view`` at start-up and sent by
    every /train, handles every member's submission from its custom id, whenever it comes.
    """

    def __init__(self, runner: InteractionRunner, limits: Limits) -> None:
        super().__init__(title="Train your face model", timeout=None, custom_id=UPLOAD_MODAL_ID)
        self._runner = runner
        self._limits = limits
        self.upload: discord.ui.FileUpload[Any] = discord.ui.FileUpload(
            custom_id=UPLOAD_FIELD_ID, required=False, min_values=0, max_values=min(limits.max_photos, 10)
        )
        self.add_item(
            discord.ui.Label(
                text="Your selfies",
                description=f"{limits.min_photos} to {limits.max_photos} photos: only you, good light, "
                "different angles.",
                component=self.upload,
            )
        )

    def stop(self) -> None:
        """Keeps listening: discord.py stops a modal after a submission, which would unregister this one."""

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        # One instance serves every submission: discord.py has just filled the field from this one, so it is
        # read before anything awaits, and only files this submission carries count (never an earlier one's).
        resolved = dict(interaction.data or {}).get("resolved")
        carried = resolved.get("attachments", {}) if isinstance(resolved, dict) else {}
        files = [a for a in self.upload.values if str(a.id) in carried]
        events: list[Event] = [Command("train")]
        if files:
            events.append(PhotosOffered(tuple(offered_file(a) for a in files)))
        await self._runner.run_interaction(
            interaction, events, self._runner.downloader(files, self._limits.max_photo_bytes)
        )


def _spec(name: str, *, admin: bool = False) -> catalogue.CommandSpec:
    specs = catalogue.ADMIN_COMMANDS if admin else catalogue.COMMANDS
    return next(c for c in specs if c.name == name)


class _Named(TypedDict):
    name: str
    description: str


def _named(name: str, *, admin: bool = False) -> _Named:
    """A slash command's name and description, from the catalogue."""
    spec = _spec(name, admin=admin)
    return _Named(name=spec.slash_name, description=spec.help)


def _described(name: str, *, admin: bool = False) -> dict[str, str]:
    """Its options' descriptions, from the catalogue (the options are the functions' parameters)."""
    return {a.name: a.help for a in _spec(name, admin=admin).arguments}


def _command(name: str, *args: str) -> Command:
    return Command(name=name, args=tuple(args), text=" ".join(args))


def _without_options(runner: InteractionRunner, name: str) -> app_commands.Command[Any, ..., None]:
    """A slash command that has no options: ``/name`` goes to the core as it is."""

    async def run(interaction: discord.Interaction[Any]) -> None:
        await runner.run_interaction(interaction, [_command(name)])

    return app_commands.command(**_named(name))(run)


def _choices(styles: tuple[StyleInfo, ...], current: str) -> list[app_commands.Choice[str]]:
    wanted = current.casefold().strip()
    found = []
    for style in styles:
        if wanted and wanted not in style.name.casefold():
            continue
        label = f"{style.name} - {style.description}" if style.description else style.name
        found.append(app_commands.Choice(name=label[:MAX_CHOICE_CHARS], value=style.name[:MAX_CHOICE_CHARS]))
    return found[:MAX_CHOICES]


def register_commands(
    tree: app_commands.CommandTree[Any], runner: InteractionRunner, limits: Limits, upload: UploadModal
) -> None:
    """Add every command of the bot to ``tree``; /train in a DM opens ``upload``."""
    max_count = limits.max_count

    async def enabled_styles(interaction: discord.Interaction[Any], current: str) -> list[app_commands.Choice[str]]:
        return _choices(await runner.styles_here(interaction, every=False), current)

    async def known_styles(interaction: discord.Interaction[Any], current: str) -> list[app_commands.Choice[str]]:
        return _choices(await runner.styles_here(interaction, every=True), current)

    async def added_styles(interaction: discord.Interaction[Any], current: str) -> list[app_commands.Choice[str]]:
        # Built-in styles are always refused by remove.
        added = tuple(s for s in await runner.styles_here(interaction, every=True) if not s.builtin)
        return _choices(added, current)

    @app_commands.command(**_named("train"))
    async def train(interaction: discord.Interaction[Any]) -> None:
        if interaction.guild_id is None and not await runner.training_now(interaction):
            await interaction.response.send_modal(upload)
        else:
            # In a server, or while a model trains: the core's answer, no upload window for photos
            # it would refuse.
            await runner.run_interaction(interaction, [_command("train")])

    @app_commands.command(**_named("generate"))
    @app_commands.describe(**_described("generate"))
    @app_commands.autocomplete(style=enabled_styles)
    async def generate(
        interaction: discord.Interaction[Any],
        style: str | None = None,
        count: app_commands.Range[int, 1, max_count] | None = None,
    ) -> None:
        args = style.split() if style else []
        if count is not None:
            args.append(str(count))
        await runner.run_interaction(interaction, [_command("generate", *args)])

    # Every command of the catalogue, in its order (the order Discord is sent): train and generate as
    # defined above, each of the others handing its name to the core.
    defined: dict[str, app_commands.Command[Any, ..., None]] = {"train": train, "generate": generate}
    for spec in catalogue.COMMANDS:
        tree.add_command(defined.get(spec.name) or _without_options(runner, spec.name))

    admin = app_commands.Group(
        name=catalogue.ADMIN.slash_name,
        description=catalogue.ADMIN.help,
        guild_only=True,
        allowed_contexts=app_commands.AppCommandContext(guild=True, dm_channel=False, private_channel=False),
        default_permissions=discord.Permissions(manage_guild=True),
    )

    async def run_admin(
        interaction: discord.Interaction[Any], *args: str, text: str | None = None, attachment: Any = None
    ) -> None:
        event = Command(name="admin", args=tuple(args), text=" ".join(args) if text is None else text)
        download = None
        if attachment is not None:
            event = Command(event.name, event.args, event.text, attachment=offered_file(attachment))
            download = runner.downloader([attachment], limits.max_lora_bytes)
        await runner.run_interaction(interaction, [event], download)

    @admin.command(**_named("styles", admin=True))
    @app_commands.describe(**_described("styles", admin=True))
    async def admin_styles(interaction: discord.Interaction[Any]) -> None:
        await run_admin(interaction, "styles")

    @admin.command(**_named("enable", admin=True))
    @app_commands.describe(**_described("enable", admin=True))
    @app_commands.autocomplete(style=known_styles)
    async def admin_enable(interaction: discord.Interaction[Any], style: str) -> None:
        await run_admin(interaction, "enable", *style.split())

    @admin.command(**_named("disable", admin=True))
    @app_commands.describe(**_described("disable", admin=True))
    @app_commands.autocomplete(style=known_styles)
    async def admin_disable(interaction: discord.Interaction[Any], style: str) -> None:
        await run_admin(interaction, "disable", *style.split())

    @admin.command(**_named("addstyle", admin=True))
    @app_commands.describe(**_described("addstyle", admin=True))
    async def admin_add(
        interaction: discord.Interaction[Any], name: str, prompt: str, lora: discord.Attachment | None = None
    ) -> None:
        name = name.strip()
        if any(c.isspace() for c in name):
            # The core takes the first word after "addstyle" as the name and the rest as the prompt. Quoted,
            # as it would be typed on Telegram, a name of several words stays whole and the core refuses it
            # as a style name (after its admin checks, in its own words), so nothing is stored.
            name = f'"{name}"'
        # The raw text keeps the prompt's own spacing and punctuation.
        text = f"addstyle {name} {prompt.strip()}"
        await run_admin(interaction, *text.split(), text=text, attachment=lora)

    @admin.command(**_named("removestyle", admin=True))
    @app_commands.describe(**_described("removestyle", admin=True))
    @app_commands.autocomplete(name=added_styles)
    async def admin_remove(interaction: discord.Interaction[Any], name: str) -> None:
        await run_admin(interaction, "removestyle", name)

    @admin.command(**_named("quota", admin=True))
    @app_commands.describe(**_described("quota", admin=True))
    async def admin_quota(interaction: discord.Interaction[Any], scope: Literal["user", "group"], limit: str) -> None:
        await run_admin(interaction, "quota", scope, limit.strip())

    @admin.command(**_named("results", admin=True))
    @app_commands.describe(**_described("results", admin=True))
    async def admin_results(interaction: discord.Interaction[Any], where: Literal["channel", "direct"]) -> None:
        await run_admin(interaction, "results", where)

    @admin.command(**_named("nsfw", admin=True))
    @app_commands.describe(**_described("nsfw", admin=True))
    async def admin_nsfw(interaction: discord.Interaction[Any], value: Literal["on", "off"]) -> None:
        await run_admin(interaction, "nsfw", value)

    tree.add_command(admin)
    log.debug("registered %d slash commands", len(tree.get_commands()))
