from __future__ import annotations

import pytest

from storage.errors import NotFound
from storage.models import Community, Platform, ResultsTo
from storage.repositories import Repositories
from tests.storage.conftest import FakeClock


async def test_a_new_community_has_default_settings(repos: Repositories) -> None:
    group = await repos.communities.get_or_create(Platform.TELEGRAM, "-100555")
    assert group == Community(id=group.id, platform=Platform.TELEGRAM, external_id="-100555")
    assert await repos.communities.get_or_create("telegram", "-100555") == group
    assert await repos.communities.get(group.id) == group
    assert await repos.communities.find(Platform.TELEGRAM, "-100555") == group
    other = await repos.communities.get_or_create(Platform.DISCORD, "-100555")
    assert other.id != group.id
    assert await repos.communities.get(9999) is None


async def test_admin_settings_are_kept(repos: Repositories) -> None:
    group = await repos.communities.get_or_create(Platform.DISCORD, "guild")
    await repos.communities.set_style_enabled(group.id, "anime", True)
    await repos.communities.set_style_enabled(group.id, "noir", True)
    await repos.communities.set_style_enabled(group.id, "Noir", False)  # same style, any case
    await repos.communities.set_style_enabled(group.id, "cyberpunk", False)
    await repos.communities.set_quota(group.id, "user", 3)
    await repos.communities.set_quota(group.id, "group", 50)
    await repos.communities.set_results_to(group.id, ResultsTo.DIRECT)
    await repos.communities.set_nsfw_allowed(group.id, True)

    loaded = await repos.communities.get(group.id)
    assert loaded is not None
    assert loaded.enabled_styles == {"anime"}
    assert loaded.disabled_styles == {"Noir", "cyberpunk"}
    assert (loaded.user_daily_quota, loaded.community_daily_quota) == (3, 50)
    assert (loaded.results_to, loaded.nsfw_allowed) == (ResultsTo.DIRECT, True)
    assert type(loaded.results_to) is ResultsTo and loaded.nsfw_allowed is True

    await repos.communities.set_quota(group.id, "user", None)
    await repos.communities.set_quota(group.id, "group", 0)
    loaded = await repos.communities.get(group.id)
    assert loaded is not None and (loaded.user_daily_quota, loaded.community_daily_quota) == (None, 0)


async def test_bad_settings_are_refused(repos: Repositories) -> None:
    group = await repos.communities.get_or_create(Platform.DISCORD, "guild")
    with pytest.raises(ValueError):
        await repos.communities.set_quota(group.id, "everyone", 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await repos.communities.set_quota(group.id, "user", -1)
    with pytest.raises(ValueError):
        await repos.communities.set_results_to(group.id, "nowhere")  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        await repos.communities.set_quota(9999, "user", 1)
    with pytest.raises(NotFound):
        await repos.communities.set_nsfw_allowed(9999, True)
    with pytest.raises(NotFound):
        await repos.communities.set_style_enabled(9999, "anime", True)


async def test_custom_styles(repos: Repositories, clock: FakeClock) -> None:
    group = await repos.communities.get_or_create(Platform.DISCORD, "guild")
    other = await repos.communities.get_or_create(Platform.DISCORD, "elsewhere")
    admin = await repos.users.get_or_create(Platform.DISCORD, "admin")

    noir_key = "communities/1/styles/noir.safetensors"
    assert (
        await repos.communities.add_custom_style(
            group.id, "Noir", "film noir portrait", lora_key=noir_key, created_by=admin.id
        )
        is None
    )
    noir = await repos.communities.custom_style(group.id, "noir")
    assert noir is not None
    assert (noir.name, noir.lora_key, noir.style_weight, noir.face_weight) == ("Noir", noir_key, 0.3, 0.9)
    assert (noir.created_by, noir.created_at) == (admin.id, clock.now)
    await repos.communities.add_custom_style(group.id, "Anime", "anime portrait", "photo")
    await repos.communities.add_custom_style(other.id, "noir", "another community's noir")

    # Same name, any case: replaced, not duplicated; the replaced style comes back (its LoRA
    # blob is now the caller's to delete).
    clock.advance(hours=1)
    previous = await repos.communities.add_custom_style(group.id, "noir", "darker noir", style_weight=0.5)
    assert previous == noir
    replaced = await repos.communities.custom_style(group.id, "NOIR")
    assert replaced is not None
    assert (
        replaced.name,
        replaced.prompt,
        replaced.lora_key,
        replaced.style_weight,
        replaced.created_by,
    ) == (
        "noir",
        "darker noir",
        None,
        0.5,
        None,
    )
    assert [s.name for s in await repos.communities.custom_styles(group.id)] == ["Anime", "noir"]

    removed = await repos.communities.remove_custom_style(group.id, "NOIR")
    assert removed == replaced
    assert await repos.communities.remove_custom_style(group.id, "noir") is None
    assert [s.name for s in await repos.communities.custom_styles(group.id)] == ["Anime"]
    assert [s.prompt for s in await repos.communities.custom_styles(other.id)] == ["another community's noir"]

    with pytest.raises(ValueError):
        await repos.communities.add_custom_style(group.id, "", "x")
    with pytest.raises(ValueError):
        await repos.communities.add_custom_style(group.id, "x", "x", face_weight=3.0)
    with pytest.raises(NotFound):
        await repos.communities.add_custom_style(9999, "x", "x")


async def test_a_community_moves_with_its_chat_unless_the_new_chat_has_one(repos: Repositories) -> None:
    old = await repos.communities.get_or_create(Platform.TELEGRAM, "-100500")
    await repos.communities.set_quota(old.id, "user", 3)
    assert await repos.communities.move(Platform.TELEGRAM, "-100500", "-100900")
    moved = await repos.communities.find(Platform.TELEGRAM, "-100900")
    assert moved is not None and (moved.id, moved.user_daily_quota) == (old.id, 3)
    assert await repos.communities.find(Platform.TELEGRAM, "-100500") is None

    await repos.communities.get_or_create(Platform.TELEGRAM, "-100111")
    assert not await repos.communities.move(Platform.TELEGRAM, "-100900", "-100111"), "the new chat's own is kept"
    assert not await repos.communities.move(Platform.TELEGRAM, "-100404", "-100405"), "nothing to move"
