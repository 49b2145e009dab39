//! Power in a room: a user's power level and the levels its actions need, with room
//! version 12's creators, who are listed nowhere and outrank every level.

use ruma::{RoomId, UserId};

use super::error::BridgeError;
use super::handle::Shared;

/// A user's power in a room, and the room's power levels.
pub(crate) struct Power {
    /// Their level; `i64::MAX` for a creator in room version 12.
    pub(crate) level: i64,
    /// The room's `m.room.power_levels` content (empty if it has none).
    pub(crate) levels: serde_json::Value,
}

impl Power {
    /// Whether they may send the state event `event_type`.
    pub(crate) fn may_set(&self, event_type: &str) -> bool {
        let needed = self.levels["events"][event_type]
            .as_i64()
            .or_else(|| self.levels["state_default"].as_i64())
            .unwrap_or(50);
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
        } else {
            crate::matrix::power_level_of(&levels, user)
        };
        Ok(Power { level, levels })
    }
}
