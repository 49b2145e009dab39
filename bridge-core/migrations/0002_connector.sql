-- The connector runtime: state a connector keeps between runs (a history cursor, say),
-- and the rooms where the bot takes commands without a prefix (its direct chats).

CREATE TABLE connector_state (
    network TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (network, key)
);

CREATE TABLE management_rooms (
    room_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- A Matrix event may map to several remote parts; this finds them all from the event.
CREATE INDEX message_map_room_event ON message_map (room_id, event_id);

-- What a portal's room is made with, kept for a room made later (by the outbox, after a
-- restart): whether it is public, and where its avatar comes from.
ALTER TABLE portals ADD COLUMN public BIGINT NOT NULL DEFAULT 0;
ALTER TABLE portals ADD COLUMN avatar_source TEXT;
