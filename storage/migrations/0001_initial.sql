-- 0001_initial: the first schema of facechain-bot.
--
-- Conventions (every migration):
--   * storage/db.py runs each file in one transaction with the PRAGMA user_version bump:
--     no BEGIN/COMMIT here.
--   * Timestamps are ISO-8601 UTC text with microseconds ('2026-01-02T03:04:05.000006+00:00').
--   * Enumerations (platform, status, kind) are checked by the Python enums of storage/models.py,
--     not by CHECK constraints: adding a platform or a status must not need a table rebuild.
--   * Everything a user owns hangs off users(id) with ON DELETE CASCADE, so deleting the user
--     row deletes all of it (storage/repositories/forget.py relies on this).
--   * AUTOINCREMENT where an id leaves the database (jobs, blob keys, chat messages):
--     an id of a forgotten user or model is never handed out again.

CREATE TABLE users (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at  TEXT NOT NULL
) STRICT;

-- A chat account (Telegram user, Discord user) that speaks as a user; a user may link several.
CREATE TABLE identities (
    platform          TEXT NOT NULL,
    platform_user_id  TEXT NOT NULL CHECK (length(platform_user_id) BETWEEN 1 AND 128),
    user_id           INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    display_name      TEXT NOT NULL DEFAULT '',
    created_at        TEXT NOT NULL,
    PRIMARY KEY (platform, platform_user_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX identities_by_user ON identities (user_id);

-- The persisted conversation state of bot/core (a JSON object).
CREATE TABLE conversations (
    user_id     INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    state       TEXT NOT NULL CHECK (json_valid(state) AND json_type(state) = 'object'),
    updated_at  TEXT NOT NULL
) STRICT;

CREATE TABLE photo_sets (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    status      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    UNIQUE (id, user_id)
) STRICT;
-- At most one set per user is collecting photos.
CREATE UNIQUE INDEX photo_sets_one_collecting ON photo_sets (user_id) WHERE status = 'collecting';

CREATE TABLE photos (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    set_id      INTEGER NOT NULL,
    user_id     INTEGER NOT NULL,
    blob_key    TEXT NOT NULL UNIQUE,
    -- SHA-256 of the upload as received: the same file twice in one set is refused.
    sha256      TEXT NOT NULL CHECK (length(sha256) = 64),
    size_bytes  INTEGER NOT NULL CHECK (size_bytes >= 0),
    width       INTEGER NOT NULL CHECK (width > 0),
    height      INTEGER NOT NULL CHECK (height > 0),
    mime        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    UNIQUE (set_id, sha256),
    -- The photo's user is its set's user.
    FOREIGN KEY (set_id, user_id) REFERENCES photo_sets (id, user_id) ON DELETE CASCADE
) STRICT;
CREATE INDEX photos_by_user ON photos (user_id);

CREATE TRIGGER photos_only_into_collecting_sets
BEFORE INSERT ON photos
WHEN (SELECT status FROM photo_sets WHERE id = NEW.set_id) IS NOT 'collecting'
BEGIN
    SELECT RAISE(ABORT, 'photo set is not collecting');
END;

CREATE TABLE face_models (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id       INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    version       INTEGER NOT NULL CHECK (version >= 1),
    status        TEXT NOT NULL,
    photo_set_id  INTEGER REFERENCES photo_sets (id) ON DELETE SET NULL,
    subject       TEXT,
    trigger       TEXT,
    template_key  TEXT,
    lora_key      TEXT,
    error_code    TEXT,
    created_at    TEXT NOT NULL,
    finished_at   TEXT,
    UNIQUE (user_id, version)
) STRICT;

CREATE TRIGGER face_models_own_photo_set
BEFORE INSERT ON face_models
WHEN NEW.photo_set_id IS NOT NULL
    AND (SELECT user_id FROM photo_sets WHERE id = NEW.photo_set_id) IS NOT NEW.user_id
BEGIN
    SELECT RAISE(ABORT, 'photo set belongs to another user');
END;

CREATE TABLE communities (
    id                     INTEGER PRIMARY KEY AUTOINCREMENT,
    platform               TEXT NOT NULL,
    external_id            TEXT NOT NULL CHECK (length(external_id) BETWEEN 1 AND 128),
    user_daily_quota       INTEGER CHECK (user_daily_quota >= 0),
    community_daily_quota  INTEGER CHECK (community_daily_quota >= 0),
    results_to             TEXT NOT NULL DEFAULT 'channel',
    nsfw_allowed           INTEGER NOT NULL DEFAULT 0 CHECK (nsfw_allowed IN (0, 1)),
    created_at             TEXT NOT NULL,
    UNIQUE (platform, external_id)
) STRICT;

-- An admin's choice to switch a style on or off in one community (names compare case-insensitively).
CREATE TABLE community_style_toggles (
    community_id  INTEGER NOT NULL REFERENCES communities (id) ON DELETE CASCADE,
    style         TEXT NOT NULL COLLATE NOCASE,
    enabled       INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    PRIMARY KEY (community_id, style)
) STRICT, WITHOUT ROWID;

-- Styles an admin added to one community. They belong to the community: forgetting the admin
-- only clears created_by.
CREATE TABLE custom_styles (
    community_id     INTEGER NOT NULL REFERENCES communities (id) ON DELETE CASCADE,
    name             TEXT NOT NULL COLLATE NOCASE CHECK (length(name) BETWEEN 1 AND 64),
    prompt           TEXT NOT NULL,
    negative_prompt  TEXT NOT NULL DEFAULT '',
    lora_key         TEXT,
    style_weight     REAL NOT NULL,
    face_weight      REAL NOT NULL,
    created_by       INTEGER REFERENCES users (id) ON DELETE SET NULL,
    created_at       TEXT NOT NULL,
    PRIMARY KEY (community_id, name)
) STRICT;
CREATE INDEX custom_styles_by_creator ON custom_styles (created_by);

CREATE TABLE runs (
    id                   TEXT PRIMARY KEY,
    user_id              INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind                 TEXT NOT NULL,
    status               TEXT NOT NULL,
    attempt              INTEGER NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    model_id             INTEGER REFERENCES face_models (id) ON DELETE SET NULL,
    style                TEXT,
    count                INTEGER CHECK (count >= 1),
    progress             REAL NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 1),
    stage                TEXT,
    error_code           TEXT,
    error_message        TEXT,
    -- Delivery: where progress and results go.
    platform             TEXT NOT NULL,
    chat_id              TEXT NOT NULL,
    progress_message_id  TEXT,
    community_id         INTEGER REFERENCES communities (id) ON DELETE SET NULL,
    created_at           TEXT NOT NULL,
    started_at           TEXT,
    finished_at          TEXT,
    UNIQUE (id, user_id)
) STRICT;
CREATE INDEX runs_by_user_status ON runs (user_id, status);
CREATE INDEX runs_by_status ON runs (status, created_at);

CREATE TRIGGER runs_own_model
BEFORE INSERT ON runs
WHEN NEW.model_id IS NOT NULL
    AND (SELECT user_id FROM face_models WHERE id = NEW.model_id) IS NOT NEW.user_id
BEGIN
    SELECT RAISE(ABORT, 'face model belongs to another user');
END;

CREATE TABLE portraits (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      TEXT NOT NULL,
    user_id     INTEGER NOT NULL,
    blob_key    TEXT NOT NULL UNIQUE,
    seed        INTEGER NOT NULL,
    score       REAL,
    style       TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    FOREIGN KEY (run_id, user_id) REFERENCES runs (id, user_id) ON DELETE CASCADE
) STRICT;
CREATE INDEX portraits_by_run ON portraits (run_id);
CREATE INDEX portraits_by_user ON portraits (user_id);

-- Daily counters for quotas. community_id NULL = private chats.
CREATE TABLE usage_counters (
    user_id       INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    community_id  INTEGER REFERENCES communities (id) ON DELETE CASCADE,
    day           TEXT NOT NULL CHECK (day GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'),
    kind          TEXT NOT NULL,
    n             INTEGER NOT NULL CHECK (n >= 0)
) STRICT;
-- NULLs are distinct in a UNIQUE index, so private chats are keyed as community 0.
CREATE UNIQUE INDEX usage_counters_key ON usage_counters (user_id, ifnull(community_id, 0), day, kind);
CREATE INDEX usage_counters_by_community ON usage_counters (community_id, day, kind);

-- Blobs whose rows are gone but whose files may not be yet (forget_user writes these in the
-- same transaction that deletes the rows, and removes each once its files are deleted).
-- A key ending in '/' is a prefix: everything under it goes.
CREATE TABLE blob_deletions (
    key        TEXT PRIMARY KEY,
    queued_at  TEXT NOT NULL
) STRICT, WITHOUT ROWID;
