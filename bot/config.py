"""Settings of the bot process. One pydantic-settings class; nothing else in bot/ reads the environment.

Every field is ``FACECHAIN_<NAME>`` in the environment or in an optional ``.env`` file. Tokens are
:class:`~pydantic.SecretStr`: their value never appears in a repr, a log line or an error message.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import AnyHttpUrl, AnyUrl, Field, SecretStr, UrlConstraints, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings

from bot.core.limits import Limits
from pipeline.shared_settings import SETTINGS_CONFIG, MetricsPort, SharedSettings

#: @BotFather's tokens: the bot's numeric id, a colon, a 35-character secret (a little slack either way).
_TELEGRAM_TOKEN = re.compile(r"[0-9]{3,20}:[A-Za-z0-9_-]{30,64}")
#: The developer portal's bot tokens: three base64url parts joined by dots.
_DISCORD_TOKEN = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
#: Telegram's rule for a webhook's secret_token (1-256 of these), with a floor of our own: a short
#: secret is guessable, and could not be told apart from ordinary words in the logs.
_WEBHOOK_SECRET = re.compile(r"[A-Za-z0-9_-]{12,256}")

#: A websocket address as discord.py's gateway connection (aiohttp) accepts it; Discord's is wss://.
GatewayUrl = Annotated[AnyUrl, UrlConstraints(allowed_schemes=["wss", "ws", "https", "http"], host_required=True)]


def _checked_secret(value: SecretStr | None, shape: re.Pattern[str], expected: str) -> SecretStr | None:
    """``value`` if it has the ``shape``; else an error saying what is wrong, never quoting the value."""
    if value is None:
        return None
    text = value.get_secret_value()
    if any(c.isspace() for c in text):
        raise PydanticCustomError(
            "secret_whitespace",
            "contains a space, tab or line break; copy the value again without them ({expected})",
            {"expected": expected},
        )
    if not shape.fullmatch(text):
        raise PydanticCustomError("secret_shape", "is malformed; expected {expected}", {"expected": expected})
    return value


class ChatSecrets(BaseSettings):
    """The chat platforms' secrets, checked at start. Every process reads them to keep them out of its logs."""

    model_config = SETTINGS_CONFIG

    telegram_token: SecretStr | None = None
    telegram_webhook_secret: SecretStr | None = None
    discord_token: SecretStr | None = None

    @field_validator("telegram_token")
    @classmethod
    def _telegram_token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        return _checked_secret(value, _TELEGRAM_TOKEN, "the token @BotFather gave, like 123456789:AAE…")

    @field_validator("telegram_webhook_secret")
    @classmethod
    def _webhook_secret_shape(cls, value: SecretStr | None) -> SecretStr | None:
        return _checked_secret(value, _WEBHOOK_SECRET, "12 to 256 letters, digits, _ or -")

    @field_validator("discord_token")
    @classmethod
    def _discord_token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        return _checked_secret(
            value, _DISCORD_TOKEN, "the token from the developer portal (Bot → Token): three parts joined by dots, "
            "without a 'Bot ' prefix",
        )  # fmt: skip

    def secrets(self) -> tuple[SecretStr | None, ...]:
        """Every secret set, for the log redaction."""
        return (self.telegram_token, self.telegram_webhook_secret, self.discord_token)


class BotSettings(ChatSecrets, SharedSettings):
    """The chat side: platforms, limits, lost runs (what the worker reads too: :class:`SharedSettings`)."""

    model_config = SETTINGS_CONFIG

    bot_metrics_port: MetricsPort = None
    uvloop: bool = Field(
        default=False, description="Run the bot's event loop on uvloop when it is installed (experimental)."
    )

    # ---- Telegram (the token and the webhook secret: ChatSecrets)
    telegram_api_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("https://api.telegram.org"),
        description="Root of a Bot API server: methods at {root}/bot{token}/{method}.",
    )
    telegram_webhook_url: AnyHttpUrl | None = Field(default=None, description="Public URL; unset = polling.")
    telegram_webhook_listen: str = Field(default="0.0.0.0:8443", description="host:port ([::]:8443 for IPv6).")

    # ---- Discord (the token: ChatSecrets)
    discord_api_url: AnyHttpUrl = Field(default=AnyHttpUrl("https://discord.com/api/v10"))
    discord_gateway_url: GatewayUrl | None = Field(
        default=None,
        description="Gateway override (wss://gateway.discord.gg, a proxy or a test server); unset = ask /gateway/bot.",
    )

    # ---- limits (the conversation enforces them)
    min_photos: int = Field(default=3, ge=1, le=20)
    max_photos: int = Field(default=10, ge=1, le=50)
    max_photo_mb: float = Field(default=20.0, gt=0, le=200)
    default_count: int = Field(default=4, ge=1, le=10)
    max_count: int = Field(default=4, ge=1, le=10)
    daily_generations: int | None = Field(
        default=20, ge=0, description="/generate runs per person per day, in every chat; off = unlimited."
    )
    max_lora_mb: float = Field(default=256.0, gt=0)

    @field_validator("daily_generations", mode="before")
    @classmethod
    def _off_is_unlimited(cls, value: object) -> object:
        # An empty value means "not set" (the default applies), so "no limit" needs a word of its own.
        return None if isinstance(value, str) and value.strip().casefold() in ("off", "unlimited") else value

    # ---- runs whose worker is lost (bot.supervisor): bounded within heartbeat TTL + lost-after + interval
    run_check_interval_s: float = Field(
        default=15.0, gt=0, le=600, description="How often the bot compares active runs with the queue."
    )
    run_lost_after_s: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="How long a run's job may look gone, or its worker silent, before the run restarts or fails.",
    )
    run_no_worker_after_s: float = Field(
        default=900.0,
        ge=0,
        le=86_400,
        description="How long a queued run waits while no worker serves its queue, before it fails (not charged).",
    )
    run_max_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description="Attempts of a run whose worker is lost, before it fails (user not charged).",
    )

    @field_validator("telegram_webhook_listen")
    @classmethod
    def _host_and_port(cls, value: str) -> str:
        _host, sep, port = value.strip().rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("expected host:port, e.g. 0.0.0.0:8443 or [::]:8443")
        return value.strip()

    def secrets(self) -> tuple[SecretStr | None, ...]:
        """Every secret set (the chat platforms' and the blob store's), for the log redaction."""
        return (*super().secrets(), self.s3_secret_access_key)

    @property
    def database_path(self) -> Path:
        return self.data_dir / "facechain.sqlite3"

    def limits(self) -> Limits:
        return Limits(
            min_photos=self.min_photos,
            max_photos=max(self.max_photos, self.min_photos),
            max_photo_bytes=int(self.max_photo_mb * 1024 * 1024),
            default_count=min(self.default_count, self.max_count),
            max_count=self.max_count,
            daily_generations=self.daily_generations,
            max_lora_bytes=int(self.max_lora_mb * 1024 * 1024),
        )
