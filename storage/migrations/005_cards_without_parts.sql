-- A card's part count was written and never read: how many parts a card has is how many rows it has.
ALTER TABLE cards DROP COLUMN parts;
