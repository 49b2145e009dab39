-- Prosody 0.12 test config (Trestle test bed).
-- Placeholders: {{DIR}} {{C2S_PORT}} {{COMPONENT_PORT}} {{COMPONENT_SECRET}}
-- Start (foreground): prosody --config {{DIR}}/prosody.cfg.lua -F
-- Users: prosodyctl --config {{DIR}}/prosody.cfg.lua register USER localhost PASSWORD
-- Never run a bare `prosody` / `prosodyctl` without --config (uses /etc/prosody).

run_as_root = true
admins = { }
plugin_paths = { }

pidfile = "{{DIR}}/prosody.pid"
data_path = "{{DIR}}/data"
-- For mod_admin_shell (`prosodyctl shell`), which tests use to put a room in states a
-- client cannot. A unix socket path must stay under 108 bytes: keep {{DIR}} short.
admin_socket = "{{DIR}}/prosody.sock"
certificates = "{{DIR}}" -- no certs; avoids an error about a missing certs/ dir
-- "info" keeps throughput runs cheap; use debug = ... to log every stanza.
log = {
	info = "{{DIR}}/prosody.log";
	error = "{{DIR}}/prosody.err";
}

-- Loopback only, no s2s, no HTTP.
interfaces = { "127.0.0.1" }
local_interfaces = { "127.0.0.1" }
c2s_ports = { {{C2S_PORT}} }
c2s_direct_tls_ports = { }
s2s_ports = { }
component_ports = { {{COMPONENT_PORT}} }
component_interfaces = { "127.0.0.1" }
http_ports = { }
https_ports = { }

authentication = "internal_hashed"
storage = "internal"
c2s_require_encryption = false
s2s_require_encryption = false
allow_unencrypted_plain_auth = true
allow_registration = false

-- No mod_limits (no rate limiting), no tls (no certificates needed).
modules_enabled = {
	"roster";
	"saslauth";
	"disco";
	"ping";
	"time";
	"version";
	"uptime";
	"private";
	"pep";
	"blocklist";
	"carbons";
	"mam";
	-- vCards (XEP-0054) kept as PEP avatars (XEP-0084) and the other way round, with
	-- their hash in presence (XEP-0398): where ghosts' avatars come from.
	"vcard_legacy";
	"admin_shell";
	"posix";
}
modules_disabled = {
	"s2s";
	"offline";
}

VirtualHost "localhost"

Component "conference.localhost" "muc"
	-- muc_moderation (XEP-0425) is from prosody-modules.
	modules_enabled = { "muc_mam", "muc_moderation" }
	-- XEP-0421 occupant ids are built into 0.12's MUC (muc_occupant_id, default on).
	muc_room_locking = false
	muc_room_default_public = true
	muc_room_default_persistent = false
	muc_tombstones = false
	restrict_room_creation = false

Component "bridge.localhost"
	component_secret = "{{COMPONENT_SECRET}}"
