"""The conversation service against a real SQLite file: how many statements an event costs.

Every statement is a round trip to aiosqlite's thread through one lock; under load those round trips
limited the bot (docs/benchmarks.md), so their number per event is held to a budget here. What the
user reads is checked by the flow tables and the platform journeys; these tests only count.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from bot.core.events import ButtonPressed, Command, Event, OfferedFile, PhotosOffered
from bot.core.limits import Limits
from bot.core.replies import Reply
from bot.service import ConversationService, Origin, StyleEntry
from pipeline import jobs
from storage.blobs import LocalBlobStore
from storage.db import Database, open_database
from storage.models import Platform, RunStatus
from storage.repositories import Repositories

ALICE = Origin(Platform.TELEGRAM, "1", "1", private=True, display_name="Alice")
IN_GROUP = Origin(
    Platform.TELEGRAM, "1", "-100", private=False, display_name="Alice", community_id="-100", is_admin=True,
    direct_chat_id="1",
)  # fmt: skip
STYLES = {"watercolor": StyleEntry(jobs.StyleSpec(name="watercolor", prompt="watercolor painting"))}


class RecordingQueue:
    async def available(self) -> bool:
        return True

    async def submit(self, request: jobs.TrainRequest | jobs.GenerateRequest, attempt: int) -> int | None:
        return 0

    async def position(self, kind: str, run_id: str, attempt: int) -> int | None:
        return 1

    async def cancel(self, kind: str, run_id: str, attempt: int) -> bool:
        return True

    async def forget(self, run_ids: Sequence[str], *, ended: bool = False) -> int:
        return 0


def _jpeg(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (shade, 80, 120)).save(buffer, "JPEG")
    return buffer.getvalue()


@dataclass
class Counted:
    service: ConversationService
    repos: Repositories
    statements: int = 0

    def traced(self, sql: str) -> None:
        # An INSERT that fires a trigger is traced twice: budgets below count it so.
        self.statements += 1

    async def send(self, event: Event, origin: Origin = ALICE) -> tuple[list[Reply], int]:
        self.statements = 0

        async def download(offered: OfferedFile) -> bytes:
            return _jpeg(int(offered.ref))

        replies = await self.service.handle(origin, event, download)
        return replies, self.statements


@pytest.fixture
async def counted(tmp_path: Path) -> AsyncIterator[Counted]:
    db: Database = await open_database(tmp_path / "bot.sqlite3")
    repos = Repositories(db)
    service = ConversationService(repos, LocalBlobStore(tmp_path / "blobs"), RecordingQueue(), STYLES, Limits())
    counted = Counted(service, repos)
    await db.conn.set_trace_callback(counted.traced)
    try:
        yield counted
    finally:
        await db.close()


def _photo(n: int) -> PhotosOffered:
    return PhotosOffered((OfferedFile(str(n), 1000, "image/jpeg", compressed=True),))


async def test_a_private_journey_stays_within_its_statement_budget(counted: Counted) -> None:
    # (event, most statements): the user, the state and facts in one read, then what the effects write.
    await counted.send(Command("start"))  # creates the user
    journey: list[tuple[Event, int]] = [
        (Command("start"), 2),
        (Command("train"), 8),  # + state, discard check, a new photo set in a transaction
        *[(_photo(n), 6) for n in range(3)],  # + the set and its count, the photo (a trigger), the facts again
        (Command("done"), 3),  # + state
        (ButtonPressed("subject", "woman"), 11),  # + state, set, photos, submit, model, run, facts again
        (Command("status"), 2),
    ]
    for event, budget in journey:
        replies, statements = await counted.send(event)
        assert replies, event
        assert statements <= budget, f"{event}: {statements} statements, budget {budget}"


async def test_a_group_command_reads_the_community_once(counted: Counted) -> None:
    await counted.send(Command("styles"), IN_GROUP)  # creates the user and the community
    _, statements = await counted.send(Command("styles"), IN_GROUP)
    assert statements == 3, "the user, the community, the user's facts"
    _, statements = await counted.send(Command("admin", ("quota", "user", "5"), "quota user 5"), IN_GROUP)
    assert statements == 4, "+ the quota written; nothing is read again after the last effect"


async def test_follow_ups_without_writes_are_decided_on_what_was_read(counted: Counted) -> None:
    await counted.send(Command("start"))
    user = await counted.repos.users.find(Platform.TELEGRAM, "1")
    assert user is not None
    # Two queued generations: /cancel closes both, and each closing is a follow-up event.
    model = await counted.repos.models.create(user.id, None)
    await counted.repos.models.mark_ready(model.id, "lora", None, "sks", None)
    for _ in range(2):
        await counted.send(Command("generate", ("watercolor",), "watercolor"))
    replies, statements = await counted.send(Command("cancel"))
    assert len(replies) >= 3
    assert await counted.repos.runs.active(user.id) == []
    assert len(await counted.repos.runs.by_status(RunStatus.CANCELLED)) == 2
    # The user, facts, the runs, 2 × (finish, delivered), the facts once more: the follow-ups
    # (RunsCancelled, then a JobFinished per run) write nothing, so nothing is read again for them;
    # last, one read of where the runs' progress messages are, for every edit of the event.
    assert statements == 9
