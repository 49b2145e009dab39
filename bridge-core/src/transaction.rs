//! One transaction pushed by the homeserver (`PUT /_matrix/app/v1/transactions/{txnId}`):
//! its timeline events, ephemeral data, to-device messages and MSC3202 device data.
//!
//! Events stay [`Raw`] so unknown event types pass through untouched. Storing and ordering
//! read the envelope every client event has (`type`, `event_id`, `room_id`, `sender`); an
//! event without one is recorded as malformed rather than refusing its transaction.

use ruma::events::AnyTimelineEvent;
use ruma::serde::Raw;
use ruma::{OwnedEventId, OwnedRoomId, OwnedTransactionId, OwnedUserId};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A transaction as received, with its id.
#[derive(Debug, Clone)]
pub struct IncomingTransaction {
    /// The homeserver's transaction id; a repeated id is the same transaction again.
    pub txn_id: OwnedTransactionId,
    /// The body.
    pub body: TransactionBody,
}

/// The JSON body of a transaction. Unstable keys are read beside the stable ones.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct TransactionBody {
    /// Timeline events, in the order the homeserver sent them.
    pub events: Vec<Raw<AnyTimelineEvent>>,
    /// Ephemeral data (typing, receipts, presence) when `receive_ephemeral` is set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ephemeral: Vec<Raw<ruma::api::appservice::event::push_events::v1::EphemeralData>>,
    /// The same under its MSC2409 name, which Synapse uses for the unstable flag.
    #[serde(
        default,
        rename = "de.sorunome.msc2409.ephemeral",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub unstable_ephemeral: Vec<Raw<ruma::api::appservice::event::push_events::v1::EphemeralData>>,
    /// To-device messages (MSC2409), kept as data.
    #[serde(
        default,
        rename = "de.sorunome.msc2409.to_device",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub to_device: Vec<Box<RawValue>>,
    /// MSC3202 device list changes, kept as data.
    #[serde(
        default,
        rename = "org.matrix.msc3202.device_lists",
        skip_serializing_if = "Option::is_none"
    )]
    pub device_lists: Option<Box<RawValue>>,
    /// MSC3202 one-time key counts, kept as data.
    #[serde(
        default,
        rename = "org.matrix.msc3202.device_one_time_keys_count",
        skip_serializing_if = "Option::is_none"
    )]
    pub device_one_time_keys_count: Option<Box<RawValue>>,
    /// MSC3202 unused fallback key types, kept as data.
    #[serde(
        default,
        rename = "org.matrix.msc3202.device_unused_fallback_key_types",
        skip_serializing_if = "Option::is_none"
    )]
    pub device_unused_fallback_key_types: Option<Box<RawValue>>,
}

/// The fields every timeline event carries, read to store and order it.
#[derive(Debug, Clone, Deserialize)]
pub struct EventEnvelope {
    /// The event id, unique per event.
    pub event_id: OwnedEventId,
    /// The room the event belongs to: events are handled in order per room.
    pub room_id: OwnedRoomId,
    /// Who sent it.
    pub sender: OwnedUserId,
    /// The event type, e.g. `m.room.message`.
    #[serde(rename = "type")]
    pub event_type: String,
}

/// Why a transaction body was refused.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is not JSON at all (`M_NOT_JSON`).
    #[error("the body is not JSON: {0}")]
    NotJson(serde_json::Error),
    /// The body is JSON of the wrong shape (`M_BAD_JSON`).
    #[error("{0}")]
    BadJson(String),
}

impl TransactionBody {
    /// Parses a body, telling "not JSON" from "JSON of the wrong shape". Events are kept
    /// exactly as received; a malformed event does not refuse the transaction (see
    /// [`TransactionBody::envelopes`]), since a refused transaction is retried forever by
    /// the homeserver and would hold back everything after it.
    pub fn parse(bytes: &[u8]) -> Result<TransactionBody, BodyError> {
        let body: TransactionBody = serde_json::from_slice(bytes).map_err(|error| {
            if error.is_data() {
                BodyError::BadJson(format!("not a transaction: {error}"))
            } else {
                BodyError::NotJson(error)
            }
        })?;
        // serde also reads a struct from a JSON array; a transaction is an object.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(BodyError::BadJson("the body must be a JSON object".into()));
        }
        Ok(body)
    }

    /// The envelope of each timeline event, in order, or why an event has none (not an
    /// object, or missing a valid `type`, `event_id`, `room_id` or `sender`).
    pub fn envelopes(&self) -> Vec<Result<EventEnvelope, String>> {
        self.events
            .iter()
            .enumerate()
            .map(|(index, event)| {
                if !event.json().get().trim_start().starts_with('{') {
                    return Err(format!("events[{index}]: not a JSON object"));
                }
                event
                    .deserialize_as_unchecked::<EventEnvelope>()
                    .map_err(|e| format!("events[{index}]: {e}"))
            })
            .collect()
    }

    /// All ephemeral data, stable and unstable keys together.
    pub fn all_ephemeral(
        &self,
    ) -> impl Iterator<Item = &Raw<ruma::api::appservice::event::push_events::v1::EphemeralData>>
    {
        self.ephemeral.iter().chain(self.unstable_ephemeral.iter())
    }
}

/// Where the endpoint hands a parsed transaction: it answers only once the sink says the
/// transaction is safe (durably stored, or seen before).
#[async_trait::async_trait]
pub trait TransactionSink: Send + Sync + 'static {
    /// Stores the transaction, or recognises it as already stored.
    async fn accept(&self, transaction: IncomingTransaction) -> Result<Accepted, SinkError>;
}

/// What became of an accepted transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Stored now; its events will be handled.
    Stored,
    /// Stored before (the homeserver retried): nothing is done again.
    AlreadySeen,
}

/// Why a transaction could not be accepted now; either way the homeserver retries.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// It was not stored (the database failed, the bridge is stopping): a server error.
    #[error("the transaction could not be stored: {0}")]
    Failed(String),
    /// A gap in the numbering right after a recovery: the homeserver should send any
    /// transaction of ours it left unsent first, from this number on (see `ingest::gap`).
    /// Nothing failed, so this is no server error.
    #[error("transactions from {0} were not received; send any unsent first")]
    OutOfOrder(u64),
}
