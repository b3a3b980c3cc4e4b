"""The core's buttons as Discord buttons that keep working after a restart.

Every button carries its core data (``action:value``, at most 64 bytes) in its custom_id as
``fc:<data>``. :class:`CoreButton` is a :class:`discord.ui.DynamicItem` registered once at start-up,
so a press is understood from the custom_id alone: no view has to be remembered, and a button under
a message sent before a restart works like a new one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol, Self, runtime_checkable

import discord

from bot.core.replies import Button

#: custom_id prefix of the bot's buttons.
CUSTOM_ID_PREFIX = "fc:"
#: Discord's limits: button label characters, buttons under one message.
MAX_LABEL = 80
MAX_BUTTONS = 25


@runtime_checkable
class ButtonSink(Protocol):
    """Receives presses of the bot's buttons (the client implements it)."""

    async def button_pressed(
        self, interaction: discord.Interaction[Any], action: str, value: str, community: str | None
    ) -> None:
        """Handle a press of the button whose core data is ``action:value``, acting for ``community``'s
        server where it is not None (see :class:`bot.core.replies.Button`)."""
        ...


class CoreButton(discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=r"fc:(?P<data>.{1,97})"):
    """A button of a core reply; its state is its custom_id."""

    def __init__(self, data: str, label: str = "…") -> None:
        super().__init__(
            discord.ui.Button(
                label=label[:MAX_LABEL] or "…",
                style=discord.ButtonStyle.secondary,
                custom_id=CUSTOM_ID_PREFIX + data,
            )
        )
        self.data = data

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> Self:
        label = getattr(item, "label", None) or "…"
        return cls(match["data"], label)

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        sink = interaction.client
        if isinstance(sink, ButtonSink):
            await sink.button_pressed(interaction, *Button.parse(self.data))


def button_view(buttons: Sequence[Button]) -> discord.ui.View | None:
    """A view holding the buttons (rows of five, as Discord lays them out), or None without buttons."""
    if not buttons:
        return None
    view = discord.ui.View(timeout=None)
    for button in buttons[:MAX_BUTTONS]:
        view.add_item(CoreButton(button.data, button.label))
    return view
