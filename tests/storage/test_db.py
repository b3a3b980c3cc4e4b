from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import aiosqlite
import pytest

from storage._time import from_db, to_db
from storage.db import (
    Database,
    Migration,
    apply_migrations,
    load_migrations,
    open_database,
    schema_version,
    split_statements,
)
from storage.errors import MigrationError, SchemaTooNew
from storage.models import Platform
from storage.repositories import Repositories

EXPECTED_TABLES = {
    "users",
    "identities",
    "conversations",
    "photo_sets",
    "photos",
    "face_models",
    "communities",
    "community_style_toggles",
    "custom_styles",
    "runs",
    "portraits",
    "usage_counters",
    "blob_deletions",
}


async def tables(conn: aiosqlite.Connection) -> set[str]:
    rows = await conn.execute_fetchall(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    )
    return {row[0] for row in rows}


async def test_new_database_is_migrated_to_the_latest_version(tmp_path: Path) -> None:
    latest = load_migrations()[-1].version
    async with await open_database(tmp_path / "data" / "new" / "a.db") as db:
        assert await schema_version(db.conn) == latest
        assert await tables(db.conn) == EXPECTED_TABLES


async def test_connection_settings(tmp_path: Path) -> None:
    async with await open_database(tmp_path / "a.db") as db:
        pragmas = {}
        for name in ("journal_mode", "foreign_keys", "synchronous", "busy_timeout"):
            rows = list(await db.conn.execute_fetchall(f"PRAGMA {name}"))
            pragmas[name] = rows[0][0]
    assert pragmas == {"journal_mode": "wal", "foreign_keys": 1, "synchronous": 1, "busy_timeout": 5000}


async def test_opening_twice_applies_nothing_the_second_time(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    async with await open_database(path) as db:
        await db.conn.execute("INSERT INTO users (created_at) VALUES ('2026-01-01T00:00:00+00:00')")
    async with await open_database(path) as db:
        assert await apply_migrations(db.conn, load_migrations()) == []
        rows = list(await db.conn.execute_fetchall("SELECT count(*) FROM users"))
        assert rows[0][0] == 1  # a re-applied 0001 would have failed or emptied the table


async def test_migrations_apply_in_order_and_only_the_new_ones(tmp_path: Path) -> None:
    first = Migration(1, "one", ("CREATE TABLE a (x INTEGER)",))
    second = Migration(2, "two", ("ALTER TABLE a ADD COLUMN y TEXT", "CREATE TABLE b (z INTEGER)"))
    async with aiosqlite.connect(tmp_path / "m.db", isolation_level=None) as conn:
        assert await apply_migrations(conn, [first]) == [1]
        assert await apply_migrations(conn, [first, second]) == [2]
        assert await apply_migrations(conn, [first, second]) == []
        assert await schema_version(conn) == 2
        assert await tables(conn) == {"a", "b"}


async def test_a_failing_migration_leaves_the_database_at_the_previous_version(tmp_path: Path) -> None:
    first = Migration(1, "one", ("CREATE TABLE a (x INTEGER)",))
    broken = Migration(2, "broken", ("CREATE TABLE half (x INTEGER)", "INSERT INTO nowhere VALUES (1)"))
    async with aiosqlite.connect(tmp_path / "m.db", isolation_level=None) as conn:
        await apply_migrations(conn, [first])
        with pytest.raises(MigrationError, match="0002_broken"):
            await apply_migrations(conn, [first, broken])
        assert await schema_version(conn) == 1
        assert await tables(conn) == {"a"}  # the half-made table was rolled back too
        assert not conn.in_transaction


async def test_a_newer_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA user_version = 999")
    with pytest.raises(SchemaTooNew, match="999"):
        await open_database(path)
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 999
        assert raw.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_migration_files_must_be_numbered_without_gaps(tmp_path: Path) -> None:
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE a (x INTEGER);")
    (tmp_path / "0003_third.sql").write_text("CREATE TABLE c (x INTEGER);")
    with pytest.raises(MigrationError, match="0003_third"):
        load_migrations(tmp_path)


def test_migration_files_must_be_named_nnnn_name(tmp_path: Path) -> None:
    (tmp_path / "1_first.sql").write_text("CREATE TABLE a (x INTEGER);")
    with pytest.raises(MigrationError, match="NNNN_name"):
        load_migrations(tmp_path)


def test_migrations_may_not_control_transactions(tmp_path: Path) -> None:
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE a (x INTEGER);\n-- done\nCOMMIT;")
    with pytest.raises(MigrationError, match="COMMIT"):
        load_migrations(tmp_path)


def test_statements_split_on_semicolons_outside_triggers_strings_and_comments() -> None:
    script = """
    -- a comment; with a semicolon
    CREATE TABLE t (x TEXT DEFAULT 'a;b');
    CREATE TRIGGER tr AFTER INSERT ON t BEGIN
        UPDATE t SET x = 'c;d';
        SELECT 1;
    END;
    /* trailing; comment */
    """
    statements = split_statements(script)
    assert len(statements) == 2
    assert "DEFAULT 'a;b'" in statements[0]
    assert statements[1].rstrip().endswith("END;")
    with pytest.raises(MigrationError, match="incomplete"):
        split_statements("CREATE TABLE t (x INTEGER); CREATE TABLE u (")


async def test_transaction_rolls_back_when_the_block_raises(repos_db_path: Path) -> None:
    async with await open_database(repos_db_path) as db:
        with pytest.raises(RuntimeError):
            async with db.transaction() as conn:
                await conn.execute("INSERT INTO users (created_at) VALUES ('2026-01-01T00:00:00+00:00')")
                raise RuntimeError("boom")
        rows = list(await db.conn.execute_fetchall("SELECT count(*) FROM users"))
        assert rows[0][0] == 0
        assert not db.conn.in_transaction


@pytest.fixture
def repos_db_path(tmp_path: Path) -> Path:
    return tmp_path / "tx.db"


def test_timestamps_are_stored_as_utc_text_and_read_back_aware() -> None:
    local = datetime(2026, 5, 6, 9, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    text = to_db(local)
    assert text == "2026-05-06T07:30:15.123456+00:00"
    back = from_db(text)
    assert back == local and back.tzinfo == UTC
    with pytest.raises(ValueError, match="naive"):
        to_db(datetime(2026, 1, 1))


INSERT_USER = "INSERT INTO users (created_at) VALUES ('2026-01-01T00:00:00.000000+00:00')"


async def count_users(db: Database) -> int:
    rows = list(await db.conn.execute_fetchall("SELECT count(*) FROM users"))
    return int(rows[0][0])


async def _insert_in_a_transaction(
    db: Database, then_wait_s: float, then_raise: Exception | None = None
) -> asyncio.Task[None]:
    """A task that inserts a user in a transaction, then keeps it open ``then_wait_s`` s and ends it by
    raising ``then_raise`` (committing without one); returned once the insert is done."""
    inside = asyncio.Event()

    async def transaction() -> None:
        async with db.transaction() as conn:
            await conn.execute(INSERT_USER)
            inside.set()
            await asyncio.sleep(then_wait_s)
            if then_raise is not None:
                raise then_raise

    task = asyncio.create_task(transaction())
    await inside.wait()
    return task


async def test_a_failing_transaction_does_not_take_other_coroutines_writes_with_it(db: Database) -> None:
    repos = Repositories(db)
    task = await _insert_in_a_transaction(db, then_wait_s=0.05, then_raise=RuntimeError("boom"))
    # Runs while the other transaction is open on the same connection: it must wait, not join it.
    user = await repos.users.get_or_create(Platform.TELEGRAM, "42")
    with pytest.raises(RuntimeError):
        await task
    assert await repos.users.get(user.id) == user
    assert await count_users(db) == 1


async def test_a_cancelled_transaction_is_rolled_back_and_the_connection_stays_usable(db: Database) -> None:
    task = await _insert_in_a_transaction(db, then_wait_s=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await count_users(db) == 0
    async with db.transaction() as conn:
        await conn.execute(INSERT_USER)
    assert await count_users(db) == 1
