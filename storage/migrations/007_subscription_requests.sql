-- A subscription asked for where the network cannot vouch for the sender (email: anyone can write a From line):
-- it starts only once the address's owner answers the bot's confirmation. Asking again replaces the language;
-- an unanswered request is dropped after a week, and `forget` drops it at once.
CREATE TABLE subscription_requests (
    platform  TEXT NOT NULL,
    chat_id   TEXT NOT NULL,
    language  TEXT NOT NULL,
    asked_at  REAL NOT NULL,
    PRIMARY KEY (platform, chat_id)
);
