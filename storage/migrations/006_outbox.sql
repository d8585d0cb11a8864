-- Everything the bot says besides broadcasts (receipts, notices, replies, reports: lane 0; cards and their edits:
-- lane 1), written in the transaction of the change that causes it and deleted once sent or given up. Broadcasts
-- are the third lane: the deliveries table. A reply keeps its rendered message; a card keeps only which card it
-- is, and is rendered from the letter as it is when sent, so that only a card's newest state goes out.
-- AUTOINCREMENT: a row's id is never given again once it is deleted, as it makes the message's transaction id.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    lane            INTEGER NOT NULL CHECK (lane IN (0, 1)),
    platform        TEXT    NOT NULL,
    chat_id         TEXT    NOT NULL,
    chat_kind       TEXT    NOT NULL CHECK (chat_kind IN ('private', 'group', 'channel')),
    message         TEXT,
    letter_id       INTEGER,
    part            INTEGER,
    -- Raised when a card's newer state is asked for while its row waits or is in flight: a row sent at an older
    -- version is sent again, and the version is part of the transaction id (Matrix), so the new state is new.
    version         INTEGER NOT NULL DEFAULT 0,
    state           TEXT    NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'sending')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL    NOT NULL,
    last_error      TEXT,
    created_at      REAL    NOT NULL,
    CHECK ((message IS NULL) = (letter_id IS NOT NULL))
);
CREATE UNIQUE INDEX outbox_card ON outbox (letter_id, platform, chat_id, part) WHERE letter_id IS NOT NULL;
-- Each chat's oldest row, per lane: what the worker may send next.
CREATE INDEX outbox_chat ON outbox (lane, platform, chat_id, id);
