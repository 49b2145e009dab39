//! The store on both backends (SQLite and PostgreSQL): migrations, durable transaction
//! storage with de-duplication, pending rows across reconnects, secrets sealed at rest,
//! and hostile strings kept as data.

use bridge_core::store::{EventKind, Login, NewInboundRow, SecretBox, Store};
use sqlx::Row;
use trestle_tests::databases::both_backends;

fn row(txn: &str, event_id: Option<&str>, room: &str, body: &str) -> NewInboundRow {
    NewInboundRow {
        txn_id: txn.to_owned(),
        kind: if event_id.is_some() {
            EventKind::Timeline
        } else {
            EventKind::Ephemeral
        },
        event_id: event_id.map(str::to_owned),
        room_id: Some(room.to_owned()),
        event_type: "m.room.message".to_owned(),
        content: format!(r#"{{"body":{body:?}}}"#),
        rejected: None,
    }
}

#[tokio::test]
async fn migrations_apply_once_and_reconnecting_keeps_the_data() {
    for db in both_backends().await.unwrap() {
        let store = Store::connect(&db.url, 4).await.unwrap();
        let mut seq = store.max_inbound_seq().await.unwrap();
        assert_eq!(seq, 0, "{}", db.backend);
        store
            .store_transactions(
                &[("t1".into(), vec![row("t1", Some("$a"), "!r:x", "one")])],
                &mut seq,
            )
            .await
            .unwrap();
        store.close().await;
        let again = Store::connect(&db.url, 4).await.unwrap();
        assert_eq!(again.max_inbound_seq().await.unwrap(), 1, "{}", db.backend);
        assert_eq!(
            again.pending_events().await.unwrap().len(),
            1,
            "{}",
            db.backend
        );
    }
}

#[tokio::test]
async fn a_repeated_transaction_or_event_is_stored_once() {
    for db in both_backends().await.unwrap() {
        let store = Store::connect(&db.url, 4).await.unwrap();
        let mut seq = 0;
        let first = vec![
            row("t1", Some("$a"), "!r:x", "one"),
            row("t1", Some("$b"), "!r:x", "two"),
            row("t1", None, "!r:x", "typing"),
        ];
        let outcome = store
            .store_transactions(
                &[
                    ("t1".into(), first.clone()),
                    // The same id again in the same batch: skipped whole.
                    ("t1".into(), first.clone()),
                    // A new transaction repeating one event and adding one.
                    (
                        "t2".into(),
                        vec![
                            row("t2", Some("$b"), "!r:x", "two"),
                            row("t2", Some("$c"), "!r:x", "three"),
                        ],
                    ),
                ],
                &mut seq,
            )
            .await
            .unwrap();
        assert_eq!(
            outcome.new_transactions,
            vec![true, false, true],
            "{}",
            db.backend
        );
        let ids: Vec<_> = outcome.stored.iter().map(|e| e.event_id.clone()).collect();
        assert_eq!(
            ids,
            vec![
                Some("$a".into()),
                Some("$b".into()),
                None,
                Some("$c".into())
            ],
            "{}",
            db.backend
        );
        // A later batch repeating t1 is recognised too.
        let outcome = store
            .store_transactions(&[("t1".into(), first)], &mut seq)
            .await
            .unwrap();
        assert_eq!(outcome.new_transactions, vec![false], "{}", db.backend);
        assert!(outcome.stored.is_empty());

        let pending = store.pending_events().await.unwrap();
        assert_eq!(pending.len(), 4, "{}", db.backend);
        assert!(pending.iter().all(|e| e.redelivered));
        assert!(
            pending.windows(2).all(|w| w[0].seq < w[1].seq),
            "arrival order"
        );
        assert_eq!(&*pending[0].content, r#"{"body":"one"}"#);

        store
            .mark_handled(&[
                (pending[0].seq, None),
                (pending[1].seq, Some("gave up".into())),
            ])
            .await
            .unwrap();
        let left: Vec<_> = store
            .pending_events()
            .await
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(left, vec![pending[2].seq, pending[3].seq], "{}", db.backend);
    }
}

/// What the caller of a failed store sees: an error, the sequence where it was, nothing
/// stored. The failure is a closed pool, so it comes before any statement runs; a commit
/// that fails halfway (and must roll back) is not what this covers.
#[tokio::test]
async fn a_store_on_a_closed_pool_fails_before_storing_anything_and_keeps_the_sequence() {
    for db in both_backends().await.unwrap() {
        let store = Store::connect(&db.url, 4).await.unwrap();
        let mut seq = 0;
        store
            .store_transactions(
                &[("t1".into(), vec![row("t1", Some("$a"), "!r:x", "one")])],
                &mut seq,
            )
            .await
            .unwrap();
        store.close().await;
        // A closed pool fails the next commit.
        let result = store
            .store_transactions(
                &[("t2".into(), vec![row("t2", Some("$b"), "!r:x", "two")])],
                &mut seq,
            )
            .await;
        assert!(result.is_err(), "{}", db.backend);
        assert_eq!(seq, 1, "{}", db.backend);
        let store = Store::connect(&db.url, 4).await.unwrap();
        assert_eq!(
            store.pending_events().await.unwrap().len(),
            1,
            "{}",
            db.backend
        );
    }
}

#[tokio::test]
async fn hostile_strings_are_stored_as_data() {
    let hostile = "'); DROP TABLE inbound_events; --\u{0}\r\n$1 ? :name";
    for db in both_backends().await.unwrap() {
        let store = Store::connect(&db.url, 4).await.unwrap();
        let mut seq = 0;
        let mut evil = row(hostile, Some(hostile), hostile, hostile);
        // PostgreSQL text cannot hold NUL; JSON content escapes it, ids must not carry it.
        evil.txn_id = hostile.replace('\u{0}', "");
        evil.event_id = Some(evil.txn_id.clone());
        evil.room_id = Some(evil.txn_id.clone());
        store
            .store_transactions(&[(evil.txn_id.clone(), vec![evil.clone()])], &mut seq)
            .await
            .unwrap();
        let pending = store.pending_events().await.unwrap();
        assert_eq!(pending.len(), 1, "{}", db.backend);
        assert_eq!(pending[0].room_id.as_deref(), Some(evil.txn_id.as_str()));
        assert_eq!(&*pending[0].content, evil.content.as_str());
    }
}

#[tokio::test]
async fn login_secrets_are_sealed_at_rest() {
    let secrets = SecretBox::from_base64(&SecretBox::generate_key()).unwrap();
    for db in both_backends().await.unwrap() {
        let store = Store::connect(&db.url, 4).await.unwrap();
        let login = Login {
            user_id: "@alice:example.org".into(),
            network: "irc:test".into(),
            remote_id: Some("alice".into()),
            settings: "{}".into(),
            secret: Some("correct horse battery staple".into()),
        };
        store.save_login(&login, &secrets).await.unwrap();
        let loaded = store
            .load_login("@alice:example.org", "irc:test", &secrets)
            .await
            .unwrap();
        assert_eq!(loaded.as_ref(), Some(&login), "{}", db.backend);

        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
        let stored: String = sqlx::query("SELECT secret FROM logins")
            .fetch_one(&pool)
            .await
            .unwrap()
            .get("secret");
        assert!(!stored.contains("horse"), "{}: stored in clear", db.backend);

        let wrong_key = SecretBox::from_base64(&SecretBox::generate_key()).unwrap();
        assert!(
            store
                .load_login("@alice:example.org", "irc:test", &wrong_key)
                .await
                .is_err()
        );
        store
            .delete_login("@alice:example.org", "irc:test")
            .await
            .unwrap();
        assert_eq!(
            store
                .load_login("@alice:example.org", "irc:test", &secrets)
                .await
                .unwrap(),
            None
        );
    }
}
