//! Turning a received transaction into rows to store: timeline events with their
//! envelopes, ephemeral data with its room, to-device messages, and MSC3202 device data.

use serde::Deserialize;

use crate::store::{EventKind, NewInboundRow};
use crate::transaction::IncomingTransaction;

/// The fields read from ephemeral data and to-device messages.
#[derive(Deserialize)]
struct Header {
    #[serde(rename = "type", default)]
    event_type: String,
    #[serde(default)]
    room_id: Option<String>,
}

/// The rows of a transaction, in the order the homeserver sent them. A timeline event
/// without a valid envelope becomes a rejected row: on record, never handed over.
pub(super) fn rows_of(transaction: &IncomingTransaction) -> Vec<NewInboundRow> {
    let txn_id = transaction.txn_id.to_string();
    let body = &transaction.body;
    let row = |kind, event_id, room_id, event_type, content: &str| NewInboundRow {
        txn_id: txn_id.clone(),
        kind,
        event_id,
        room_id,
        event_type,
        content: content.to_owned(),
        rejected: None,
    };
    let mut rows = Vec::with_capacity(body.events.len());
    for (event, envelope) in body.events.iter().zip(body.envelopes()) {
        match envelope {
            Ok(envelope) => rows.push(row(
                EventKind::Timeline,
                Some(envelope.event_id.to_string()),
                Some(envelope.room_id.to_string()),
                envelope.event_type,
                event.json().get(),
            )),
            Err(reason) => {
                tracing::warn!(txn_id = ?transaction.txn_id, %reason, "malformed event recorded, not handled");
                let mut rejected = row(
                    EventKind::Timeline,
                    None,
                    None,
                    String::new(),
                    event.json().get(),
                );
                rejected.rejected = Some(format!("malformed event: {reason}"));
                rows.push(rejected);
            }
        }
    }
    for data in body.all_ephemeral() {
        let header = data.deserialize_as_unchecked::<Header>().ok();
        let (event_type, room_id) =
            header.map_or((String::new(), None), |h| (h.event_type, h.room_id));
        rows.push(row(
            EventKind::Ephemeral,
            None,
            room_id,
            event_type,
            data.json().get(),
        ));
    }
    for message in &body.to_device {
        let event_type = serde_json::from_str::<Header>(message.get())
            .map(|h| h.event_type)
            .unwrap_or_default();
        rows.push(row(
            EventKind::ToDevice,
            None,
            None,
            event_type,
            message.get(),
        ));
    }
    let device_data = [
        ("org.matrix.msc3202.device_lists", &body.device_lists),
        (
            "org.matrix.msc3202.device_one_time_keys_count",
            &body.device_one_time_keys_count,
        ),
        (
            "org.matrix.msc3202.device_unused_fallback_key_types",
            &body.device_unused_fallback_key_types,
        ),
    ];
    for (key, value) in device_data {
        if let Some(value) = value {
            rows.push(row(
                EventKind::DeviceData,
                None,
                None,
                key.to_owned(),
                value.get(),
            ));
        }
    }
    rows
}
