//! Both database backends for one test: a fresh SQLite file and a fresh PostgreSQL
//! database on the shared test cluster, so every store test runs on both.

use crate::{Postgres, Result, run_dir};

/// A database URL to test against, and its name for messages.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// The URL to give the store.
    pub url: String,
}

/// A fresh SQLite file and a fresh PostgreSQL database.
pub async fn both_backends() -> Result<Vec<TestDatabase>> {
    Ok(vec![fresh_sqlite(), fresh_postgres().await?])
}

/// A fresh SQLite database file (created on first connect).
pub fn fresh_sqlite() -> TestDatabase {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    let path = run_dir().join(format!("store-{}.db", NEXT.fetch_add(1, Ordering::Relaxed)));
    TestDatabase {
        backend: "sqlite",
        url: format!("sqlite://{}?mode=rwc", path.display()),
    }
}

/// A fresh database on the shared PostgreSQL cluster.
pub async fn fresh_postgres() -> Result<TestDatabase> {
    Ok(TestDatabase {
        backend: "postgres",
        url: Postgres::shared().await?.create_database().await?,
    })
}
