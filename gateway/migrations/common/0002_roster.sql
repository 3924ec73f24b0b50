CREATE TABLE roster (
    owner TEXT NOT NULL,
    contact TEXT NOT NULL,
    sub_to BIGINT NOT NULL,
    sub_from BIGINT NOT NULL,
    ask_out BIGINT NOT NULL,
    PRIMARY KEY (owner, contact)
);
CREATE INDEX roster_subscribers ON roster (owner, sub_from);
