//! The bridge bot's commands: in a portal room after the command prefix (`!linechat help`),
//! in a management room (a direct chat with the bot) with or without it. `help` is the
//! framework's; the connector adds its own ([`Connector::commands`]). Each command needs a
//! permission level, checked before it runs.
//!
//! [`Connector::commands`]: crate::connector::Connector::commands

use std::sync::Arc;

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

use super::error::BridgeError;
use super::handle::{BridgeHandle, Shared};
use crate::config::Permission;
use crate::connector::{CommandSpec, ConnectorError, Portal};

/// Where and by whom a command was given.
#[derive(Debug, Clone)]
pub struct CommandContext {
    /// The bridge, to act on.
    pub bridge: BridgeHandle,
    /// Who gave the command.
    pub sender: OwnedUserId,
    /// Their permission.
    pub permission: Permission,
    /// The room it was given in.
    pub room_id: OwnedRoomId,
    /// The portal, if given in a portal room.
    pub portal: Option<Portal>,
}

/// Whether `body` is a command in a portal room: the prefix alone or followed by a space.
pub(crate) fn has_prefix(shared: &Shared, body: &str) -> bool {
    body.strip_prefix(shared.command_prefix.as_str())
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
}

/// The words of a command: the prefix removed if there is one, split at whitespace.
pub(crate) fn words(prefix: &str, body: &str) -> Vec<String> {
    let rest = body
        .strip_prefix(prefix)
        .filter(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
        .unwrap_or(body);
    rest.split_whitespace().map(str::to_owned).collect()
}

/// Runs the command in `body` and answers in the room with a notice.
pub(crate) async fn run(
    shared: &Arc<Shared>,
    room: &RoomId,
    portal: Option<&Portal>,
    sender: &UserId,
    permission: Permission,
    body: &str,
    in_portal: bool,
) -> Result<(), BridgeError> {
    if permission == Permission::None {
        if !in_portal {
            shared
                .bot_notice(room, "You are not allowed to use this bridge.")
                .await?;
        }
        return Ok(());
    }
    let mut words = words(&shared.command_prefix, body);
    let name = if words.is_empty() {
        "help".to_owned()
    } else {
        words.remove(0).to_lowercase()
    };
    let answer = if name == "help" {
        help(shared, permission, in_portal)
    } else {
        match all_commands(shared).into_iter().find(|c| c.name == name) {
            None => format!(
                "Unknown command `{name}`. Say `{}` for the list.",
                help_hint(shared, in_portal)
            ),
            Some(spec) if spec.level > permission => format!(
                "`{name}` needs the {} permission; you have {}.",
                spec.level.name(),
                permission.name()
            ),
            Some(spec) => {
                let context = CommandContext {
                    bridge: BridgeHandle {
                        shared: Arc::clone(shared),
                    },
                    sender: sender.to_owned(),
                    permission,
                    room_id: room.to_owned(),
                    portal: portal.cloned(),
                };
                match spec.name {
                    "link" => super::links::link_command(shared, &context, &words).await?,
                    "unlink" => super::links::unlink_command(shared, &context).await?,
                    _ => match shared
                        .connector
                        .run_command(&context, spec.name, &words)
                        .await
                    {
                        Ok(answer) => answer,
                        Err(ConnectorError::Retry(reason)) => {
                            format!("`{name}` failed for now: {reason}. Try again later.")
                        }
                        Err(error) => format!("`{name}` failed: {error}"),
                    },
                }
            }
        }
    };
    if !answer.is_empty() {
        shared.bot_notice(room, &answer).await?;
    }
    Ok(())
}

/// The framework's commands after `help`, then the connector's.
fn all_commands(shared: &Shared) -> Vec<CommandSpec> {
    let mut commands = vec![
        CommandSpec {
            name: "link",
            args: "<address>",
            summary: "bridge this room to a remote chat (room admins, in the room)",
            level: Permission::User,
        },
        CommandSpec {
            name: "unlink",
            args: "",
            summary: "stop bridging this room (room admins, in the room)",
            level: Permission::User,
        },
    ];
    commands.extend(shared.connector.commands());
    commands
}

fn help_hint(shared: &Shared, in_portal: bool) -> String {
    if in_portal {
        format!("{} help", shared.command_prefix)
    } else {
        "help".to_owned()
    }
}

/// The commands `permission` may run, one per line.
fn help(shared: &Shared, permission: Permission, in_portal: bool) -> String {
    let prefix = if in_portal {
        format!("{} ", shared.command_prefix)
    } else {
        String::new()
    };
    let mut lines = vec![format!("{} bridge commands:", shared.network_name)];
    lines.push(format!("{prefix}help: this list"));
    for spec in all_commands(shared) {
        if spec.level <= permission {
            let args = if spec.args.is_empty() {
                String::new()
            } else {
                format!(" {}", spec.args)
            };
            lines.push(format!("{prefix}{}{args}: {}", spec.name, spec.summary));
        }
    }
    lines.join("\n")
}

/// The bot's own membership changed: an invite from a permitted user to a portal or to a
/// direct chat is accepted, and the direct chat becomes that user's management room; an
/// invite to another room (to `link` it) from a user of the bridge is accepted too;
/// leaving forgets it.
pub(crate) async fn bot_membership(
    shared: &Arc<Shared>,
    room: &RoomId,
    sender: &UserId,
    content: &serde_json::Value,
) -> Result<(), BridgeError> {
    let bot = shared.matrix.bot();
    match content["membership"].as_str() {
        Some("invite") => {
            if shared.permissions.of(sender) == Permission::None {
                tracing::info!(%room, %sender, "invite declined: no permission");
                bot.leave(room).await?;
                return Ok(());
            }
            let is_portal = shared.portal_by_room(room).await?.is_some();
            let is_direct = content["is_direct"] == true;
            // A direct chat becomes a management room; another room may be linked, by a
            // user who may use the bridge.
            if !is_portal && !is_direct && shared.permissions.of(sender) < Permission::User {
                tracing::info!(%room, %sender, "invite declined: not a direct chat");
                bot.leave(room).await?;
                return Ok(());
            }
            bot.join(room.into()).await?;
            if !is_portal && !is_direct {
                let hint = format!(
                    "Hello! A room admin can bridge this room to {} with `{} link <address>`.",
                    shared.network_name, shared.command_prefix
                );
                shared.bot_notice(room, &hint).await?;
            } else if !is_portal {
                shared
                    .store
                    .add_management_room(room.as_str(), sender.as_str())
                    .await?;
                let welcome = format!(
                    "Hello! This is the {} bridge. Say `help` for what I can do.",
                    shared.network_name
                );
                shared.bot_notice(room, &welcome).await?;
            }
        }
        Some("leave" | "ban") => shared.store.remove_management_room(room.as_str()).await?,
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::words;

    #[test]
    fn words_drop_the_prefix_only_as_a_whole_word() {
        assert_eq!(words("!lc", "!lc join  #a"), ["join", "#a"]);
        assert_eq!(words("!lc", "join #a"), ["join", "#a"]);
        assert_eq!(words("!lc", "!lcx join"), ["!lcx", "join"]);
        assert!(words("!lc", "!lc").is_empty());
    }
}
