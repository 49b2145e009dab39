-- Trestle's schema. One file for SQLite and PostgreSQL: only types and syntax both accept
-- (BIGINT, TEXT, ON CONFLICT, partial indexes). JSON is stored as TEXT.

-- Transactions received from the homeserver, to answer a retried txnId without redoing it.
CREATE TABLE appservice_transactions (
    txn_id TEXT PRIMARY KEY,
    received_at BIGINT NOT NULL
);

-- Everything a transaction carried, stored before the transaction is acknowledged.
-- seq is the arrival order (assigned by the single writer); handled_at is set once the
-- bridge has handled the row. Handled rows are kept for a while to drop late duplicates.
CREATE TABLE inbound_events (
    seq BIGINT PRIMARY KEY,
    txn_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    event_id TEXT UNIQUE,
    room_id TEXT,
    event_type TEXT NOT NULL,
    content TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    handled_at BIGINT,
    error TEXT
);
CREATE INDEX inbound_events_pending ON inbound_events (seq) WHERE handled_at IS NULL;
CREATE INDEX inbound_events_handled ON inbound_events (handled_at) WHERE handled_at IS NOT NULL;

-- Portal rooms: one remote chat (channel, group chat) and its Matrix room. room_id is
-- NULL while the room is being created.
CREATE TABLE portals (
    network TEXT NOT NULL,
    remote_id TEXT NOT NULL,
    room_id TEXT UNIQUE,
    alias TEXT,
    name TEXT,
    topic TEXT,
    avatar_url TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    PRIMARY KEY (network, remote_id)
);

-- Ghosts: remote users as Matrix users, with the profile last set so it is not re-sent.
CREATE TABLE ghosts (
    network TEXT NOT NULL,
    remote_id TEXT NOT NULL,
    user_id TEXT NOT NULL UNIQUE,
    display_name TEXT,
    avatar_source TEXT,
    avatar_mxc TEXT,
    registered BIGINT NOT NULL DEFAULT 0,
    metadata TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (network, remote_id)
);

-- Logins (puppets): a Matrix user's identity on a network. secret holds credentials such
-- as an IRC password, encrypted with the configured key.
CREATE TABLE logins (
    user_id TEXT NOT NULL,
    network TEXT NOT NULL,
    remote_id TEXT,
    settings TEXT NOT NULL DEFAULT '{}',
    secret TEXT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, network)
);

-- Remote message ids and their Matrix events, for edits, redactions, replies and
-- reactions. A Matrix message may become several remote parts (split IRC lines) and a
-- remote message several events (text and files).
CREATE TABLE message_map (
    network TEXT NOT NULL,
    remote_chat TEXT NOT NULL,
    remote_id TEXT NOT NULL,
    part BIGINT NOT NULL DEFAULT 0,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (network, remote_chat, remote_id, part)
);
CREATE INDEX message_map_event ON message_map (event_id);

-- Remote-to-Matrix sends not yet confirmed by the homeserver, in order per room. txn_id
-- is deterministic so a retried send cannot post twice.
CREATE TABLE matrix_outbox (
    seq BIGINT PRIMARY KEY,
    room_key TEXT NOT NULL,
    txn_id TEXT NOT NULL UNIQUE,
    sender TEXT NOT NULL,
    event_type TEXT NOT NULL,
    content TEXT NOT NULL,
    remote_ts BIGINT,
    created_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX matrix_outbox_room ON matrix_outbox (room_key, seq);
