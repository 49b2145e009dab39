-- Direct chats as portals: a remote user (`direct_ghost`, their remote id) and one Matrix
-- user (`direct_user`), in a room the remote user's ghost makes and invites them to.

ALTER TABLE portals ADD COLUMN direct_user TEXT;
ALTER TABLE portals ADD COLUMN direct_ghost TEXT;
