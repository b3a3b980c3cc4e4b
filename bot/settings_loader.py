"""Load a pydantic-settings class, or stop with one clear line naming the bad setting."""

from __future__ import annotations

import re
from typing import TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings
from pydantic_settings import SettingsError as SourceError

S = TypeVar("S", bound=BaseSettings)

ENV_PREFIX = "FACECHAIN_"


class SettingsError(SystemExit):
    """Raised instead of a traceback: its text names the setting and what is wrong with it."""


def describe(exc: ValidationError) -> str:
    """One line per problem, naming the environment variable. Input values are never echoed (tokens)."""
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        field = str(error["loc"][0]) if error["loc"] else "?"
        lines.append(f"setting {ENV_PREFIX}{field.upper()}: {error['msg']}")
    return "; ".join(lines)


def describe_source_error(exc: SourceError) -> str:
    """pydantic-settings' own error (a value it could not even decode, e.g. bad JSON for a list)."""
    field = re.search(r'field "([^"]+)"', str(exc))
    name = f"{ENV_PREFIX}{field.group(1).upper()}" if field else "a FACECHAIN_* value"
    return f"setting {name}: the value cannot be read (a list is written as comma-separated words or as JSON)"


def load_settings(cls: type[S]) -> S:
    """Instantiate ``cls`` from the environment (and .env); a bad value raises :class:`SettingsError`."""
    try:
        return cls()
    except ValidationError as exc:
        raise SettingsError(f"facechain-bot: invalid configuration: {describe(exc)}") from None
    except SourceError as exc:
        raise SettingsError(f"facechain-bot: invalid configuration: {describe_source_error(exc)}") from None
    except UnicodeDecodeError:
        raise SettingsError("facechain-bot: the .env file is not UTF-8 text: save it as UTF-8") from None
    except OSError as exc:
        raise SettingsError(f"facechain-bot: the .env file cannot be read: {exc.strerror} ({exc.filename})") from None
