CREATE TABLE wakes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    user_name TEXT NOT NULL,
    sender TEXT NOT NULL,
    kind TEXT NOT NULL,
    text TEXT,
    msg TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX wakes_by_user ON wakes (user_name, seq);
ALTER TABLE devices ADD COLUMN covered_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN notified_ms BIGINT
