"""The settings both processes read, each declared once: where things live, which Redis, which models.

:class:`SharedSettings` is the base of ``bot.config.BotSettings`` and ``pipeline.config.WorkerSettings``
(and, through :class:`~storage.blob_config.BlobStoreSettings`, of the blob store's settings). A field
here has one name, one default and one help text for both; ``facechain-bot up`` runs both processes
from the same environment, so they cannot disagree about it. Torch-free: the bot imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.jobs import RedisUrl
from pipeline.recipe import DEFAULT_RECIPE, RECIPES
from storage.blob_config import BlobStoreSettings, local_blob_dir

#: How every settings class reads its fields: ``FACECHAIN_<NAME>`` in the environment or in ``.env``;
#: an empty value counts as unset (so a copied ``.env.example`` keeps the defaults).
SETTINGS_CONFIG = SettingsConfigDict(
    env_prefix="FACECHAIN_",
    env_file=".env",
    env_file_encoding="utf-8",
    env_ignore_empty=True,
    extra="ignore",
)

#: A Prometheus endpoint's port (each process has its own setting, so ``up`` can serve both).
MetricsPort = Annotated[
    int | None, Field(ge=1, le=65535, description="Serve Prometheus metrics at :PORT/metrics; unset = off.")
]


class SharedSettings(BaseSettings, BlobStoreSettings):
    """Fields the bot and the worker both read (the blob store's: :class:`BlobStoreSettings`)."""

    model_config = SETTINGS_CONFIG

    data_dir: Path = Field(
        default=Path("./data"), description="The SQLite database (bot) and the local blob store (both)."
    )
    redis_url: RedisUrl = Field(default="redis://127.0.0.1:6379/0", description="The job queue's Redis.")
    models_dir: Path = Field(default=Path("./models"), description="Where `models fetch` puts weights.")
    base_model: str = Field(
        default=RECIPES[DEFAULT_RECIPE].base_model,
        description="A diffusers folder, a single .safetensors checkpoint, or a hub id fetched into models_dir.",
    )
    styles_dir: Path | None = Field(default=None, description="Extra style files (.toml) beside the built-ins.")
    candidates: int = Field(
        default=RECIPES[DEFAULT_RECIPE].candidates, ge=1, le=40, description="Candidates generated per /generate."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="The lowest level of log line each process writes."
    )

    @property
    def blob_dir(self) -> Path:
        """The local blob store's folder (used when FACECHAIN_BLOB_URL is unset)."""
        return local_blob_dir(self.data_dir)
