-- Writers' privacy. A sender is now only a pseudonym ("sender 7"); the account behind it lives in `accounts`
-- while it is needed and is deleted at retention or on `forget`. Bans outlive the account as a keyed hash.
CREATE TABLE pseudonyms (
    id         INTEGER PRIMARY KEY,
    created_at REAL    NOT NULL
);
INSERT INTO pseudonyms (id, created_at) SELECT id, created_at FROM senders;

CREATE TABLE accounts (
    sender_id    INTEGER PRIMARY KEY REFERENCES senders (id),
    platform     TEXT    NOT NULL,
    user_id      TEXT    NOT NULL,
    chat_id      TEXT    NOT NULL,
    language     TEXT,
    last_seen_at REAL    NOT NULL,
    UNIQUE (platform, user_id)
);
INSERT INTO accounts (sender_id, platform, user_id, chat_id, language, last_seen_at)
    SELECT id, platform, user_id, chat_id, language, created_at FROM senders;

-- HMAC-SHA256 of the account under a key kept in a file beside the database, never in it. `sender_id` lets
-- `unban N` find the ban once the account itself is gone. Rows marked 'legacy:' are hashed at the next start.
CREATE TABLE bans (
    account_hash TEXT    PRIMARY KEY,
    sender_id    INTEGER,
    banned_at    REAL    NOT NULL
);
INSERT INTO bans (account_hash, sender_id, banned_at)
    SELECT 'legacy:' || platform || ':' || user_id, id, created_at FROM senders WHERE banned = 1;

DROP TABLE senders;
ALTER TABLE pseudonyms RENAME TO senders;

-- A part's chat and message id tie a letter to an account: they go at retention, so they may be NULL.
CREATE TABLE letter_parts_new (
    letter_id   INTEGER NOT NULL REFERENCES letters (id),
    seq         INTEGER NOT NULL,
    platform    TEXT    NOT NULL,
    chat_id     TEXT,
    message_id  TEXT,
    text        TEXT    NOT NULL,
    length      INTEGER NOT NULL,
    received_at REAL    NOT NULL,
    PRIMARY KEY (letter_id, seq),
    UNIQUE (platform, chat_id, message_id)
);
INSERT INTO letter_parts_new SELECT * FROM letter_parts;
DROP TABLE letter_parts;
ALTER TABLE letter_parts_new RENAME TO letter_parts;

-- A moderator's `edit N text` replaces the text the parts add up to.
ALTER TABLE letters ADD COLUMN edited_text TEXT;
ALTER TABLE letters ADD COLUMN edited_length INTEGER;
ALTER TABLE letters ADD COLUMN text_removed_at REAL;
-- Set when the letter's link to its sender's account was cut (retention or forget).
ALTER TABLE letters ADD COLUMN unlinked_at REAL;
CREATE INDEX letters_to_unlink ON letters (decided_at) WHERE unlinked_at IS NULL AND status != 'pending';

-- A withdrawal used to record the sender's platform id as if a moderator's.
UPDATE decisions SET moderator_id = '' WHERE action = 'withdraw';
CREATE INDEX seen_events_age ON seen_events (seen_at);
