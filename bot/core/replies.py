"""Replies the conversation core asks the adapters to show. Platform-neutral: an adapter decides
how a button or a progress message looks on its platform."""

from __future__ import annotations

from dataclasses import dataclass

#: Telegram's callback_data limit; Discord's custom_id allows 100, so this bound serves both.
MAX_BUTTON_DATA = 64
_COMMUNITY_MARK = "@"


@dataclass(frozen=True, slots=True)
class Button:
    label: str
    action: str
    value: str = ""
    #: The community the button acts for wherever it is pressed: a result sent to a member's private
    #: chat keeps its server's styles and limits there (the adapter checks the membership first).
    community: str | None = None

    @property
    def data(self) -> str:
        """The compact form carried by the platform (``action:value`` or ``action:value@community``),
        at most 64 bytes."""
        scope = f"{_COMMUNITY_MARK}{self.community}" if self.community else ""
        return f"{self.action}:{self.value}{scope}"

    def __post_init__(self) -> None:
        if _COMMUNITY_MARK in self.value:
            raise ValueError(f"a button value may not hold {_COMMUNITY_MARK!r}: {self.value[:80]!r}")
        if len(self.data.encode()) > MAX_BUTTON_DATA:
            raise ValueError(f"button data over {MAX_BUTTON_DATA} bytes: {self.data[:80]!r}")

    @staticmethod
    def parse(data: str) -> tuple[str, str, str | None]:
        """Split button data back into (action, value, community or None)."""
        action, _, rest = data.partition(":")
        value, _, community = rest.partition(_COMMUNITY_MARK)
        return action, value, community or None


@dataclass(frozen=True, slots=True)
class Text:
    """A message; ``buttons`` are shown under it (rows are the adapter's choice)."""

    text: str
    buttons: tuple[Button, ...] = ()
    #: Only the asking user should see it (Discord ephemeral); ignored where the platform can't.
    private: bool = False


@dataclass(frozen=True, slots=True)
class Photos:
    """Images from the blob store, sent together (a Telegram media group, one Discord message)."""

    keys: tuple[str, ...]
    caption: str
    buttons: tuple[Button, ...] = ()


@dataclass(frozen=True, slots=True)
class ProgressMessage:
    """A new message that later :class:`EditProgress` replies for the same run edit in place."""

    run_id: str
    text: str
    buttons: tuple[Button, ...] = ()


@dataclass(frozen=True, slots=True)
class EditProgress:
    """Replace the text of a run's progress message (adapters throttle these; the last one wins)."""

    run_id: str
    text: str
    #: The final edit of a run: never dropped by throttling.
    final: bool = False
    #: Where the message is, as stored with the run: (chat id, message id). The service fills it in,
    #: for an adapter that does not remember the message (it restarted since it sent it).
    stored_at: tuple[str, str] | None = None


Reply = Text | Photos | ProgressMessage | EditProgress
