CREATE TABLE message_aliases (
    id TEXT PRIMARY KEY,
    peer TEXT NOT NULL,
    foreign_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX message_aliases_by_foreign ON message_aliases (peer, foreign_id);
