from __future__ import annotations

import hashlib

import pytest

from storage.errors import Conflict, NotFound, PhotoSetClosed
from storage.models import Photo, PhotoSetStatus, Platform
from storage.repositories import Repositories


def sha(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


async def add(repos: Repositories, set_id: int, user_id: int, n: int, key: str | None = None) -> Photo | None:
    return await repos.photos.add_photo(
        set_id, user_id, key or f"users/{user_id}/photos/{n}.jpg", sha(n), 1000 + n, 640, 480, "image/jpeg"
    )


async def test_open_set_is_reused_until_submitted(repos: Repositories) -> None:
    user = await repos.users.get_or_create(Platform.TELEGRAM, "1")
    assert await repos.photos.current_set(user.id) is None
    first = await repos.photos.open_set(user.id)
    assert first.status is PhotoSetStatus.COLLECTING
    assert await repos.photos.open_set(user.id) == first
    assert await repos.photos.current_set(user.id) == first

    await repos.photos.set_status(first.id, PhotoSetStatus.SUBMITTED)
    assert await repos.photos.current_set(user.id) is None
    second = await repos.photos.open_set(user.id)
    assert second.id != first.id
    # Reopening the old one now would make two collecting sets.
    with pytest.raises(Conflict):
        await repos.photos.set_status(first.id, PhotoSetStatus.COLLECTING)
    with pytest.raises(NotFound):
        await repos.photos.set_status(9999, PhotoSetStatus.SUBMITTED)


async def test_the_same_photo_twice_is_refused(repos: Repositories) -> None:
    user = await repos.users.get_or_create(Platform.TELEGRAM, "1")
    photo_set = await repos.photos.open_set(user.id)

    photo = await add(repos, photo_set.id, user.id, 1)
    assert photo is not None and photo.sha256 == sha(1) and photo.blob_key == f"users/{user.id}/photos/1.jpg"
    duplicate = await repos.photos.add_photo(
        photo_set.id, user.id, f"users/{user.id}/photos/other.jpg", sha(1).upper(), 5, 1, 1, "image/png"
    )
    assert duplicate is None
    assert await repos.photos.contains(photo_set.id, sha(1).upper())
    assert not await repos.photos.contains(photo_set.id, sha(3))
    assert await add(repos, photo_set.id, user.id, 2) is not None
    assert await repos.photos.count(photo_set.id) == 2
    assert [p.sha256 for p in await repos.photos.photos(photo_set.id)] == [sha(1), sha(2)]

    # The same file in a later set is fine (a new training run).
    await repos.photos.set_status(photo_set.id, PhotoSetStatus.SUBMITTED)
    later = await repos.photos.open_set(user.id)
    assert await add(repos, later.id, user.id, 1, key=f"users/{user.id}/photos/1b.jpg") is not None


async def test_photos_only_go_into_the_users_collecting_set(repos: Repositories) -> None:
    ada = await repos.users.get_or_create(Platform.TELEGRAM, "1")
    bob = await repos.users.get_or_create(Platform.TELEGRAM, "2")
    ada_set = await repos.photos.open_set(ada.id)
    with pytest.raises(Conflict, match="does not belong"):
        await add(repos, ada_set.id, bob.id, 1)
    await add(repos, ada_set.id, ada.id, 1)
    with pytest.raises(Conflict, match="already recorded"):
        await add(repos, ada_set.id, ada.id, 2, key=f"users/{ada.id}/photos/1.jpg")
    await repos.photos.set_status(ada_set.id, PhotoSetStatus.SUBMITTED)
    with pytest.raises(PhotoSetClosed):
        await add(repos, ada_set.id, ada.id, 3)
    with pytest.raises(PhotoSetClosed):
        await add(repos, 9999, ada.id, 4)
    with pytest.raises(ValueError, match="sha256"):
        await repos.photos.add_photo(ada_set.id, ada.id, "k", "abc", 1, 1, 1, "image/jpeg")
    assert await repos.photos.count(ada_set.id) == 1


async def test_remove_some_photos_and_discard_a_set(repos: Repositories) -> None:
    user = await repos.users.get_or_create(Platform.TELEGRAM, "1")
    photo_set = await repos.photos.open_set(user.id)
    for n in range(4):
        await add(repos, photo_set.id, user.id, n)

    keys = [f"users/{user.id}/photos/{n}.jpg" for n in range(4)]
    assert await repos.photos.remove_photos(photo_set.id, [keys[0], keys[0], "users/9/nope.jpg"]) == 1
    assert await repos.photos.remove_photos(photo_set.id, []) == 0
    assert await repos.photos.count(photo_set.id) == 3

    assert await repos.photos.discard_set(photo_set.id) == keys[1:]
    discarded = await repos.photos.get_set(photo_set.id)
    assert discarded is not None and discarded.status is PhotoSetStatus.DISCARDED
    assert await repos.photos.count(photo_set.id) == 0
    assert await repos.photos.current_set(user.id) is None
    assert await repos.photos.discard_set(photo_set.id) == []
