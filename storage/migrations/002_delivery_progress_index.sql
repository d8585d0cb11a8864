-- "Is anything of this letter still open?" is asked after every send: answer it from an index.
CREATE INDEX deliveries_letter_state ON deliveries (letter_id, state);
