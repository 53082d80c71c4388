-- A lease on something only one replica may do at a time (the Discord gateway session of a
-- bot: two sessions on one shard would each receive every interaction). holder: the
-- replica's worker id; expires_at (ms): the holder renews it every few seconds, and any
-- replica may take a lease whose time has passed.
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
