CREATE TABLE users (
    name TEXT PRIMARY KEY,
    created_ms BIGINT NOT NULL,
    show TEXT,
    status TEXT
);
CREATE TABLE offline (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    user_name TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    envelope TEXT NOT NULL
);
CREATE INDEX offline_by_user ON offline (user_name, seq);
CREATE TABLE devices (
    platform TEXT NOT NULL,
    token TEXT NOT NULL,
    user_name TEXT NOT NULL,
    app TEXT,
    os TEXT,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (platform, token)
);
CREATE INDEX devices_by_user ON devices (user_name);
