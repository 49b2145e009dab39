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

/// The connector runtime's tables: portals, ghosts, the message map, the outbox (a row
/// leaves it in the same commit that maps it) and connector state.
#[tokio::test]
async fn portals_ghosts_the_map_and_the_outbox_on_both_backends() {
    use bridge_core::store::{GhostRow, MappedEvent, OutboxRow, PortalRow};
    for db in both_backends().await.unwrap() {
        let store = Store::connect(&db.url, 4).await.unwrap();
        let backend = db.backend;
        let portal = PortalRow {
            remote_id: "#chan'; DROP TABLE portals; --".to_owned(),
            room_id: None,
            alias: Some("#lc_chan:x".to_owned()),
            name: Some("chan".to_owned()),
            topic: None,
            avatar_url: None,
            avatar_source: Some("https://example.org/a.png".to_owned()),
            public: true,
            metadata: "{}".to_owned(),
            direct_user: None,
            direct_ghost: None,
        };
        store.insert_portal("lc", &portal).await.unwrap();
        // A second insert keeps the first row.
        let other = PortalRow {
            name: Some("other".to_owned()),
            ..portal.clone()
        };
        store.insert_portal("lc", &other).await.unwrap();
        assert_eq!(
            store
                .portal("lc", &portal.remote_id)
                .await
                .unwrap()
                .as_ref(),
            Some(&portal),
            "{backend}"
        );
        // Every column is saved, the direct chat's too.
        let with_room = PortalRow {
            room_id: Some("!r:x".to_owned()),
            direct_user: Some("@alice:x".to_owned()),
            direct_ghost: Some("bob".to_owned()),
            ..portal.clone()
        };
        store.update_portal("lc", &with_room).await.unwrap();
        assert_eq!(
            store.portal_by_room("lc", "!r:x").await.unwrap(),
            Some(with_room.clone()),
            "{backend}"
        );
        assert_eq!(
            store.portals_with_rooms("lc").await.unwrap(),
            vec![with_room],
            "{backend}"
        );
        assert!(
            store
                .portal("other-network", &portal.remote_id)
                .await
                .unwrap()
                .is_none()
        );

        let ghost = GhostRow {
            remote_id: "Bob".to_owned(),
            user_id: "@lc__bob:x".to_owned(),
            display_name: Some("Bob \u{1F600}".to_owned()),
            avatar_source: None,
            avatar_mxc: None,
            registered: true,
            metadata: "{}".to_owned(),
        };
        store.save_ghost("lc", &ghost).await.unwrap();
        assert_eq!(
            store.ghost("lc", "Bob").await.unwrap(),
            Some(ghost),
            "{backend}"
        );

        let first = store.max_outbox_seq().await.unwrap();
        let queued = |seq: i64, txn: &str| OutboxRow {
            seq,
            portal: portal.remote_id.clone(),
            txn_id: txn.to_owned(),
            sender: "Bob".to_owned(),
            kind: "message".to_owned(),
            content: "{}".to_owned(),
            attempts: 0,
        };
        assert!(store.push_outbox(&queued(first + 1, "t1")).await.unwrap());
        assert!(store.push_outbox(&queued(first + 2, "t2")).await.unwrap());
        assert!(
            !store.push_outbox(&queued(first + 3, "t1")).await.unwrap(),
            "a repeated txn id is queued once"
        );
        store.outbox_attempt_failed(first + 1, "502").await.unwrap();
        let head = store.outbox_head(&portal.remote_id).await.unwrap();
        assert_eq!(
            head.iter().map(|r| r.txn_id.as_str()).collect::<Vec<_>>(),
            ["t1", "t2"],
            "{backend}"
        );
        assert_eq!(head[0].attempts, 1);
        assert_eq!(
            store.outbox_portals().await.unwrap(),
            vec![portal.remote_id.clone()]
        );

        let mapped = MappedEvent {
            remote_chat: portal.remote_id.clone(),
            remote_id: "m1".to_owned(),
            part: 0,
            room_id: "!r:x".to_owned(),
            event_id: "$e1".to_owned(),
            sender: "Bob".to_owned(),
        };
        store
            .complete_outbox("lc", first + 1, std::slice::from_ref(&mapped))
            .await
            .unwrap();
        assert_eq!(
            store.outbox_head(&portal.remote_id).await.unwrap().len(),
            1,
            "{backend}"
        );
        assert_eq!(
            store
                .event_of_remote("lc", &portal.remote_id, "m1", 0)
                .await
                .unwrap(),
            Some(mapped.clone()),
            "{backend}"
        );
        let parts = vec![
            MappedEvent {
                remote_id: "x1".into(),
                event_id: "$m".into(),
                part: 0,
                ..mapped.clone()
            },
            MappedEvent {
                remote_id: "x2".into(),
                event_id: "$m".into(),
                part: 1,
                ..mapped.clone()
            },
        ];
        store.map_events("lc", &parts).await.unwrap();
        assert_eq!(
            store.remote_of_event("lc", "!r:x", "$m").await.unwrap(),
            parts,
            "{backend}"
        );

        assert_eq!(store.connector_value("lc", "cursor").await.unwrap(), None);
        store
            .set_connector_value("lc", "cursor", "5")
            .await
            .unwrap();
        store
            .set_connector_value("lc", "cursor", "7")
            .await
            .unwrap();
        assert_eq!(
            store
                .connector_value("lc", "cursor")
                .await
                .unwrap()
                .as_deref(),
            Some("7")
        );
        store.add_management_room("!dm:x", "@a:x").await.unwrap();
        assert_eq!(
            store
                .management_room_owner("!dm:x")
                .await
                .unwrap()
                .as_deref(),
            Some("@a:x")
        );
        store.remove_management_room("!dm:x").await.unwrap();
        assert_eq!(store.management_room_owner("!dm:x").await.unwrap(), None);
        store.close().await;
    }
}
