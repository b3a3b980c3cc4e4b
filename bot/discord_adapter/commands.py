"""The slash commands: each one turns its options into the core's :class:`Command` and hands it on.

The command texts the core writes (``/train``, ``/done``, ``/generate <style>``) are the same here;
the core's ``/admin <subcommand> ...`` is ``/facechain-admin <subcommand>`` with typed options.

/train opens a modal with a file-upload field in a DM (photos go to the bot only, never to a
channel). In a server it is passed on as it is, and the core says where photos are collected.
"""

# No ``from __future__ import annotations``: discord.py reads the option types (a count range that
# depends on the settings) from the evaluated annotations of functions built at runtime.

import logging
from typing import Any, Literal, Protocol

import discord
from discord import app_commands

from bot.core.events import Command, Event, PhotosOffered
from bot.core.limits import Limits
from bot.core.state import StyleInfo
from bot.discord_adapter.translate import offered_file
from bot.service import Downloader

log = logging.getLogger("facechain.discord")

ADMIN_GROUP = "facechain-admin"
#: Discord's limits: autocomplete choices, characters of a choice's name and value.
MAX_CHOICES = 25
MAX_CHOICE_CHARS = 100
#: A /train upload modal is forgotten after this many seconds unanswered.
MODAL_TIMEOUT_S = 15 * 60.0


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

    def downloader(self, attachments: list[discord.Attachment], limit: int) -> Downloader:
        """A downloader for these attachments that refuses files over ``limit`` bytes before fetching."""
        ...


class UploadModal(discord.ui.Modal):
    """/train in a DM: up to ``max_photos`` selfies in one go (more can follow as DM attachments)."""

    def __init__(self, runner: InteractionRunner, limits: Limits) -> None:
        super().__init__(title="Train your face model", timeout=MODAL_TIMEOUT_S)
        self._runner = runner
        self._limits = limits
        self.upload: discord.ui.FileUpload[Any] = discord.ui.FileUpload(
            custom_id="fc-train-photos", required=False, min_values=0, max_values=min(limits.max_photos, 10)
        )
        self.add_item(
            discord.ui.Label(
                text="Your selfies",
                description=f"{limits.min_photos} to {limits.max_photos} photos: only you, good light, "
                "different angles.",
                component=self.upload,
            )
        )

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        files = list(self.upload.values)
        events: list[Event] = [Command("train")]
        if files:
            events.append(PhotosOffered(tuple(offered_file(a) for a in files)))
        await self._runner.run_interaction(
            interaction, events, self._runner.downloader(files, self._limits.max_photo_bytes)
        )


def _command(name: str, *args: str) -> Command:
    return Command(name=name, args=tuple(args), text=" ".join(args))


def _choices(styles: tuple[StyleInfo, ...], current: str) -> list[app_commands.Choice[str]]:
    wanted = current.casefold().strip()
    found = []
    for style in styles:
        if wanted and wanted not in style.name.casefold():
            continue
        label = f"{style.name} - {style.description}" if style.description else style.name
        found.append(app_commands.Choice(name=label[:MAX_CHOICE_CHARS], value=style.name[:MAX_CHOICE_CHARS]))
    return found[:MAX_CHOICES]


def register_commands(tree: app_commands.CommandTree[Any], runner: InteractionRunner, limits: Limits) -> None:
    """Add every command of the bot to ``tree``."""
    max_count = limits.max_count

    async def enabled_styles(interaction: discord.Interaction[Any], current: str) -> list[app_commands.Choice[str]]:
        return _choices(await runner.styles_here(interaction, every=False), current)

    async def known_styles(interaction: discord.Interaction[Any], current: str) -> list[app_commands.Choice[str]]:
        return _choices(await runner.styles_here(interaction, every=True), current)

    async def simple(interaction: discord.Interaction[Any], name: str) -> None:
        await runner.run_interaction(interaction, [_command(name)])

    @tree.command(name="start", description="What this bot does and how to begin")
    async def start(interaction: discord.Interaction[Any]) -> None:
        await simple(interaction, "start")

    @tree.command(name="help", description="The commands")
    async def help_(interaction: discord.Interaction[Any]) -> None:
        await simple(interaction, "help")

    @tree.command(
        name="train", description=f"Train your face model from {limits.min_photos}-{limits.max_photos} selfies"
    )
    async def train(interaction: discord.Interaction[Any]) -> None:
        if interaction.guild_id is None:
            await interaction.response.send_modal(UploadModal(runner, limits))
        else:
            await simple(interaction, "train")

    @tree.command(name="done", description="Finish uploading photos and start training")
    async def done(interaction: discord.Interaction[Any]) -> None:
        await simple(interaction, "done")

    @tree.command(name="generate", description="Make portraits of yourself in a style")
    @app_commands.describe(style="A style enabled here", count=f"How many portraits (1-{max_count})")
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

    @tree.command(name="styles", description="The styles you can use here")
    async def styles(interaction: discord.Interaction[Any]) -> None:
        await simple(interaction, "styles")

    @tree.command(name="status", description="Your face model, running jobs and today's portraits")
    async def status(interaction: discord.Interaction[Any]) -> None:
        await simple(interaction, "status")

    @tree.command(name="cancel", description="Stop what is going on (photo upload, training, portraits)")
    async def cancel(interaction: discord.Interaction[Any]) -> None:
        await simple(interaction, "cancel")

    @tree.command(name="forget", description="Delete your photos, face model and portraits")
    async def forget(interaction: discord.Interaction[Any]) -> None:
        await simple(interaction, "forget")

    admin = app_commands.Group(
        name=ADMIN_GROUP,
        description="Manage styles, quotas and results for this server",
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

    @admin.command(name="styles", description="Every style, on or off here")
    async def admin_styles(interaction: discord.Interaction[Any]) -> None:
        await run_admin(interaction, "styles")

    @admin.command(name="enable", description="Let members use a style")
    @app_commands.autocomplete(style=known_styles)
    async def admin_enable(interaction: discord.Interaction[Any], style: str) -> None:
        await run_admin(interaction, "enable", *style.split())

    @admin.command(name="disable", description="Stop members from using a style")
    @app_commands.autocomplete(style=known_styles)
    async def admin_disable(interaction: discord.Interaction[Any], style: str) -> None:
        await run_admin(interaction, "disable", *style.split())

    @admin.command(name="add", description="Add a style of this server: a prompt, optionally a LoRA")
    @app_commands.describe(
        name="a-z, 0-9, _ or -", prompt="What the portraits look like", lora="A style LoRA (.safetensors)"
    )
    async def admin_add(
        interaction: discord.Interaction[Any], name: str, prompt: str, lora: discord.Attachment | None = None
    ) -> None:
        # The raw text keeps the prompt's own spacing and punctuation.
        text = f"addstyle {name} {prompt.strip()}"
        await run_admin(interaction, "addstyle", name, *prompt.split(), text=text, attachment=lora)

    @admin.command(name="remove", description="Remove a style added here")
    @app_commands.autocomplete(name=known_styles)
    async def admin_remove(interaction: discord.Interaction[Any], name: str) -> None:
        await run_admin(interaction, "removestyle", name)

    @admin.command(name="quota", description="Portrait runs a day, per member or for the whole server")
    @app_commands.describe(limit="A number, or off")
    async def admin_quota(interaction: discord.Interaction[Any], scope: Literal["user", "group"], limit: str) -> None:
        await run_admin(interaction, "quota", scope, limit.strip())

    @admin.command(name="results", description="Post portraits in the channel or in members' DMs")
    async def admin_results(interaction: discord.Interaction[Any], where: Literal["channel", "direct"]) -> None:
        await run_admin(interaction, "results", where)

    @admin.command(name="nsfw", description="Allow NSFW portraits (only ever in age-restricted channels)")
    async def admin_nsfw(interaction: discord.Interaction[Any], value: Literal["on", "off"]) -> None:
        await run_admin(interaction, "nsfw", value)

    tree.add_command(admin)
    log.debug("registered %d slash commands", len(tree.get_commands()))
