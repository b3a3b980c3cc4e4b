"""Opening the SQLite database: connection settings, numbered migrations, and transactions.

The bot process is the only writer and shares one connection between its coroutines, so
:class:`Database` serialises access with an asyncio lock: a transaction of one coroutine can never
swallow the statements of another.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType

import aiosqlite

from storage._time import Clock, utcnow
from storage.errors import MigrationError, SchemaTooNew, StorageError
from storage.files import create_private_file, make_private_dirs, restrict

log = logging.getLogger("facechain.db")

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
#: How long a statement waits for a lock held by another process (a CLI command, a backup).
BUSY_TIMEOUT_MS = 5000

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LEADING_COMMENTS = re.compile(r"^(\s+|--[^\n]*(\n|$)|/\*.*?\*/)*", re.DOTALL)
_TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE")


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered SQL file, split into statements."""

    version: int
    name: str
    statements: tuple[str, ...]


def split_statements(script: str) -> list[str]:
    """Split SQL text into complete ``;``-terminated statements (trigger bodies, quoted and
    commented ``;`` stay intact)."""
    statements: list[str] = []
    buffer = ""
    *pieces, tail = script.split(";")
    for piece in pieces:
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if _LEADING_COMMENTS.sub("", buffer).strip(" \t\n;"):
                statements.append(buffer.strip())
            buffer = ""
    rest = _LEADING_COMMENTS.sub("", buffer + tail).strip()
    if rest:
        raise MigrationError(f"incomplete SQL statement at the end: {rest[:80]!r}")
    return statements


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Read ``NNNN_name.sql`` files; their numbers must run 1, 2, 3... without gaps."""
    migrations: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        statements = tuple(split_statements(path.read_text(encoding="utf-8")))
        for statement in statements:
            first = _LEADING_COMMENTS.sub("", statement).split(None, 1)[0].upper().rstrip(";")
            if first in _TRANSACTION_CONTROL:
                # Each migration runs in a transaction of ours; its own would break atomicity.
                raise MigrationError(f"{path.name}: transaction control ({first}) is not allowed")
        migrations.append(Migration(int(match.group(1)), match.group(2), statements))
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise MigrationError(
                f"migration {migration.version:04d}_{migration.name} found where {expected:04d} belongs"
            )
    return migrations


async def _scalar(conn: aiosqlite.Connection, sql: str) -> object:
    rows = list(await conn.execute_fetchall(sql))
    return rows[0][0] if rows else None


async def schema_version(conn: aiosqlite.Connection) -> int:
    """The migration number the database is at (``PRAGMA user_version``)."""
    value = await _scalar(conn, "PRAGMA user_version")
    assert isinstance(value, int)
    return value


async def _refuse_newer(conn: aiosqlite.Connection, migrations: Sequence[Migration]) -> int:
    latest = migrations[-1].version if migrations else 0
    current = await schema_version(conn)
    if current > latest:
        raise SchemaTooNew(
            f"the database is at schema version {current}, but this facechain-bot only knows "
            f"versions up to {latest}: upgrade facechain-bot (or restore a matching backup)"
        )
    return current


async def apply_migrations(conn: aiosqlite.Connection, migrations: Sequence[Migration]) -> list[int]:
    """Bring the schema up to date; returns the versions applied (empty when already current).

    Each migration runs in its own ``BEGIN IMMEDIATE`` transaction together with the
    ``user_version`` bump, so a failure leaves the database exactly at the previous version.
    A database newer than the newest migration raises :class:`SchemaTooNew` and is not touched.
    """
    current = await _refuse_newer(conn, migrations)
    applied: list[int] = []
    for migration in migrations:
        if migration.version <= current:
            continue
        try:
            await conn.execute("BEGIN IMMEDIATE")
            # Another process may have migrated while we waited for the write lock.
            current = await schema_version(conn)
            if migration.version <= current:
                await conn.rollback()
                continue
            for statement in migration.statements:
                await conn.execute(statement)
            violations = list(await conn.execute_fetchall("PRAGMA foreign_key_check"))
            if violations:
                raise MigrationError(f"foreign key violations after migration: {violations[:5]}")
            await conn.execute(f"PRAGMA user_version = {migration.version:d}")
            await conn.execute("COMMIT")
        except BaseException as exc:
            await conn.rollback()
            if isinstance(exc, sqlite3.Error):
                name = f"{migration.version:04d}_{migration.name}"
                raise MigrationError(f"migration {name} failed: {exc}") from exc
            raise
        current = migration.version
        applied.append(migration.version)
    return applied


class Database:
    """One shared aiosqlite connection, with a lock that keeps transactions apart."""

    def __init__(self, conn: aiosqlite.Connection, clock: Clock = utcnow) -> None:
        self._conn = conn
        self._clock = clock
        self._lock = asyncio.Lock()

    @property
    def conn(self) -> aiosqlite.Connection:
        """The raw connection (for tests and maintenance; repositories go through the lock)."""
        return self._conn

    def now(self) -> datetime:
        """The time rows are stamped with."""
        return self._clock()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back if the block raises (or is cancelled)."""
        async with self._lock:
            try:
                # BEGIN inside the try: if we are cancelled while it is queued, it still runs on
                # aiosqlite's thread, and the rollback queued behind it must undo it.
                await self._conn.execute("BEGIN IMMEDIATE")
                yield self._conn
                await self._conn.execute("COMMIT")
            except BaseException:
                await self._conn.rollback()
                raise

    @asynccontextmanager
    async def locked(self) -> AsyncIterator[aiosqlite.Connection]:
        """The connection, for single statements (each is atomic on its own, in autocommit)."""
        async with self._lock:
            yield self._conn

    async def checkpoint(self) -> bool:
        """Copy the WAL into the database file and truncate the WAL to zero bytes.

        After rows were deleted for privacy (``/forget``), their old versions no longer linger in WAL
        frames. False (and a warning) when another connection's open read kept part of the WAL:
        the next checkpoint finishes the job.
        """
        async with self._lock:
            rows = list(await self._conn.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)"))
        busy = bool(rows and rows[0][0])
        if busy:
            log.warning("WAL checkpoint incomplete: another connection is reading; it is retried at the next one")
        return not busy

    async def close(self) -> None:
        await self._conn.close()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def open_database(
    path: Path, *, clock: Clock = utcnow, migrations: Sequence[Migration] | None = None
) -> Database:
    """Open (creating it and its folder if needed) and migrate the database at ``path``.

    Settings: WAL journal (readers never block the writer), ``synchronous=NORMAL`` (durable
    across application crashes; the last commits may be lost only on power loss),
    ``foreign_keys=ON``, ``secure_delete=ON`` (deleted rows are overwritten with zeros, not left in
    free space) and a busy timeout. The folder is made 0700 and the database, its WAL and shared
    memory files 0600, whatever the umask. Raises :class:`SchemaTooNew` for a database written by a
    newer version.
    """
    if migrations is None:
        migrations = load_migrations()
    make_private_dirs(path.parent)
    # SQLite gives the -wal and -shm files it creates the mode of the database file.
    create_private_file(path)
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        conn.row_factory = sqlite3.Row
        await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
        # Before switching to WAL: a newer database is left exactly as it was found.
        await _refuse_newer(conn, migrations)
        mode = await _scalar(conn, "PRAGMA journal_mode = WAL")
        if str(mode).lower() != "wal":
            raise StorageError(f"{path}: the filesystem refused WAL mode (journal_mode={mode})")
        for companion in (f"{path}-wal", f"{path}-shm"):
            restrict(Path(companion))  # made by an older version, before the database file was 0600
        await conn.execute("PRAGMA synchronous = NORMAL")
        await conn.execute("PRAGMA secure_delete = ON")
        await conn.execute("PRAGMA foreign_keys = ON")
        if await _scalar(conn, "PRAGMA foreign_keys") != 1:
            raise StorageError("this SQLite build does not enforce foreign keys")
        await apply_migrations(conn, migrations)
    except BaseException:
        await conn.close()
        raise
    return Database(conn, clock)
