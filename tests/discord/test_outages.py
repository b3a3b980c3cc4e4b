"""A bot restarted while a training runs goes on editing the same progress message (Discord)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from bot.core import texts
from pipeline import jobs
from pipeline.worker import StageControl
from tests.discord.fake_discord import FakeDiscord, Message
from tests.discord.harness import ScriptedRunner, bot_settings, jpeg, scripted_stack

PROGRESS = "Training your face model"


@dataclass
class SlowRunner(ScriptedRunner):
    """Training steps that take long enough to restart the bot in the middle."""

    step_s: float = 3.0

    def train(self, request: jobs.TrainRequest, control: StageControl) -> jobs.TrainOutcome:
        for step in range(3):
            time.sleep(self.step_s)
            control.report(jobs.Stage.TRAINING, (step + 1) / 3, "")
        return super().train(request, control)


def _shown(message: Message) -> list[str]:
    return [message.original, *(text for _, text in message.edits)]


async def test_a_restarted_bot_goes_on_editing_the_progress_message(
    fake: FakeDiscord, tmp_path: Path, redis_url: str
) -> None:
    async with scripted_stack(fake, bot_settings(fake, tmp_path, redis_url), SlowRunner) as stack:
        kim = fake.user("kim")
        dm = fake.dm_channel(kim)
        photos = [fake.upload(f"p{i}.jpg", jpeg(seed=i), "image/jpeg") for i in range(3)]
        await stack.ask_to_train_in_dm(kim, photos)

        def progress_message() -> Message | None:
            return next((m for m in fake.seen_by(kim, dm) if any(PROGRESS in t for t in _shown(m))), None)

        progress = await fake.wait_for(progress_message, 30.0, "the progress message")

        await stack.stop_bot()
        await stack.start_bot()
        restarted = len(progress.edits)
        # Notes published while the bot was down are lost (pub/sub); the next ones edit the same message.
        await fake.wait_for(
            lambda: any(PROGRESS in text for _, text in progress.edits[restarted:]), 30.0, "a progress edit after"
        )
        await fake.wait_message(kim, dm, texts.model_ready(has_styles=True)[:20], 30.0)
        shown = [m for m in fake.seen_by(kim, dm) if any(PROGRESS in t for t in _shown(m))]
        assert shown == [progress], "no second progress message: the old one was edited"
