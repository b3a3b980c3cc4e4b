"""The Telegram adapter: a thin translator between python-telegram-bot and the conversation core."""

from bot.telegram_adapter.app import AdapterOptions, TelegramAdapter, TelegramStartupError, run_telegram

__all__ = ["AdapterOptions", "TelegramAdapter", "TelegramStartupError", "run_telegram"]
