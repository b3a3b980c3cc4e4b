"""Limits the conversation enforces; the bot settings fill them in."""

from __future__ import annotations

from dataclasses import dataclass

#: Image types accepted for training photos (HEIC is refused with a hint to send JPEG).
ACCEPTED_MIME = frozenset({"image/jpeg", "image/png", "image/webp"})
ACCEPTED_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
#: iPhone photos sent as files; they get their own hint rather than a generic "unsupported type".
HEIC_MIME = frozenset({"image/heic", "image/heif", "image/heic-sequence", "image/heif-sequence"})
HEIC_SUFFIXES = frozenset({".heic", ".heif"})


@dataclass(frozen=True, slots=True)
class Limits:
    min_photos: int = 3
    max_photos: int = 10
    #: Largest photo accepted, in bytes (also bounded by what the platform lets a bot download).
    max_photo_bytes: int = 20 * 1024 * 1024
    #: Default number of portraits per /generate, and the most a user may ask for.
    default_count: int = 4
    max_count: int = 4
    #: /generate runs per user per day when the community sets no quota (None = unlimited).
    daily_generations: int | None = 20
    #: Largest style LoRA an admin may upload, in bytes.
    max_lora_bytes: int = 256 * 1024 * 1024
    #: Longest prompt of an admin-added style (the job contract's StyleSpec allows 2000 characters).
    max_style_prompt_chars: int = 2000
