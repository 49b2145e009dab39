//! The database: SQLite by default, PostgreSQL by URL, with the same embedded migrations
//! and the same queries on both (through sqlx's `Any` driver, `$N` placeholders, and only
//! types both accept). Every value from outside reaches SQL as a bound parameter.
//!
//! SQLite runs in WAL mode with `synchronous=FULL`: a commit is on disk when it returns,
//! which is what "acknowledge only once durably stored" needs.

mod connector_state;
mod ghosts;
mod inbound;
mod logins;
mod message_map;
mod outbox;
mod portals;
mod secret;

use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

pub use ghosts::GhostRow;
pub use inbound::{BatchOutcome, EventKind, NewInboundRow, StoredEvent};
pub use logins::Login;
pub use message_map::MappedEvent;
pub use outbox::OutboxRow;
pub use portals::PortalRow;
pub use secret::{SecretBox, SecretError};

/// Migrations embedded in the binary; run at every start.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Backend {
    /// The backend a database URL names (the scheme, in any case).
    pub fn of_url(url: &str) -> Result<Backend, StoreError> {
        let scheme = url
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        match scheme.as_str() {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            _ => Err(StoreError::UnsupportedUrl(scheme)),
        }
    }
}

/// Proof that this process is the only one using its database: a bridge running twice on
/// one database would handle every event twice. Held for as long as the bridge runs.
#[derive(Debug)]
pub enum InstanceLock {
    /// An exclusive lock on a file beside the SQLite database.
    File(std::fs::File),
    /// A PostgreSQL session advisory lock, held by its own connection.
    Postgres(sqlx::AnyConnection),
}

/// The advisory lock key of a Trestle bridge database.
/// ("trestle" in ASCII).
const ADVISORY_LOCK_KEY: i64 = 0x0074_7265_7374_6c65;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL names no supported database. Only the scheme is kept: the rest
    /// of a URL may hold a password.
    #[error("unsupported database URL scheme {0:?}: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    /// Another bridge process already uses this database.
    #[error("another bridge process is using this database ({0}); stop it first")]
    InUse(String),
    /// The database answered with an error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The migrations could not be applied.
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A stored value is not what the schema promises.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
}

/// A connection pool to the bridge's database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Connects (creating an SQLite file if the URL says `mode=rwc`), and applies the
    /// migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url)?;
        let options = AnyConnectOptions::from_str(url)?;
        // SQLite has one writer at a time, and a connection waiting for the write lock
        // sleeps in SQLite's busy handler (up to 100 ms a try): with one connection the
        // writers queue in the pool instead, in order, without sleeping.
        let connections = match backend {
            Backend::Sqlite => 1,
            Backend::Postgres => max_connections.max(1),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(connections)
            .after_connect(move |connection, _| {
                Box::pin(async move {
                    let settings = match backend {
                        Backend::Sqlite => {
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                             PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;"
                        }
                        // A server or role set to `synchronous_commit = off` would let a
                        // commit return before it is on disk.
                        Backend::Postgres => "SET synchronous_commit = on",
                    };
                    connection.execute(settings).await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Store { pool, backend })
    }

    /// Takes the lock that keeps a second bridge process off this database, or fails
    /// with [`StoreError::InUse`].
    pub async fn lock_instance(&self, url: &str) -> Result<InstanceLock, StoreError> {
        match self.backend {
            Backend::Sqlite => {
                let path = sqlite_path(url);
                let lock_path = format!("{path}.lock");
                let file = std::fs::File::options()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&lock_path)
                    .map_err(|e| StoreError::Corrupt(format!("cannot open {lock_path}: {e}")))?;
                match file.try_lock() {
                    Ok(()) => Ok(InstanceLock::File(file)),
                    Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::InUse(lock_path)),
                    Err(std::fs::TryLockError::Error(e)) => {
                        Err(StoreError::Corrupt(format!("cannot lock {lock_path}: {e}")))
                    }
                }
            }
            Backend::Postgres => {
                let mut connection = self.pool.acquire().await?.detach();
                let row = sqlx::query("SELECT pg_try_advisory_lock($1) AS locked")
                    .bind(ADVISORY_LOCK_KEY)
                    .fetch_one(&mut connection)
                    .await?;
                if sqlx::Row::try_get::<bool, _>(&row, "locked")? {
                    Ok(InstanceLock::Postgres(connection))
                } else {
                    Err(StoreError::InUse("PostgreSQL advisory lock".into()))
                }
            }
        }
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool, for the store's own modules.
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Whether the database answers: the readiness check.
    pub async fn is_reachable(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The file path in an SQLite URL (`sqlite://PATH?options` or `sqlite:PATH`).
fn sqlite_path(url: &str) -> &str {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    rest.split('?').next().unwrap_or(rest)
}

/// The longest error text stored.
const MAX_ERROR_LEN: usize = 2000;

/// A string as an indexed text column can hold it. PostgreSQL refuses NUL in text (SQLite
/// takes it), and an id or type with one, from a malformed event or a path, would
/// otherwise fail its whole batch again at every retry; the raw JSON keeps the original.
pub(crate) fn column_text(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{fffd}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// An error reason as stored: column-safe and bounded.
pub(crate) fn error_text(reason: &str) -> String {
    let mut text = column_text(reason).into_owned();
    if text.len() > MAX_ERROR_LEN {
        let mut end = MAX_ERROR_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Splits `items` into chunks whose lengths come from a few fixed sizes. A multi-row
/// statement's SQL depends on its row count, and each distinct text is prepared anew:
/// with fixed sizes the few statements stay in the prepared-statement cache. The sizes
/// stay small because binding `$N` parameters on SQLite looks each name up by a linear
/// scan, so a statement's binding cost grows with the square of its parameter count.
pub(crate) fn fixed_size_chunks<T>(mut items: &[T]) -> Vec<&[T]> {
    const SIZES: [usize; 3] = [32, 8, 1];
    let mut chunks = Vec::new();
    for size in SIZES {
        while items.len() >= size {
            let (chunk, rest) = items.split_at(size);
            chunks.push(chunk);
            items = rest;
        }
    }
    chunks
}

/// `($1, $2, ...), ($n+1, ...)`: the VALUES list of a multi-row insert of `rows` rows of
/// `columns` bound parameters each.
pub(crate) fn values_placeholders(rows: usize, columns: usize) -> String {
    let mut text = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        if row > 0 {
            text.push_str(", ");
        }
        text.push('(');
        for column in 0..columns {
            if column > 0 {
                text.push_str(", ");
            }
            text.push('$');
            text.push_str(&(row * columns + column + 1).to_string());
        }
        text.push(')');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::values_placeholders;

    #[test]
    fn chunks_cover_everything_in_order_with_few_sizes() {
        let items: Vec<usize> = (0..1000).collect();
        let chunks = super::fixed_size_chunks(&items);
        let flat: Vec<usize> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        assert_eq!(flat, items);
        assert!(chunks.iter().all(|c| [32, 8, 1].contains(&c.len())));
        assert!(super::fixed_size_chunks::<u8>(&[]).is_empty());
    }

    #[test]
    fn placeholders_number_every_parameter_once() {
        assert_eq!(values_placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
    }
}
