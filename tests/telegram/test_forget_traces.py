"""After /forget, no trace of the user anywhere: the SQLite file and its WAL, the blob store, Redis.

A real journey through the bot process (PTB over HTTP, real SQLite, real Redis, real arq workers with
scripted GPU stages), then /forget, then a byte scan of everything the service stores for the user's
ids: their Telegram id and name, internal id (as it appears in blob keys), run ids, photo hashes and
blob keys, and the bytes of their stored photos.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from redis.asyncio import Redis

from storage.blobs import BlobStore, LocalBlobStore
from tests.conftest import TEST_REDIS_URL
from tests.telegram.conftest import Harness
from tests.telegram.fake_bot_api import FakeBotApi
from tests.telegram.gpu import ScriptedGpu
from tests.telegram.media import face_photos
from tests.telegram.users import TgUser

#: Ids and names no other data contains by accident.
ALICE_ID, ALICE_NAME = 7391046528, "Zanzibarina"
BOB_ID, BOB_NAME = 6200000017, "Quillonaire"


@dataclass
class Traces:
    """What identifies one user in storage, read from the database before /forget."""

    user_id: int
    strings: set[str] = field(default_factory=set)
    run_ids: set[str] = field(default_factory=set)
    #: Stored (cleaned) photo files: their bytes must not survive anywhere in the blob store.
    photos: list[bytes] = field(default_factory=list)

    def needles(self) -> set[bytes]:
        return {s.encode() for s in self.strings | self.run_ids}


def read_traces(db_path: Path, platform_user_id: int, blobs: BlobStore) -> Traces:
    conn = sqlite3.connect(db_path)
    try:
        (user_id,) = conn.execute(
            "SELECT user_id FROM identities WHERE platform_user_id = ?", (str(platform_user_id),)
        ).fetchone()
        traces = Traces(user_id, strings={str(platform_user_id), f"users/{user_id}/"})
        traces.run_ids = {row[0] for row in conn.execute("SELECT id FROM runs WHERE user_id = ?", (user_id,))}
        for key, sha in conn.execute("SELECT blob_key, sha256 FROM photos WHERE user_id = ?", (user_id,)):
            traces.strings |= {key, sha}
            traces.photos.append(blobs.get_bytes(key))
        models = conn.execute("SELECT lora_key FROM face_models WHERE user_id = ? AND lora_key IS NOT NULL", (user_id,))
        traces.strings |= {key for (key,) in models}
        for (key,) in conn.execute("SELECT blob_key FROM portraits WHERE user_id = ?", (user_id,)):
            traces.strings.add(key)
    finally:
        conn.close()
    return traces


def database_bytes(db_path: Path) -> bytes:
    wal = Path(f"{db_path}-wal")
    return db_path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def blob_store_bytes(root: Path) -> dict[str, bytes]:
    """Every file under the blob root, hidden and temporary ones included: path → content."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


async def redis_contents() -> dict[str, bytes]:
    """Every key of the test database → its value as bytes (members, fields and scores included)."""
    client = Redis.from_url(TEST_REDIS_URL)
    contents: dict[str, bytes] = {}
    try:
        async for raw in client.scan_iter(count=1000):
            name = raw.decode()
            kind = (await client.type(name)).decode()
            if kind == "string":
                value = await client.get(name) or b""
            elif kind == "zset":
                value = b"|".join(m for m, _ in await client.zrange(name, 0, -1, withscores=True))
            elif kind == "hash":
                value = b"|".join(k + b"=" + v for k, v in (await client.hgetall(name)).items())
            elif kind == "list":
                value = b"|".join(await client.lrange(name, 0, -1))
            elif kind == "set":
                value = b"|".join(await client.smembers(name))
            else:
                value = await client.dump(name) or b""
            contents[name] = value
    finally:
        await client.aclose()
    return contents


async def scan(traces: Traces, db_path: Path, blob_root: Path) -> set[str]:
    """Where the user still shows: ``db``, ``blob:<path>``, ``redis:<key>``."""
    needles = traces.needles()
    hits: set[str] = set()
    stored = database_bytes(db_path)
    if any(n in stored for n in needles):
        hits.add("db: " + ", ".join(sorted(n.decode() for n in needles if n in stored)))
    for path, content in blob_store_bytes(blob_root).items():
        if any(n in path.encode() or n in content for n in needles) or any(p in content for p in traces.photos):
            hits.add(f"blob:{path}")
    for name, value in (await redis_contents()).items():
        if any(n in name.encode() or n in value for n in needles):
            hits.add(f"redis:{name}")
    return hits


async def test_after_forget_no_byte_of_the_user_is_left_in_the_database_blobs_or_redis(
    bot: Harness, api: FakeBotApi
) -> None:
    alice, bob = TgUser(api, ALICE_ID, ALICE_NAME), TgUser(api, BOB_ID, BOB_NAME)
    db_path, blob_root = bot.settings.database_path, bot.settings.blob_dir
    blobs = LocalBlobStore(blob_root)
    gpu = bot.gpu
    assert isinstance(gpu, ScriptedGpu)

    # Alice: a face model and portraits, all delivered.
    await bot.train(alice, face_photos(3))
    alice.say("/generate watercolor 2")
    making = await alice.expect("Making 2 portraits")
    await alice.expect_edit(making, "Done.", within=20)
    await alice.wait_buttons(["More of this style", "Another style"])

    # Bob's training holds the only training slot, so Alice's second training waits in the queue.
    gpu.hold = threading.Event()
    gpu.started.clear()
    await bob.ask_to_train(face_photos(3, start=7), "A man", got="Got 3 photos")
    await bob.expect("Training queued")
    assert await asyncio.to_thread(gpu.started.wait, 15), "Bob's training runs"
    await alice.ask_to_train(face_photos(3, start=3), got="Got 3 photos")
    await alice.expect("Training queued")

    traces = read_traces(db_path, ALICE_ID, blobs)
    bobs = read_traces(db_path, BOB_ID, blobs)
    assert len(traces.run_ids) == 3 and len(traces.photos) == 6
    before = await scan(traces, db_path, blob_root)
    # The scan can fail: it sees Alice in every store before.
    assert any(h.startswith("db:") for h in before)
    assert any(h.startswith("blob:") for h in before)
    assert {h for h in before if h.startswith("redis:")} >= {"redis:facechain:queue:train"}, before

    alice.say("/forget")
    await alice.expect("This deletes everything I keep about you")
    alice.press("Yes, delete everything")
    await alice.expect("Done: everything I had about you is deleted.")

    assert await scan(traces, db_path, blob_root) == set()
    # Bob is untouched, and his held training still finishes.
    assert any(h.startswith("db:") for h in await scan(bobs, db_path, blob_root))
    gpu.hold.set()
    await bob.expect("Your face model is ready!", within=20)
    assert await scan(traces, db_path, blob_root) == set()


async def test_forget_while_the_worker_runs_the_training_stops_it_and_leaves_nothing(
    bot: Harness, api: FakeBotApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="facechain.service")
    alice = TgUser(api, ALICE_ID, ALICE_NAME)
    db_path, blob_root = bot.settings.database_path, bot.settings.blob_dir
    gpu = bot.gpu
    assert isinstance(gpu, ScriptedGpu)
    gpu.hold = threading.Event()
    await alice.ask_to_train(got="Got 3 photos")
    await alice.expect("Training queued")
    assert await asyncio.to_thread(gpu.started.wait, 15), "the training runs"
    traces = read_traces(db_path, ALICE_ID, LocalBlobStore(blob_root))
    [run_id] = traces.run_ids

    alice.say("/forget")
    await alice.expect("This deletes everything I keep about you")
    alice.press("Yes, delete everything")
    await alice.expect("Done: everything I had about you is deleted.")

    # Eventually (within 20 s) nothing is left. arq stores the worker's and the delivery's results
    # after the bot handled the outcome: they last the workers' keep_result, not bounded by /forget.
    for _ in range(100):
        left = {h for h in await scan(traces, db_path, blob_root) if not h.startswith("redis:arq:result:")}
        if not left:
            break
        await asyncio.sleep(0.2)
    assert not left, f"left after 20 s: {sorted(left)}"
    assert gpu.hold is not None and not gpu.hold.is_set(), "never released: only the cancel flag stops it"
    # The worker saw the flag /forget kept for it, stopped, and its outcome reached the bot.
    assert f"outcome for unknown run {run_id}" in caplog.text
