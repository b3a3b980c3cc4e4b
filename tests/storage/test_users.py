from __future__ import annotations

import asyncio

import pytest

from storage.errors import NotFound
from storage.models import Platform
from storage.repositories import Repositories
from tests.storage.conftest import FakeClock


async def test_one_chat_account_is_one_user(repos: Repositories, clock: FakeClock) -> None:
    first_contact = clock.now
    ada = await repos.users.get_or_create(Platform.TELEGRAM, "1001", "Ada")
    clock.advance(minutes=5)
    again = await repos.users.get_or_create(Platform.TELEGRAM, "1001", "Ada L.")
    other = await repos.users.get_or_create(Platform.DISCORD, "1001", "Bob")

    assert again == ada
    assert ada.created_at == first_contact and ada.created_at.tzinfo is not None
    assert other.id != ada.id  # the same number on another platform is another person
    assert await repos.users.get(ada.id) == ada
    assert await repos.users.get(9999) is None
    assert await repos.users.find("telegram", "1001") == ada
    assert await repos.users.find(Platform.TELEGRAM, "404") is None
    # A non-empty display name refreshes the stored one; an empty one keeps it.
    await repos.users.get_or_create(Platform.TELEGRAM, "1001")
    assert (await repos.users.identities(ada.id))[0].display_name == "Ada L."


async def test_unknown_platform_and_empty_account_are_refused(repos: Repositories) -> None:
    with pytest.raises(ValueError):
        await repos.users.get_or_create("myspace", "1")
    with pytest.raises(ValueError):
        await repos.users.get_or_create(Platform.TELEGRAM, "")


async def test_concurrent_first_contacts_share_the_connection_safely(repos: Repositories) -> None:
    users = await asyncio.gather(*(repos.users.get_or_create(Platform.TELEGRAM, str(n % 10)) for n in range(40)))
    assert len({u.id for u in users}) == 10
    for n, user in enumerate(users):
        assert user == users[n % 10]


async def test_conversation_state(repos: Repositories) -> None:
    user = await repos.users.get_or_create(Platform.TELEGRAM, "1")
    assert await repos.conversations.get_state(user.id) is None
    await repos.conversations.set_state(user.id, {"mode": "collecting", "resume": "idle"})
    await repos.conversations.set_state(user.id, {"mode": "asking_subject", "n": [1, 2]})
    assert await repos.conversations.get_state(user.id) == {"mode": "asking_subject", "n": [1, 2]}
    await repos.conversations.clear_state(user.id)
    assert await repos.conversations.get_state(user.id) is None
    with pytest.raises(TypeError):
        await repos.conversations.set_state(user.id, {"when": object()})
    with pytest.raises(NotFound):
        await repos.conversations.set_state(9999, {})
