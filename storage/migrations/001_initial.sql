-- Senders are known only by a pseudonym number ("sender 7") outside this table.
CREATE TABLE senders (
    id          INTEGER PRIMARY KEY,
    platform    TEXT    NOT NULL,
    user_id     TEXT    NOT NULL,
    chat_id     TEXT    NOT NULL,
    language    TEXT,
    banned      INTEGER NOT NULL DEFAULT 0,
    created_at  REAL    NOT NULL,
    UNIQUE (platform, user_id)
);

CREATE TABLE letters (
    id           INTEGER PRIMARY KEY,
    sender_id    INTEGER NOT NULL REFERENCES senders (id),
    status       TEXT    NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'approved', 'rejected', 'withdrawn')),
    language     TEXT    NOT NULL DEFAULT 'und',
    created_at   REAL    NOT NULL,
    -- NULL while a client-split letter may still grow; set once the receipt and the cards went out.
    announced_at REAL,
    decided_at   REAL,
    reported_at  REAL
);
CREATE INDEX letters_status ON letters (status);
CREATE INDEX letters_sender ON letters (sender_id);

-- Each platform message that makes up a letter; the UNIQUE key makes a replayed update a no-op.
CREATE TABLE letter_parts (
    letter_id   INTEGER NOT NULL REFERENCES letters (id),
    seq         INTEGER NOT NULL,
    platform    TEXT    NOT NULL,
    chat_id     TEXT    NOT NULL,
    message_id  TEXT    NOT NULL,
    text        TEXT    NOT NULL,
    length      INTEGER NOT NULL,
    received_at REAL    NOT NULL,
    PRIMARY KEY (letter_id, seq),
    UNIQUE (platform, chat_id, message_id)
);

CREATE TABLE cards (
    letter_id   INTEGER NOT NULL REFERENCES letters (id),
    platform    TEXT    NOT NULL,
    chat_id     TEXT    NOT NULL,
    message_id  TEXT    NOT NULL,
    part        INTEGER NOT NULL,
    parts       INTEGER NOT NULL,
    UNIQUE (platform, chat_id, message_id),
    UNIQUE (letter_id, platform, chat_id, part)
);

-- The audit trail: every moderator action, who, what, when, why.
CREATE TABLE decisions (
    id           INTEGER PRIMARY KEY,
    letter_id    INTEGER NOT NULL REFERENCES letters (id),
    action       TEXT    NOT NULL,
    platform     TEXT    NOT NULL,
    moderator_id TEXT    NOT NULL,
    moderator    TEXT    NOT NULL,
    reason       TEXT,
    decided_at   REAL    NOT NULL
);
CREATE INDEX decisions_letter ON decisions (letter_id);

CREATE TABLE subscriptions (
    id                 INTEGER PRIMARY KEY,
    platform           TEXT    NOT NULL,
    chat_id            TEXT    NOT NULL,
    kind               TEXT    NOT NULL CHECK (kind IN ('private', 'group', 'channel')),
    title              TEXT,
    language           TEXT    NOT NULL,
    active             INTEGER NOT NULL DEFAULT 1,
    deactivated_reason TEXT,
    created_at         REAL    NOT NULL,
    updated_at         REAL    NOT NULL,
    UNIQUE (platform, chat_id)
);

-- The outbox: one row per letter and subscription. `sending` rows found at start-up were in flight at a crash.
CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY,
    letter_id       INTEGER NOT NULL REFERENCES letters (id),
    subscription_id INTEGER NOT NULL REFERENCES subscriptions (id),
    state           TEXT    NOT NULL DEFAULT 'queued'
                    CHECK (state IN ('queued', 'sending', 'sent', 'failed', 'dropped')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL    NOT NULL,
    parts_sent      INTEGER NOT NULL DEFAULT 0,
    remote_ids      TEXT    NOT NULL DEFAULT '',
    last_error      TEXT,
    updated_at      REAL    NOT NULL,
    UNIQUE (letter_id, subscription_id)
);
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);

CREATE TABLE translations (
    letter_id  INTEGER NOT NULL REFERENCES letters (id),
    language   TEXT    NOT NULL,
    text       TEXT    NOT NULL,
    source     TEXT    NOT NULL,
    created_at REAL    NOT NULL,
    PRIMARY KEY (letter_id, language)
);

-- Inbound events already handled (button presses, commands), so a replayed update changes nothing.
CREATE TABLE seen_events (
    platform TEXT NOT NULL,
    event_id TEXT NOT NULL,
    seen_at  REAL NOT NULL,
    PRIMARY KEY (platform, event_id)
);

CREATE TABLE bot_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
