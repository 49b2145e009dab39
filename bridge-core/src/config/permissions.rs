//! `bridge.permissions`: who may use the bridge, and how much. Entries name a Matrix user,
//! a homeserver, or everyone (`*`); the most specific entry that matches a user wins.

use std::collections::BTreeMap;

use ruma::{ServerName, UserId};

/// What a Matrix user may do with the bridge, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Permission {
    /// Nothing: their messages are not bridged and the bot ignores their commands.
    #[default]
    None,
    /// Their messages are bridged by a relay (the bot's own remote identity), if the
    /// connector has one.
    Relay,
    /// They use the bridge with their own remote identity.
    User,
    /// They administer the bridge.
    Admin,
}

impl Permission {
    /// The level named `name` (`none`, `relay`, `user`, `admin`).
    pub fn from_name(name: &str) -> Option<Permission> {
        match name {
            "none" => Some(Permission::None),
            "relay" => Some(Permission::Relay),
            "user" => Some(Permission::User),
            "admin" => Some(Permission::Admin),
            _ => None,
        }
    }

    /// The level's name in the config.
    pub fn name(self) -> &'static str {
        match self {
            Permission::None => "none",
            Permission::Relay => "relay",
            Permission::User => "user",
            Permission::Admin => "admin",
        }
    }
}

/// The permission entries, by subject.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    everyone: Option<Permission>,
    servers: BTreeMap<String, Permission>,
    users: BTreeMap<String, Permission>,
}

impl Permissions {
    /// Whether `subject` can name who an entry is for: `*`, a user id or a server name.
    pub fn check_subject(subject: &str) -> Result<(), String> {
        if subject == "*" {
            return Ok(());
        }
        if subject.starts_with('@') {
            return UserId::parse(subject)
                .map(drop)
                .map_err(|error| format!("not a valid Matrix user id: {error}"));
        }
        ServerName::parse(subject)
            .map(drop)
            .map_err(|error| format!("neither `*`, a user id nor a server name: {error}"))
    }

    /// Adds an entry for `subject` (checked with [`Permissions::check_subject`]).
    pub fn insert(&mut self, subject: &str, level: Permission) {
        if subject == "*" {
            self.everyone = Some(level);
        } else if subject.starts_with('@') {
            self.users.insert(subject.to_owned(), level);
        } else {
            self.servers.insert(subject.to_ascii_lowercase(), level);
        }
    }

    /// The level of `user`: their own entry, else their server's, else everyone's, else
    /// [`Permission::None`].
    pub fn of(&self, user: &UserId) -> Permission {
        self.users
            .get(user.as_str())
            .or_else(|| {
                self.servers
                    .get(&user.server_name().as_str().to_ascii_lowercase())
            })
            .or(self.everyone.as_ref())
            .copied()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma::user_id;

    #[test]
    fn the_most_specific_entry_wins() {
        let mut permissions = Permissions::default();
        permissions.insert("*", Permission::Relay);
        permissions.insert("Example.org", Permission::User);
        permissions.insert("@boss:example.org", Permission::Admin);
        permissions.insert("@troll:example.org", Permission::None);
        assert_eq!(
            permissions.of(user_id!("@boss:example.org")),
            Permission::Admin
        );
        assert_eq!(
            permissions.of(user_id!("@troll:example.org")),
            Permission::None
        );
        assert_eq!(permissions.of(user_id!("@a:example.org")), Permission::User);
        assert_eq!(
            permissions.of(user_id!("@a:elsewhere.net")),
            Permission::Relay
        );
        assert_eq!(
            Permissions::default().of(user_id!("@a:example.org")),
            Permission::None
        );
    }

    #[test]
    fn subjects_are_checked() {
        for good in ["*", "example.org", "@a:example.org", "127.0.0.1:8448"] {
            assert!(Permissions::check_subject(good).is_ok(), "{good}");
        }
        for bad in ["", "@nope", "a b", "**"] {
            assert!(Permissions::check_subject(bad).is_err(), "{bad}");
        }
        assert!(Permission::Admin > Permission::User && Permission::User > Permission::Relay);
    }
}
