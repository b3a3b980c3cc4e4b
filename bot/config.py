"""Settings of the bot process. One pydantic-settings class; nothing else in bot/ reads the environment.

Every field is ``FACECHAIN_<NAME>`` in the environment or in an optional ``.env`` file. Tokens are
:class:`~pydantic.SecretStr`: their value never appears in a repr, a log line or an error message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AnyHttpUrl, Field, RedisDsn, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.core.limits import Limits


class BotSettings(BaseSettings):
    """The chat side: platforms, storage, limits."""

    model_config = SettingsConfigDict(
        env_prefix="FACECHAIN_",
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
    )

    data_dir: Path = Field(default=Path("./data"), description="SQLite database and blob store.")
    redis_url: RedisDsn = Field(default=RedisDsn("redis://127.0.0.1:6379/0"))
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    uvloop: bool = Field(
        default=False, description="Run the bot's event loop on uvloop when it is installed (experimental)."
    )

    # ---- Telegram
    telegram_token: SecretStr | None = None
    telegram_api_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("https://api.telegram.org"),
        description="Root of a Bot API server: methods at {root}/bot{token}/{method}.",
    )
    telegram_webhook_url: AnyHttpUrl | None = Field(default=None, description="Public URL; unset = polling.")
    telegram_webhook_secret: SecretStr | None = None
    telegram_webhook_listen: str = "0.0.0.0:8443"

    # ---- Discord
    discord_token: SecretStr | None = None
    discord_api_url: AnyHttpUrl = Field(default=AnyHttpUrl("https://discord.com/api/v10"))
    discord_gateway_url: AnyHttpUrl | None = Field(
        default=None, description="Gateway override (a proxy or a test server); unset = ask /gateway/bot."
    )

    # ---- limits (the conversation enforces them)
    min_photos: int = Field(default=3, ge=1, le=20)
    max_photos: int = Field(default=10, ge=1, le=50)
    max_photo_mb: float = Field(default=20.0, gt=0, le=200)
    default_count: int = Field(default=4, ge=1, le=10)
    max_count: int = Field(default=4, ge=1, le=10)
    daily_generations: int | None = Field(default=20, ge=0, description="Per user per day; empty = unlimited.")
    max_lora_mb: float = Field(default=256.0, gt=0)
    candidates: int = Field(default=10, ge=1, le=40, description="Candidates generated per /generate.")

    # ---- the GPU side, as the bot needs to know it
    base_model: str = Field(default="ly261666/cv_portrait_model")
    models_dir: Path = Field(default=Path("./models"))
    styles_dir: Path | None = None

    @property
    def database_path(self) -> Path:
        return self.data_dir / "facechain.sqlite3"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

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
