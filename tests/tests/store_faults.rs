//! The store under faults, on both backends: values PostgreSQL cannot hold in text, a
//! malformed event, a commit whose outcome was lost, and a second bridge process on the
//! same database.

use bridge_core::store::{EventKind, NewInboundRow, Store, StoreError};
use trestle_tests::databases::both_backends;

fn row(txn: &str, event_id: &str, room: &str, event_type: &str) -> NewInboundRow {
    NewInboundRow {
        txn_id: txn.to_owned(),
        kind: EventKind::Timeline,
        event_id: Some(event_id.to_owned()),
        room_id: Some(room.to_owned()),
        event_type: event_type.to_owned(),
        content: r#"{"body":"x"}"#.to_owned(),
        rejected: None,
    }
}

/// A NUL in an id or type (PostgreSQL text cannot hold one) must not fail the batch:
/// the homeserver would retry it forever and deliver nothing after it.
#[tokio::test]
async fn a_nul_in_an_id_or_type_does_not_fail_the_batch() {
    for db in both_backends().await.unwrap() {
        let store = Store::connect(&db.url, 4).await.unwrap();
        let mut seq = 0;
        let evil = row("t\0x", "$a\0b", "!r\0:x", "m.room.message\0");
        let outcome = store
            .store_transactions(&[("t\0x".into(), vec![evil])], &mut seq)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", db.backend));
        assert_eq!(outcome.new_transactions, vec![true]);
        let pending = store.pending_events().await.unwrap();
        assert_eq!(pending.len(), 1, "{}", db.backend);
        assert!(!pending[0].event_type.contains('\0'));
        // The same transaction again is still recognised.
        let again = store
            .store_transactions(
                &[("t\0x".into(), vec![row("t\0x", "$a\0b", "!r\0:x", "m")])],
                &mut seq,
            )
            .await
            .unwrap();
        assert_eq!(again.new_transactions, vec![false], "{}", db.backend);
        // An error text with a NUL is recorded too.
        store
            .mark_handled(&[(pending[0].seq, Some("bad\0reason".into()))])
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", db.backend));
        assert!(store.pending_events().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_malformed_event_is_recorded_as_failed_and_never_pending() {
    for db in both_backends().await.unwrap() {
        let store = Store::connect(&db.url, 4).await.unwrap();
        let mut seq = 0;
        let mut malformed = row("t1", "unused", "unused", "");
        malformed.event_id = None;
        malformed.room_id = None;
        malformed.rejected = Some("malformed event: events[0]: missing field `event_id`".into());
        let outcome = store
            .store_transactions(
                &[(
                    "t1".into(),
                    vec![malformed, row("t1", "$ok", "!r:x", "m.room.message")],
                )],
                &mut seq,
            )
            .await
            .unwrap();
        let stored: Vec<_> = outcome.stored.iter().map(|e| e.event_id.clone()).collect();
        assert_eq!(
            stored,
            vec![Some("$ok".to_owned())],
            "{}: only the good event is dispatched",
            db.backend
        );
        assert_eq!(
            store.pending_events().await.unwrap().len(),
            1,
            "{}",
            db.backend
        );

        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
        let (error,): (String,) =
            sqlx::query_as("SELECT error FROM inbound_events WHERE event_id IS NULL")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert!(
            error.contains("missing field `event_id`"),
            "{}: {error}",
            db.backend
        );
    }
}

/// A commit can fail after the database applied it. The sequence must move on anyway, or
/// the next batch would reuse its numbers and fail for good.
#[tokio::test]
async fn the_sequence_moves_on_after_a_failed_commit() {
    for db in both_backends().await.unwrap() {
        let store = Store::connect(&db.url, 4).await.unwrap();
        let mut seq = 0;
        store
            .store_transactions(
                &[("t1".into(), vec![row("t1", "$a", "!r:x", "m")])],
                &mut seq,
            )
            .await
            .unwrap();
        // A writer whose counter was not advanced by an applied commit collides once...
        let mut stale = 0;
        let collided = store
            .store_transactions(
                &[("t2".into(), vec![row("t2", "$b", "!r:x", "m")])],
                &mut stale,
            )
            .await;
        assert!(collided.is_err(), "{}", db.backend);
        // ...and its counter has moved past the numbers it tried, so the retry succeeds.
        assert!(stale >= 1, "{}", db.backend);
        let retried = store
            .store_transactions(
                &[("t2".into(), vec![row("t2", "$b", "!r:x", "m")])],
                &mut stale,
            )
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", db.backend));
        assert_eq!(retried.new_transactions, vec![true]);
        assert_eq!(
            store.pending_events().await.unwrap().len(),
            2,
            "{}",
            db.backend
        );
    }
}

#[tokio::test]
async fn a_second_process_cannot_use_the_same_database() {
    for db in both_backends().await.unwrap() {
        let first = Store::connect(&db.url, 4).await.unwrap();
        let lock = first.lock_instance(&db.url).await.unwrap();
        let second = Store::connect(&db.url, 4).await.unwrap();
        let refused = second.lock_instance(&db.url).await;
        assert!(
            matches!(refused, Err(StoreError::InUse(_))),
            "{}: {refused:?}",
            db.backend
        );
        drop(lock);
        // Released: the next process may start.
        let mut taken = second.lock_instance(&db.url).await;
        for _ in 0..50 {
            if taken.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            taken = second.lock_instance(&db.url).await;
        }
        assert!(taken.is_ok(), "{}: {taken:?}", db.backend);
    }
}
