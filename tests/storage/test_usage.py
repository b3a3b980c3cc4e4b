from __future__ import annotations

from datetime import date

import pytest

from storage.errors import NotFound
from storage.models import Platform
from storage.repositories import Repositories

MONDAY = date(2026, 3, 2)
TUESDAY = date(2026, 3, 3)


async def test_counts_are_per_user_per_community_per_day(repos: Repositories) -> None:
    ada = await repos.users.get_or_create(Platform.TELEGRAM, "1")
    bob = await repos.users.get_or_create(Platform.TELEGRAM, "2")
    group = (await repos.communities.get_or_create(Platform.TELEGRAM, "-1")).id
    guild = (await repos.communities.get_or_create(Platform.DISCORD, "g")).id

    assert await repos.usage.increment(ada.id, group, MONDAY) == 1
    assert await repos.usage.increment(ada.id, group, MONDAY) == 2
    assert await repos.usage.increment(ada.id, guild, MONDAY) == 1
    assert await repos.usage.increment(ada.id, None, MONDAY) == 1
    assert await repos.usage.increment(ada.id, None, MONDAY, n=2) == 3
    assert await repos.usage.increment(bob.id, group, MONDAY) == 1
    assert await repos.usage.increment(ada.id, group, TUESDAY) == 1
    assert await repos.usage.increment(ada.id, group, MONDAY, kind="train") == 1

    assert await repos.usage.count_user(ada.id, MONDAY, group) == 2
    assert await repos.usage.count_user(ada.id, MONDAY, guild) == 1
    assert await repos.usage.count_user(ada.id, MONDAY) == 3  # None = private chats only
    assert await repos.usage.count_user(ada.id, MONDAY, group, kind="train") == 1
    assert await repos.usage.count_user_everywhere(ada.id, MONDAY) == 6
    assert await repos.usage.count_user(ada.id, TUESDAY, group) == 1
    assert await repos.usage.count_user(bob.id, MONDAY) == 0
    assert await repos.usage.count_community(group, MONDAY) == 3  # ada 2 + bob 1
    assert await repos.usage.count_community(guild, MONDAY) == 1
    assert await repos.usage.count_community(group, TUESDAY) == 1
    assert await repos.usage.count_community(group, date(2026, 3, 4)) == 0


async def test_refunds_never_go_below_zero(repos: Repositories) -> None:
    ada = await repos.users.get_or_create(Platform.TELEGRAM, "1")
    await repos.usage.increment(ada.id, None, MONDAY, n=2)
    assert await repos.usage.increment(ada.id, None, MONDAY, n=-1) == 1
    assert await repos.usage.increment(ada.id, None, MONDAY, n=-5) == 0
    assert await repos.usage.increment(ada.id, None, TUESDAY, n=-1) == 0
    assert await repos.usage.count_user(ada.id, MONDAY) == 0


async def test_unknown_user_or_community(repos: Repositories) -> None:
    ada = await repos.users.get_or_create(Platform.TELEGRAM, "1")
    with pytest.raises(NotFound):
        await repos.usage.increment(9999, None, MONDAY)
    with pytest.raises(NotFound):
        await repos.usage.increment(ada.id, 9999, MONDAY)
