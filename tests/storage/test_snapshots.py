"""Snapshots read in one statement what the other repositories read in many: they must agree with them."""

from __future__ import annotations

import hashlib
from datetime import date

import pytest

from storage.db import Database
from storage.models import Delivery, ModelStatus, PhotoSetStatus, Platform, ResultsTo, RunKind, RunStatus
from storage.repositories import Repositories
from tests.storage.conftest import FakeClock

MONDAY = date(2026, 3, 2)
TUESDAY = date(2026, 3, 3)
TG = Delivery(Platform.TELEGRAM, chat_id="42")


async def add_photo(repos: Repositories, set_id: int, user_id: int, key: str) -> None:
    digest = hashlib.sha256(key.encode()).hexdigest()
    assert await repos.photos.add_photo(set_id, user_id, key, digest, 100, 64, 64, "image/jpeg") is not None


class Statements:
    """Counts the statements the database runs (each one a round trip to aiosqlite's thread)."""

    def __init__(self) -> None:
        self.count = 0

    @classmethod
    async def on(cls, db: Database) -> Statements:
        statements = cls()
        await db.conn.set_trace_callback(statements._traced)
        return statements

    def _traced(self, sql: str) -> None:
        self.count += 1


# -------------------------------------------------------------------------------------- users
async def test_a_new_user_has_an_empty_snapshot(repos: Repositories) -> None:
    ada = await repos.users.get_or_create(Platform.TELEGRAM, "1")
    snapshot = await repos.snapshots.user(ada.id, MONDAY)
    assert snapshot.state is None and snapshot.model_status is None and not snapshot.has_ready_model
    assert (snapshot.photo_count, snapshot.photo_keys, snapshot.active_runs, snapshot.generations_today) == (
        0, (), (), 0,
    )  # fmt: skip


async def test_the_user_snapshot_agrees_with_the_repositories(repos: Repositories, clock: FakeClock) -> None:
    ada = await repos.users.get_or_create(Platform.TELEGRAM, "1")
    bob = await repos.users.get_or_create(Platform.TELEGRAM, "2")
    group = await repos.communities.get_or_create(Platform.TELEGRAM, "-100")
    await repos.conversations.set_state(ada.id, {"mode": "collecting", "resume": "idle"})

    # A first model, ready, trained on a set; a second one training on a newer set.
    first_set = await repos.photos.open_set(ada.id)
    for key in ("k/z.jpg", "k/a.jpg", "k/m.jpg"):  # arrival order differs from key order
        await add_photo(repos, first_set.id, ada.id, key)
    await repos.photos.set_status(first_set.id, PhotoSetStatus.SUBMITTED)
    ready = await repos.models.create(ada.id, first_set.id, "woman")
    await repos.models.mark_ready(ready.id, "lora", None, "trigger", None)
    second_set = await repos.photos.open_set(ada.id)
    await add_photo(repos, second_set.id, ada.id, "k/2.jpg")
    await repos.photos.set_status(second_set.id, PhotoSetStatus.SUBMITTED)
    training = await repos.models.create(ada.id, second_set.id, "woman")

    # Runs: two active with the same timestamp (ordered by insertion), one finished, one of Bob's.
    await repos.runs.create("t1", ada.id, RunKind.TRAIN, TG, model_id=training.id)
    await repos.runs.create("g1", ada.id, RunKind.GENERATE, TG, model_id=ready.id, style="noir", count=4)
    await repos.runs.update_progress("g1", "generating", 1 / 3)
    clock.advance(seconds=1)
    await repos.runs.create("g0", ada.id, RunKind.GENERATE, TG, model_id=ready.id, style="noir", count=2)
    await repos.runs.finish("g0", RunStatus.DONE)
    await repos.runs.create("b1", bob.id, RunKind.TRAIN, TG)

    await repos.usage.increment(ada.id, group.id, MONDAY, n=3)
    await repos.usage.increment(ada.id, None, MONDAY, n=1)
    await repos.usage.increment(ada.id, None, TUESDAY, n=5)

    snapshot = await repos.snapshots.user(ada.id, MONDAY, group.id)
    latest = await repos.models.latest(ada.id)
    assert latest is not None
    assert snapshot.state == await repos.conversations.get_state(ada.id)
    assert snapshot.model_status is latest.status is ModelStatus.PENDING
    assert snapshot.has_ready_model
    assert snapshot.photo_count == 0, "no set is collecting"
    # Without a collecting set: the photos of the newest model's set.
    assert snapshot.photo_keys == ("k/2.jpg",)
    assert snapshot.active_runs == tuple(await repos.runs.active(ada.id))
    assert [r.id for r in snapshot.active_runs] == ["t1", "g1"]
    assert snapshot.active_runs[1].progress == 1 / 3, "floats come back exactly"
    assert snapshot.generations_today == await repos.usage.count_user(ada.id, MONDAY, group.id) == 3
    assert (await repos.snapshots.user(ada.id, MONDAY)).generations_today == 1
    assert (await repos.snapshots.user(ada.id, TUESDAY)).generations_today == 5

    # A collecting set wins: its count and its photos in arrival order.
    collecting = await repos.photos.open_set(ada.id)
    for key in ("c/9.jpg", "c/1.jpg"):
        await add_photo(repos, collecting.id, ada.id, key)
    snapshot = await repos.snapshots.user(ada.id, MONDAY)
    assert snapshot.photo_count == await repos.photos.count(collecting.id) == 2
    assert snapshot.photo_keys == tuple(p.blob_key for p in await repos.photos.photos(collecting.id))
    assert snapshot.photo_keys == ("c/9.jpg", "c/1.jpg")

    # The first model's set, when it is the newest model's.
    await repos.photos.discard_set(collecting.id)
    await repos.models.mark_failed(training.id, "cancelled", ModelStatus.CANCELLED)
    await repos.models.create(ada.id, first_set.id)
    assert (await repos.snapshots.user(ada.id, MONDAY)).photo_keys == ("k/z.jpg", "k/a.jpg", "k/m.jpg")


async def test_a_user_snapshot_is_one_statement(repos: Repositories, db: Database) -> None:
    ada = await repos.users.get_or_create(Platform.TELEGRAM, "1")
    await repos.runs.create("t1", ada.id, RunKind.TRAIN, TG)
    await repos.runs.create("t2", ada.id, RunKind.TRAIN, TG)
    statements = await Statements.on(db)
    snapshot = await repos.snapshots.user(ada.id, MONDAY)
    assert len(snapshot.active_runs) == 2
    assert statements.count == 1


# -------------------------------------------------------------------------------- communities
async def test_a_community_is_created_on_first_sight(repos: Repositories, db: Database) -> None:
    statements = await Statements.on(db)
    first = await repos.snapshots.community(Platform.TELEGRAM, "-100", MONDAY)
    again = await repos.snapshots.community(Platform.TELEGRAM, "-100", MONDAY)
    assert statements.count == 3 + 1, "read, create, read again; then one read"
    assert first == again
    assert first.community == await repos.communities.find(Platform.TELEGRAM, "-100")
    assert (first.custom_styles, first.generations_today) == ((), 0)
    assert first.community.results_to is ResultsTo.CHANNEL and not first.community.nsfw_allowed
    with pytest.raises(ValueError, match="external_id"):
        await repos.snapshots.community(Platform.TELEGRAM, "", MONDAY)


async def test_the_community_snapshot_agrees_with_the_repositories(repos: Repositories) -> None:
    ada = await repos.users.get_or_create(Platform.TELEGRAM, "1")
    bob = await repos.users.get_or_create(Platform.TELEGRAM, "2")
    club = await repos.communities.get_or_create(Platform.TELEGRAM, "-100")
    other = await repos.communities.get_or_create(Platform.TELEGRAM, "-200")
    await repos.communities.set_style_enabled(club.id, "Noir", False)
    await repos.communities.set_style_enabled(club.id, "sketch", True)
    await repos.communities.set_quota(club.id, "user", 3)
    await repos.communities.set_quota(club.id, "group", 10)
    await repos.communities.set_results_to(club.id, ResultsTo.DIRECT)
    await repos.communities.set_nsfw_allowed(club.id, True)
    await repos.communities.add_custom_style(club.id, "zebra", "stripes", "", "lora/z", 0.35, 0.8, ada.id)
    await repos.communities.add_custom_style(club.id, "Apple", "red", "blurry", None, 0.3, 0.9, None)
    await repos.communities.add_custom_style(club.id, "banana", "yellow")
    await repos.communities.add_custom_style(other.id, "other", "x")
    await repos.usage.increment(ada.id, club.id, MONDAY, n=2)
    await repos.usage.increment(bob.id, club.id, MONDAY, n=1)
    await repos.usage.increment(bob.id, club.id, TUESDAY, n=7)
    await repos.usage.increment(bob.id, other.id, MONDAY, n=4)
    await repos.usage.increment(bob.id, None, MONDAY, n=4)

    snapshot = await repos.snapshots.community(Platform.TELEGRAM, "-100", MONDAY)
    assert snapshot.community == await repos.communities.get(club.id)
    assert snapshot.community.enabled_styles == {"sketch"} and snapshot.community.disabled_styles == {"Noir"}
    assert snapshot.custom_styles == tuple(await repos.communities.custom_styles(club.id))
    assert [s.name for s in snapshot.custom_styles] == ["Apple", "banana", "zebra"], "by name, any case"
    assert snapshot.generations_today == await repos.usage.count_community(club.id, MONDAY) == 3


# ------------------------------------------------------------------------- cheaper common paths
async def test_a_known_user_is_found_in_one_statement(repos: Repositories, db: Database) -> None:
    ada = await repos.users.get_or_create(Platform.TELEGRAM, "1", "Ada")
    statements = await Statements.on(db)
    assert await repos.users.get_or_create(Platform.TELEGRAM, "1", "Ada") == ada
    assert await repos.users.get_or_create(Platform.TELEGRAM, "1") == ada
    assert statements.count == 2
    # A new name still goes through the transaction that stores it.
    assert await repos.users.get_or_create(Platform.TELEGRAM, "1", "Ada L.") == ada
    assert (await repos.users.identities(ada.id))[0].display_name == "Ada L."


async def test_open_set_with_count(repos: Repositories, db: Database) -> None:
    ada = await repos.users.get_or_create(Platform.TELEGRAM, "1")
    created, count = await repos.photos.open_set_with_count(ada.id)
    assert (created, count) == (await repos.photos.current_set(ada.id), 0)
    await add_photo(repos, created.id, ada.id, "a.jpg")
    await add_photo(repos, created.id, ada.id, "b.jpg")
    statements = await Statements.on(db)
    assert await repos.photos.open_set_with_count(ada.id) == (created, 2)
    assert statements.count == 1
