"""The command catalogue is the one source: /help and the docs' table are its renderings."""

from __future__ import annotations

import re
from pathlib import Path

from bot.core import catalogue, texts

DOC = Path(__file__).resolve().parents[2] / "docs" / "commands.md"


def test_the_docs_command_table_is_the_catalogue() -> None:
    found = re.search(r"<!-- commands:begin -->\n(.*)\n<!-- commands:end -->", DOC.read_text(), re.S)
    assert found is not None, "docs/commands.md lost its table markers"
    assert found[1] == catalogue.markdown_table(), "regenerate the table: see the top of docs/commands.md"


def test_help_lists_the_catalogue_in_order() -> None:
    lines = texts.help_text(admin_here=True).splitlines()[1:]
    names = [re.match(r"/([a-z]+)", line)[1] for line in lines]  # type: ignore[index]
    assert names == [*(c.name for c in catalogue.listed()), "admin"]
    assert "/generate [style] [count] - make portraits" in lines
    assert "/admin" not in texts.help_text(admin_here=False)


def test_admin_usage_comes_from_the_catalogue() -> None:
    usage = texts.admin_usage().splitlines()[1:]
    assert usage == [catalogue.help_line(c, catalogue.ADMIN) for c in catalogue.ADMIN_COMMANDS]
    assert texts.admin_usage_for("quota") == "Usage: /admin quota <user|group> <number|off> - " + (
        "portrait runs a day (0 to 10000), per member or for everyone"
    )


def test_names_fit_both_platforms() -> None:
    for command in (*catalogue.COMMANDS, catalogue.ADMIN, *catalogue.ADMIN_COMMANDS):
        assert re.fullmatch(r"[a-z0-9_]{1,32}", command.name), command.name
        assert re.fullmatch(r"[a-z0-9_-]{1,32}", command.slash_name), command.slash_name
        assert 1 <= len(command.help) <= 100, command.name  # Discord's description limit
        for argument in command.arguments:
            assert re.fullmatch(r"[a-z0-9_]{1,32}", argument.name) and 1 <= len(argument.help) <= 100
