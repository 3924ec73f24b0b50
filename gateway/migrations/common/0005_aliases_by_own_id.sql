-- A message the gateway sends is known to its peer by the gateway's own id. Such an alias keeps
-- an empty foreign id and is found by its primary key, so the index by foreign id holds only
-- the ids peers chose, and sending a message writes one index entry fewer. An empty foreign id
-- stored before (a peer's stanza with id='') named nothing a peer could answer about, and would
-- now read as the gateway's own: it goes.
DELETE FROM message_aliases WHERE foreign_id = '';
DROP INDEX message_aliases_by_foreign;
CREATE INDEX message_aliases_by_foreign ON message_aliases (peer, foreign_id) WHERE foreign_id <> ''
