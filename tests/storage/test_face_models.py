from __future__ import annotations

import asyncio

import pytest

from storage.errors import Conflict, NotFound
from storage.models import ModelStatus, Platform
from storage.repositories import Repositories
from tests.storage.conftest import FakeClock


async def test_versions_count_up_per_user(repos: Repositories) -> None:
    ada = await repos.users.get_or_create(Platform.TELEGRAM, "1")
    bob = await repos.users.get_or_create(Platform.TELEGRAM, "2")
    photo_set = await repos.photos.open_set(ada.id)

    first = await repos.models.create(ada.id, photo_set.id, "woman")
    assert (first.version, first.status, first.photo_set_id, first.subject) == (
        1,
        ModelStatus.PENDING,
        photo_set.id,
        "woman",
    )
    assert (await repos.models.create(ada.id, None)).version == 2
    assert (await repos.models.create(bob.id, None)).version == 1
    assert (await repos.models.create(ada.id, None)).version == 3
    assert [m.version for m in await repos.models.for_user(ada.id)] == [3, 2, 1]
    assert await repos.models.get(first.id) == first
    assert await repos.models.get(9999) is None


async def test_concurrent_creates_never_share_a_version(repos: Repositories) -> None:
    ada = await repos.users.get_or_create(Platform.TELEGRAM, "1")
    models = await asyncio.gather(*(repos.models.create(ada.id, None) for _ in range(12)))
    assert sorted(m.version for m in models) == list(range(1, 13))


async def test_a_model_cannot_use_another_users_photos(repos: Repositories) -> None:
    ada = await repos.users.get_or_create(Platform.TELEGRAM, "1")
    bob = await repos.users.get_or_create(Platform.TELEGRAM, "2")
    bobs_set = await repos.photos.open_set(bob.id)
    with pytest.raises(Conflict):
        await repos.models.create(ada.id, bobs_set.id)
    with pytest.raises(NotFound):
        await repos.models.create(9999, None)


async def test_lifecycle_latest_and_latest_ready(repos: Repositories, clock: FakeClock) -> None:
    ada = await repos.users.get_or_create(Platform.TELEGRAM, "1")
    assert await repos.models.latest(ada.id) is None
    assert await repos.models.latest_ready(ada.id) is None

    v1 = await repos.models.create(ada.id, None)
    assert await repos.models.mark_training(v1.id) is True
    assert await repos.models.mark_training(v1.id) is False
    clock.advance(minutes=20)
    assert await repos.models.mark_ready(
        v1.id, "runs/t1/lora.safetensors", "runs/t1/template.png", "<fcsks>, a beautiful woman", "woman"
    )
    ready = await repos.models.get(v1.id)
    assert ready is not None
    assert (ready.status, ready.lora_key, ready.template_key, ready.trigger, ready.subject) == (
        ModelStatus.READY,
        "runs/t1/lora.safetensors",
        "runs/t1/template.png",
        "<fcsks>, a beautiful woman",
        "woman",
    )
    assert ready.finished_at == clock.now

    # A newer model that is training does not hide the ready one.
    v2 = await repos.models.create(ada.id, None, "woman")
    await repos.models.mark_training(v2.id)
    assert (await repos.models.latest(ada.id)) == await repos.models.get(v2.id)
    assert (await repos.models.latest_ready(ada.id)) == ready

    assert await repos.models.mark_failed(v2.id, "no_face") is True
    # An ended model never changes again.
    assert await repos.models.mark_ready(v2.id, "k", None, "t", None) is False
    assert await repos.models.mark_failed(v1.id, "internal") is False
    failed = await repos.models.get(v2.id)
    assert failed is not None and (failed.status, failed.error_code) == (ModelStatus.FAILED, "no_face")
    assert await repos.models.latest_ready(ada.id) == ready

    v3 = await repos.models.create(ada.id, None)
    assert await repos.models.mark_failed(v3.id, "cancelled", status=ModelStatus.CANCELLED)
    cancelled = await repos.models.get(v3.id)
    assert cancelled is not None and cancelled.status is ModelStatus.CANCELLED
    with pytest.raises(ValueError):
        await repos.models.mark_failed(v3.id, "x", status=ModelStatus.READY)
