//! Prometheus metrics of a bridge: HTTP requests by route and status, transactions,
//! events by type, the ingest queue depth and handling latency. Served as `/metrics`.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of an HTTP request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route template, e.g. `/_matrix/app/v1/transactions/{txnId}` (never the raw
    /// path, which would make one series per transaction).
    pub route: String,
    /// The HTTP status code.
    pub status: u16,
}

/// Labels of a received transaction.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransactionLabels {
    /// `stored` (new), `duplicate` (seen before), or `failed`.
    pub outcome: &'static str,
}

/// Labels of an event.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// The event type if the spec defines it, else `other`: event types are chosen by
    /// remote senders, and each distinct label is a new series kept forever.
    pub event_type: &'static str,
}

/// The event and ephemeral types that get their own label.
const LABELLED_TYPES: &[&str] = &[
    "m.room.message",
    "m.room.encrypted",
    "m.room.member",
    "m.room.redaction",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.power_levels",
    "m.room.create",
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.canonical_alias",
    "m.room.pinned_events",
    "m.room.server_acl",
    "m.room.tombstone",
    "m.room.third_party_invite",
    "m.room.encryption",
    "m.reaction",
    "m.sticker",
    "m.typing",
    "m.receipt",
    "m.presence",
];

impl EventLabels {
    /// Labels for an event type.
    pub fn for_type(event_type: &str) -> Self {
        EventLabels {
            event_type: LABELLED_TYPES
                .iter()
                .find(|known| **known == event_type)
                .copied()
                .unwrap_or("other"),
        }
    }
}

/// All metrics of one bridge process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// HTTP requests served, by route and status.
    pub http_requests: Family<RequestLabels, Counter>,
    /// Transactions received, by outcome.
    pub transactions: Family<TransactionLabels, Counter>,
    /// Rows stored from transactions, by type.
    pub events_received: Family<EventLabels, Counter>,
    /// Rows handled, by type.
    pub events_handled: Family<EventLabels, Counter>,
    /// Events stored and not yet handled.
    pub ingest_pending: Gauge,
    /// Events in the room queues in memory (at most the ingest's limit; the rest of the
    /// pending events wait in the database).
    pub ingest_queued: Gauge,
    /// Seconds from a transaction's arrival to its event being handled.
    pub handling_latency: Histogram,
    /// Seconds a durable commit of received transactions took.
    pub commit_latency: Histogram,
}

impl Metrics {
    /// A fresh set of metrics, registered under the `trestle_` prefix.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("trestle");
        let http_requests = Family::default();
        registry.register(
            "http_requests",
            "HTTP requests served by the appservice endpoint",
            http_requests.clone(),
        );
        let transactions = Family::default();
        registry.register(
            "transactions",
            "Transactions received from the homeserver",
            transactions.clone(),
        );
        let events_received = Family::default();
        registry.register(
            "events_received",
            "Events, ephemeral data and to-device messages stored (repeats not counted)",
            events_received.clone(),
        );
        let events_handled = Family::default();
        registry.register(
            "events_handled",
            "Events, ephemeral data and to-device messages handed to the bridge and done",
            events_handled.clone(),
        );
        let ingest_pending = Gauge::default();
        registry.register(
            "ingest_pending",
            "Events stored durably and not yet handled",
            ingest_pending.clone(),
        );
        let ingest_queued = Gauge::default();
        registry.register(
            "ingest_queued",
            "Events waiting in the room queues in memory",
            ingest_queued.clone(),
        );
        let handling_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "handling_latency_seconds",
            "Time from receiving a transaction to handling its event",
            handling_latency.clone(),
        );
        let commit_latency = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "ingest_commit_seconds",
            "Time a durable commit of received transactions took",
            commit_latency.clone(),
        );
        Arc::new(Metrics {
            registry,
            http_requests,
            transactions,
            events_received,
            events_handled,
            ingest_pending,
            ingest_queued,
            handling_latency,
            commit_latency,
        })
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
