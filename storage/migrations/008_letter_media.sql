-- The media of a letter (photos, videos, documents; an album's in order): files in data/media/ named by their
-- SHA-256, pictures cleaned of their metadata before they were stored. No sender's file name is kept: it can name
-- the writer (IMG_20240301_143022.jpg says when, "Letter from Ana.pdf" who). A rejected or withdrawn letter loses
-- its media rows with its text; a file no row names any more is deleted by the next sweep.
CREATE TABLE letter_media (
    letter_id        INTEGER NOT NULL REFERENCES letters (id),
    seq              INTEGER NOT NULL,
    digest           TEXT    NOT NULL,
    kind             TEXT    NOT NULL CHECK (kind IN ('image', 'video', 'document')),
    mime_type        TEXT    NOT NULL,
    size             INTEGER NOT NULL,
    metadata_removed INTEGER NOT NULL,
    PRIMARY KEY (letter_id, seq)
);
CREATE INDEX letter_media_digest ON letter_media (digest);

-- An album arrives as separate messages sharing one id: its parts join one letter.
ALTER TABLE letter_parts ADD COLUMN media_group TEXT;
