"""Long replies are split where a reader would expect it, never beyond a platform's limit."""

from __future__ import annotations

import pytest

from bot.core.formatting import split_message


def test_a_long_text_is_cut_at_line_breaks_and_every_piece_fits() -> None:
    text = "\n".join(f"line {i} " + "x" * 30 for i in range(200))
    pieces = split_message(text, 500)
    assert all(len(p) <= 500 for p in pieces)
    assert "\n".join(pieces) == text
    assert all(p.startswith("line ") for p in pieces), "no piece starts in the middle of a line"


def test_a_line_longer_than_the_limit_is_cut_hard_and_empty_text_gets_a_placeholder() -> None:
    assert split_message("a" * 25, 10) == ["a" * 10, "a" * 10, "a" * 5]
    assert split_message("", 10, empty=" ") == [" "]
    with pytest.raises(ValueError):
        split_message("x", 0)
