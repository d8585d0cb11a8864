-- A letter's size and its last part live on the letter: adding a part reads and writes this one row, however
-- long the letter has grown, instead of adding up every part again.
ALTER TABLE letters ADD COLUMN parts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE letters ADD COLUMN length INTEGER NOT NULL DEFAULT 0;
ALTER TABLE letters ADD COLUMN last_part_at REAL;
ALTER TABLE letters ADD COLUMN last_part_length INTEGER NOT NULL DEFAULT 0;
UPDATE letters SET
    parts = (SELECT COUNT(*) FROM letter_parts p WHERE p.letter_id = letters.id),
    length = (SELECT COALESCE(SUM(p.length), 0) FROM letter_parts p WHERE p.letter_id = letters.id),
    last_part_at = (SELECT MAX(p.received_at) FROM letter_parts p WHERE p.letter_id = letters.id),
    last_part_length = COALESCE(
        (SELECT p.length FROM letter_parts p WHERE p.letter_id = letters.id ORDER BY p.seq DESC LIMIT 1), 0);
-- Letters a sender wrote in the last 24 hours (LETTERS_PER_DAY).
CREATE INDEX letters_sender_created ON letters (sender_id, created_at);

-- Rooms the bot joined on anyone's invitation, until they turn out to be a direct chat, a moderation room or a
-- subscription; the bot leaves those that do not within an hour. A row lives an hour at most.
CREATE TABLE joined_rooms (
    platform  TEXT NOT NULL,
    chat_id   TEXT NOT NULL,
    joined_at REAL NOT NULL,
    PRIMARY KEY (platform, chat_id)
);
