"""Platform-neutral shaping of message text."""

from __future__ import annotations


def split_message(text: str, limit: int, *, empty: str = "…") -> list[str]:
    """``text`` in pieces of at most ``limit`` characters, cut at line breaks where possible.

    Platforms cap a message's length (Telegram 4096, Discord 2000); an empty text becomes ``empty``.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    pieces: list[str] = []
    rest = text or empty
    while len(rest) > limit:
        cut = rest.rfind("\n", 0, limit)
        if cut <= 0:
            cut = limit
        pieces.append(rest[:cut])
        rest = rest[cut:].lstrip("\n")
    pieces.append(rest)
    return pieces
