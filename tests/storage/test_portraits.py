from __future__ import annotations

import pytest

from storage.errors import Conflict, NotFound
from storage.models import Delivery, Platform, RunKind
from storage.repositories import Repositories
from tests.storage.conftest import FakeClock

TG = Delivery(Platform.TELEGRAM, "chat")


async def test_portraits_per_run_and_per_user(repos: Repositories, clock: FakeClock) -> None:
    ada = await repos.users.get_or_create(Platform.TELEGRAM, "1")
    bob = await repos.users.get_or_create(Platform.TELEGRAM, "2")
    await repos.runs.create("gen_00000001", ada.id, RunKind.GENERATE, TG)
    await repos.runs.create("gen_00000002", ada.id, RunKind.GENERATE, TG)
    await repos.runs.create("gen_00000003", bob.id, RunKind.GENERATE, TG)

    recorded_at = clock.now
    first = await repos.portraits.add("gen_00000001", ada.id, "runs/gen_00000001/0.png", 11, 0.81, "noir")
    second = await repos.portraits.add("gen_00000001", ada.id, "runs/gen_00000001/1.png", 2**63 - 1, None, "noir")
    clock.advance(minutes=1)
    third = await repos.portraits.add("gen_00000002", ada.id, "runs/gen_00000002/0.png", 7, 0.5, "anime")
    await repos.portraits.add("gen_00000003", bob.id, "runs/gen_00000003/0.png", 1, 0.9, "noir")

    assert (first.seed, first.score, first.style, first.created_at) == (11, 0.81, "noir", recorded_at)
    assert second.seed == 2**63 - 1 and second.score is None
    assert await repos.portraits.for_run("gen_00000001") == [first, second]
    assert await repos.portraits.for_user(ada.id) == [third, second, first]
    assert await repos.portraits.get(first.id) == first


async def test_a_redelivered_portrait_is_recorded_once(repos: Repositories) -> None:
    ada = await repos.users.get_or_create(Platform.TELEGRAM, "1")
    await repos.runs.create("gen_00000001", ada.id, RunKind.GENERATE, TG)
    await repos.runs.create("gen_00000002", ada.id, RunKind.GENERATE, TG)
    first = await repos.portraits.add("gen_00000001", ada.id, "runs/gen_00000001/0.png", 11, 0.8, "noir")
    assert await repos.portraits.add("gen_00000001", ada.id, "runs/gen_00000001/0.png", 11, 0.8, "noir") == first
    assert len(await repos.portraits.for_run("gen_00000001")) == 1
    with pytest.raises(Conflict):
        await repos.portraits.add("gen_00000002", ada.id, "runs/gen_00000001/0.png", 11, 0.8, "noir")


async def test_a_portrait_belongs_to_the_runs_user(repos: Repositories) -> None:
    ada = await repos.users.get_or_create(Platform.TELEGRAM, "1")
    bob = await repos.users.get_or_create(Platform.TELEGRAM, "2")
    await repos.runs.create("gen_00000001", ada.id, RunKind.GENERATE, TG)
    with pytest.raises(NotFound):
        await repos.portraits.add("gen_00000001", bob.id, "runs/gen_00000001/0.png", 1, None, "noir")
    with pytest.raises(NotFound):
        await repos.portraits.add("missing_1", ada.id, "runs/missing_1/0.png", 1, None, "noir")
    with pytest.raises(ValueError, match="64-bit"):
        await repos.portraits.add("gen_00000001", ada.id, "runs/gen_00000001/0.png", 2**64 - 1, None, "x")
    assert await repos.portraits.for_user(bob.id) == []
