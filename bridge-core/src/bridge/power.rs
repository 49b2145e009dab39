//! Power in a room: a user's power level and the levels its actions need, with room
//! version 12's creators, who are listed nowhere and outrank every level.

use ruma::{RoomId, UserId};

use super::error::BridgeError;
use super::handle::Shared;

/// A user's power in a room, and the room's power levels.
///
/// The creator is the `m.room.create` event's sender, read with `?format=event`; a server
/// that ignores it gives the content alone, and creators then count as other users (fewer
/// rights, never more).
pub(crate) struct Power {
    /// Their level; `i64::MAX` for a creator in room version 12.
    pub(crate) level: i64,
    /// The room's `m.room.power_levels` content (empty if it has none).
    pub(crate) levels: serde_json::Value,
}

impl Power {
    /// Whether they may send the state event `event_type`.
    pub(crate) fn may_set(&self, event_type: &str) -> bool {
        // Without a power levels event, the spec's default for state is 0.
        let default = if self.levels.is_object() { 50 } else { 0 };
        let needed = self.levels["events"][event_type]
            .as_i64()
            .or_else(|| self.levels["state_default"].as_i64())
            .unwrap_or(default);
        self.level >= needed
    }

    /// Whether they may redact others' events.
    pub(crate) fn may_redact_others(&self) -> bool {
        self.level >= self.levels["redact"].as_i64().unwrap_or(50)
    }
}

impl Shared {
    /// `user`'s power in `room`, as the bot reads it.
    pub(crate) async fn power(&self, room: &RoomId, user: &UserId) -> Result<Power, BridgeError> {
        let bot = self.matrix.bot();
        // `Null` when the room has no power levels event.
        let levels = bot
            .room_state(room, "m.room.power_levels", "")
            .await?
            .unwrap_or_default();
        let create = bot
            .room_state_event(room, "m.room.create", "")
            .await?
            .unwrap_or_default();
        let version = create["content"]["room_version"].as_str().unwrap_or("1");
        let creators_rank_highest =
            version.parse::<u32>().is_ok_and(|v| v >= 12) || version.contains("hydra");
        let is_creator = create["sender"] == user.as_str()
            || create["content"]["additional_creators"]
                .as_array()
                .is_some_and(|users| users.iter().any(|u| u == user.as_str()));
        let level = if creators_rank_highest && is_creator {
            i64::MAX
        } else if !levels.is_object() && is_creator {
            // Without a power levels event, the spec gives the creator 100.
            100
        } else {
            crate::matrix::power_level_of(&levels, user)
        };
        Ok(Power { level, levels })
    }
}
