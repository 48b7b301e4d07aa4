//! Persistence: per-user stat totals and the count of events applied, in SQLite (the
//! embedded default) or PostgreSQL (`INGEST_DATABASE_URL`).
//!
//! Both sit behind a `deadpool` pool of `INGEST_DB_POOL` connections, named `db` with
//! [`perfkit::resource::Resource`]: reads from `GET /v1/progress` and the batcher's writes
//! share it, so `/metrics` and the k6 gate see how many connections are in use, how long
//! callers wait for one, and whether a wait timed out (`INGEST_DB_TIMEOUT_MS`). SQLite calls
//! run on tokio's blocking pool ([`tokio::task::spawn_blocking`]) so the async runtime never
//! waits on SQLite; PostgreSQL writes run in a task of their own.
//!
//! A write can be given up on at a shutdown deadline while it runs (its future dropped):
//! [`Store::apply`] commits only if its [`Write`] was not abandoned first, so an abandoned
//! write either did not happen or is known to have happened.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool::managed::{self, Metrics, RecycleResult};
use perfkit::resource::{Lease, Resource};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, TransactionBehavior, params};
use tempfile::NamedTempFile;

use crate::config::DbLocation;
use crate::event::Event;
use crate::telemetry;

/// The `resource` label of the database pool.
pub const DB_RESOURCE: &str = "db";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS progress (
    user_id TEXT NOT NULL,
    stat    TEXT NOT NULL,
    value   INTEGER NOT NULL,
    PRIMARY KEY (user_id, stat)
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('events_applied', 0);
";

const UPSERT: &str = "INSERT INTO progress (user_id, stat, value) VALUES (?1, ?2, ?3)
    ON CONFLICT (user_id, stat) DO UPDATE SET value = value + excluded.value";
const COUNT_APPLIED: &str = "UPDATE meta SET value = value + ?1 WHERE key = 'events_applied'";
const READ_APPLIED: &str = "SELECT value FROM meta WHERE key = 'events_applied'";
const READ_PROGRESS: &str = "SELECT stat, value FROM progress WHERE user_id = ?1";

/// A database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The default temporary database file could not be created.
    #[error("cannot create a temporary database file: {0}")]
    TempFile(io::Error),
    /// The database could not be opened or set up.
    #[error("cannot open database {}: {source}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite reported.
        source: rusqlite::Error,
    },
    /// SQLite refused to switch the database to WAL mode.
    #[error("database {} refused journal_mode=WAL (it stays in {mode} mode)", path.display())]
    NoWal {
        /// The database file.
        path: PathBuf,
        /// The journal mode SQLite reported.
        mode: String,
    },
    /// A query or transaction failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A PostgreSQL query, transaction or connection failed.
    #[error("database error: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// The PostgreSQL URL is not one `tokio-postgres` can use.
    #[error("invalid PostgreSQL URL: {0}")]
    BadUrl(String),
    /// No connection came from the pool within `INGEST_DB_TIMEOUT_MS`.
    #[error("no database connection within {0:?} (all {1} in use)")]
    PoolTimeout(Duration, usize),
    /// The pool could not make a connection.
    #[error("cannot get a database connection: {0}")]
    Pool(String),
    /// The blocking task running the operation panicked or was cancelled.
    #[error("database task failed: {0}")]
    Task(String),
    /// The write was abandoned before it committed; nothing was written.
    #[error("the write was abandoned before it committed")]
    Abandoned,
}

/// How the store's connection pool is set up.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Connections at most (`INGEST_DB_POOL`), opened as needed.
    pub size: usize,
    /// Longest wait for a connection (`INGEST_DB_TIMEOUT_MS`).
    pub timeout: Duration,
    /// Latency added to every read query while it holds its connection
    /// (`INGEST_QUERY_DELAY_MS`).
    pub query_delay: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            size: 50,
            timeout: Duration::from_millis(5000),
            query_delay: Duration::ZERO,
        }
    }
}

/// Handle to the service's database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    // Field order is drop order: close the connections before deleting a temporary file.
    backend: Backend,
    db: Resource,
    options: PoolOptions,
    /// What the database is, for logs: a file path, or a PostgreSQL URL without password.
    location: String,
    path: Option<PathBuf>,
    _temp: Option<NamedTempFile>,
    /// Events committed through this handle (all clones), since it was opened.
    applied: AtomicU64,
    /// Events of writes that committed although they were abandoned.
    applied_after_abandon: AtomicU64,
}

#[derive(Debug)]
enum Backend {
    Sqlite(managed::Pool<SqliteManager>),
    Postgres(deadpool_postgres::Pool),
}

/// Opens SQLite connections for the pool, each set up as [`open_connection`] does.
#[derive(Debug)]
struct SqliteManager {
    path: PathBuf,
}

impl managed::Manager for SqliteManager {
    type Type = Connection;
    type Error = StoreError;

    async fn create(&self) -> Result<Connection, StoreError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            open_connection(&path)
                .map(|(conn, _)| conn)
                .map_err(|source| StoreError::Open { path, source })
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    async fn recycle(&self, _: &mut Connection, _: &Metrics) -> RecycleResult<StoreError> {
        Ok(())
    }
}

/// One write's fate, shared by the write and whoever may abandon it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    Pending,
    Committed,
    Abandoned,
}

/// A write in flight ([`Store::apply`]). Dropping it before the write returns abandons it:
/// if the transaction has not committed yet, it will roll back instead.
#[derive(Debug)]
pub struct Write {
    fate: Arc<Mutex<Fate>>,
    store: Arc<Inner>,
    events: u64,
    /// The write returned: nothing to give up on.
    returned: bool,
}

impl Drop for Write {
    fn drop(&mut self) {
        if self.returned {
            return;
        }
        let (store, events) = (Arc::clone(&self.store), self.events);
        let mut fate = self.fate.lock().unwrap_or_else(|p| p.into_inner());
        match *fate {
            Fate::Pending => *fate = Fate::Abandoned,
            // Committed while it was being given up on: the caller counts these events as
            // lost, so say they were applied after all.
            Fate::Committed => {
                store
                    .applied_after_abandon
                    .fetch_add(events, Ordering::Relaxed);
            }
            Fate::Abandoned => {}
        }
    }
}

impl Store {
    /// Opens the database with the default pool settings: see [`Store::open_with`].
    pub async fn open(location: &DbLocation) -> Result<Self, StoreError> {
        Self::open_with(location, PoolOptions::default()).await
    }

    /// Opens (creating if needed) the database and its connection pool. SQLite is switched
    /// to WAL mode with `synchronous=NORMAL`; the tables are created if missing (in
    /// PostgreSQL too). Fails if the database cannot be reached now.
    pub async fn open_with(
        location: &DbLocation,
        options: PoolOptions,
    ) -> Result<Self, StoreError> {
        let timeouts = managed::Timeouts {
            wait: Some(options.timeout),
            create: Some(options.timeout.max(Duration::from_secs(5))),
            recycle: None,
        };
        let (backend, path, temp) = match location {
            DbLocation::Postgres(url) => {
                let config: tokio_postgres::Config = url
                    .parse()
                    .map_err(|e: tokio_postgres::Error| StoreError::BadUrl(e.to_string()))?;
                let manager = deadpool_postgres::Manager::from_config(
                    config,
                    tokio_postgres::NoTls,
                    deadpool_postgres::ManagerConfig {
                        recycling_method: deadpool_postgres::RecyclingMethod::Fast,
                    },
                );
                let pool = deadpool_postgres::Pool::builder(manager)
                    .max_size(options.size)
                    .timeouts(timeouts)
                    .runtime(deadpool::Runtime::Tokio1)
                    .build()
                    .map_err(|e| StoreError::Pool(e.to_string()))?;
                let client = pool.get().await.map_err(pool_error(&options))?;
                client.batch_execute(crate::pg::SCHEMA).await?;
                drop(client);
                (Backend::Postgres(pool), None, None)
            }
            DbLocation::Temp | DbLocation::Path(_) => {
                let (path, temp) = match location {
                    DbLocation::Path(path) => (path.clone(), None),
                    _ => {
                        let file = tempfile::Builder::new()
                            .prefix("ingest-")
                            .suffix(".db")
                            .tempfile()
                            .map_err(StoreError::TempFile)?;
                        (file.path().to_path_buf(), Some(file))
                    }
                };
                // One connection now, to create the tables and refuse a database that
                // cannot be in WAL mode; the pool opens its own as needed.
                let check = path.clone();
                let (conn, mode) = tokio::task::spawn_blocking(move || open_connection(&check))
                    .await
                    .map_err(|e| StoreError::Task(e.to_string()))?
                    .map_err(|source| StoreError::Open {
                        path: path.clone(),
                        source,
                    })?;
                drop(conn);
                if !mode.eq_ignore_ascii_case("wal") {
                    return Err(StoreError::NoWal { path, mode });
                }
                let pool = managed::Pool::builder(SqliteManager { path: path.clone() })
                    .max_size(options.size)
                    .timeouts(timeouts)
                    .runtime(deadpool::Runtime::Tokio1)
                    .build()
                    .map_err(|e| StoreError::Pool(e.to_string()))?;
                (Backend::Sqlite(pool), Some(path), temp)
            }
        };
        let db = match &backend {
            Backend::Sqlite(pool) => Resource::deadpool(DB_RESOURCE, pool),
            Backend::Postgres(pool) => Resource::deadpool(DB_RESOURCE, pool),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                backend,
                db,
                options,
                location: match &path {
                    Some(p) => p.display().to_string(),
                    None => location.to_string(),
                },
                path,
                _temp: temp,
                applied: AtomicU64::new(0),
                applied_after_abandon: AtomicU64::new(0),
            }),
        })
    }

    /// Events committed through this store handle since it was opened (counted in memory,
    /// so reading it never waits on the database).
    pub fn applied(&self) -> u64 {
        self.inner.applied.load(Ordering::Relaxed)
    }

    /// Events of writes that were abandoned (their future dropped) just as they committed:
    /// whoever counted them as lost should count them as applied.
    pub fn applied_after_abandon(&self) -> u64 {
        self.inner.applied_after_abandon.load(Ordering::Relaxed)
    }

    /// The SQLite file's path (`None` for PostgreSQL).
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// Where the data lives, for logs: the SQLite file, or the PostgreSQL server (no
    /// password).
    pub fn location(&self) -> &str {
        &self.inner.location
    }

    /// The connection pool's perfkit resource (`db`).
    pub fn resource(&self) -> &Resource {
        &self.inner.db
    }

    /// Adds every event's value to its `(user_id, stat)` total and counts the events in
    /// `meta.events_applied`, all in one transaction.
    ///
    /// # Cancel safety
    /// If the future is dropped before the transaction commits, it rolls back: nothing is
    /// written. If it had committed, [`Store::applied_after_abandon`] counts its events.
    pub async fn apply(&self, events: Vec<Event>) -> Result<(), StoreError> {
        let mut write = Write {
            fate: Arc::new(Mutex::new(Fate::Pending)),
            store: Arc::clone(&self.inner),
            events: events.len() as u64,
            returned: false,
        };
        let fate = Arc::clone(&write.fate);
        let inner = Arc::clone(&self.inner);
        let result = match &self.inner.backend {
            Backend::Sqlite(pool) => {
                let mut conn = self.lease(pool).await?;
                self.blocking(move || {
                    let started = Instant::now();
                    let result = apply_in_transaction(&mut conn, &events, &fate, &inner.applied);
                    drop(conn);
                    metrics::histogram!(telemetry::DB_WRITE_SECONDS).record(started.elapsed());
                    result.map_err(StoreError::from)
                })
                .await
            }
            Backend::Postgres(pool) => {
                let client = self.lease(pool).await?;
                // In a task of its own: dropping this future does not cut the transaction
                // off half-way; the fate decides whether it commits.
                tokio::spawn(async move {
                    let started = Instant::now();
                    let result = crate::pg::apply(
                        client,
                        &events,
                        &fate,
                        &inner.applied,
                        &inner.applied_after_abandon,
                    )
                    .await;
                    metrics::histogram!(telemetry::DB_WRITE_SECONDS).record(started.elapsed());
                    result
                })
                .await
                .map_err(|e| StoreError::Task(e.to_string()))?
            }
        };
        write.returned = true;
        match result {
            Ok(true) => Ok(()),
            Ok(false) => Err(StoreError::Abandoned),
            Err(e) => Err(e),
        }
    }

    /// `user_id`'s stat totals, by stat name; empty for an unknown user.
    ///
    /// A total that overflowed `i64` (SQLite then stores it as a float) saturates.
    pub async fn progress(&self, user_id: String) -> Result<BTreeMap<String, i64>, StoreError> {
        let delay = self.inner.options.query_delay;
        match &self.inner.backend {
            Backend::Sqlite(pool) => {
                let conn = self.lease(pool).await?;
                self.blocking(move || {
                    let started = Instant::now();
                    if !delay.is_zero() {
                        std::thread::sleep(delay); // a slow query, holding the connection
                    }
                    let mut stmt = conn.prepare_cached(READ_PROGRESS)?;
                    let rows = stmt.query_map([&user_id], |row| {
                        Ok((row.get::<_, String>(0)?, integer(row.get_ref(1)?, 1)?))
                    })?;
                    let stats = rows.collect::<Result<BTreeMap<_, _>, _>>()?;
                    metrics::histogram!(telemetry::DB_READ_SECONDS).record(started.elapsed());
                    Ok(stats)
                })
                .await
            }
            Backend::Postgres(pool) => {
                let client = self.lease(pool).await?;
                let started = Instant::now();
                let stats = crate::pg::progress(&client, &user_id, delay).await?;
                metrics::histogram!(telemetry::DB_READ_SECONDS).record(started.elapsed());
                Ok(stats)
            }
        }
    }

    /// How many events have been applied to this database, over its whole life.
    pub async fn events_applied(&self) -> Result<u64, StoreError> {
        match &self.inner.backend {
            Backend::Sqlite(pool) => {
                let conn = self.lease(pool).await?;
                self.blocking(move || {
                    let n: i64 =
                        conn.query_row(READ_APPLIED, [], |row| integer(row.get_ref(0)?, 0))?;
                    Ok(u64::try_from(n).unwrap_or(0))
                })
                .await
            }
            Backend::Postgres(pool) => {
                let client = self.lease(pool).await?;
                Ok(crate::pg::events_applied(&client).await?)
            }
        }
    }

    /// A connection from `pool`, through the `db` resource (timed and counted).
    async fn lease<M>(
        &self,
        pool: &managed::Pool<M>,
    ) -> Result<Lease<managed::Object<M>>, StoreError>
    where
        M: managed::Manager,
        M::Error: std::fmt::Display,
    {
        self.inner
            .db
            .acquire(pool.get())
            .await
            .map_err(pool_error(&self.inner.options))
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce() -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

/// A pool error as the store reports it.
fn pool_error<E: std::fmt::Display>(
    options: &PoolOptions,
) -> impl FnOnce(managed::PoolError<E>) -> StoreError + '_ {
    move |e| match e {
        managed::PoolError::Timeout(_) => StoreError::PoolTimeout(options.timeout, options.size),
        other => StoreError::Pool(other.to_string()),
    }
}

fn open_connection(path: &Path) -> Result<(Connection, String), rusqlite::Error> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(SCHEMA)?;
    Ok((conn, mode))
}

/// Writes `events` in one transaction and commits it unless the write was abandoned
/// meanwhile (then it rolls back). Returns whether it committed.
fn apply_in_transaction(
    conn: &mut Connection,
    events: &[Event],
    fate: &Mutex<Fate>,
    applied: &AtomicU64,
) -> Result<bool, rusqlite::Error> {
    if *fate.lock().unwrap_or_else(|p| p.into_inner()) == Fate::Abandoned {
        return Ok(false); // given up on before it started
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut upsert = tx.prepare_cached(UPSERT)?;
        for event in events {
            upsert.execute(params![event.user_id, event.stat, event.value])?;
        }
        let count = i64::try_from(events.len()).unwrap_or(i64::MAX);
        tx.prepare_cached(COUNT_APPLIED)?.execute([count])?;
    }
    // Holding the fate across the commit: an abandon either comes first (roll back) or
    // waits for the commit and then knows it happened.
    let mut fate = fate.lock().unwrap_or_else(|p| p.into_inner());
    if *fate == Fate::Abandoned {
        return Ok(false); // `tx` rolls back when dropped
    }
    tx.commit()?;
    applied.fetch_add(events.len() as u64, Ordering::Relaxed);
    *fate = Fate::Committed;
    Ok(true)
}

fn integer(value: ValueRef<'_>, column: usize) -> Result<i64, rusqlite::Error> {
    match value {
        ValueRef::Integer(n) => Ok(n),
        // SQLite turns an overflowing integer sum into a REAL; `as` saturates.
        ValueRef::Real(f) => Ok(f as i64),
        other => Err(rusqlite::Error::InvalidColumnType(
            column,
            "value".to_owned(),
            other.data_type(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    fn ev(user: &str, stat: &str, value: i64) -> Event {
        Event {
            user_id: user.into(),
            stat: stat.into(),
            value,
        }
    }

    #[tokio::test]
    async fn upserts_and_counts() {
        let store = Store::open(&DbLocation::Temp).await.unwrap();
        let path = store.path().unwrap().to_path_buf();
        assert!(path.exists());
        store
            .apply(vec![
                ev("u1", "kills", 3),
                ev("u1", "kills", 4),
                ev("u1", "deaths", 1),
            ])
            .await
            .unwrap();
        store.apply(vec![ev("u2", "kills", -2)]).await.unwrap();
        let p = store.progress("u1".into()).await.unwrap();
        assert_eq!(p.get("kills"), Some(&7));
        assert_eq!(p.get("deaths"), Some(&1));
        assert!(store.progress("nobody".into()).await.unwrap().is_empty());
        assert_eq!(store.events_applied().await.unwrap(), 4);
        drop(store);
        assert!(!path.exists(), "temporary database removed on drop");
    }

    #[tokio::test]
    async fn an_abandoned_write_writes_nothing() {
        let store = Store::open(&DbLocation::Temp).await.unwrap();
        // Polled once (the blocking write is on its way), then given up on.
        let mut write = Box::pin(store.apply(vec![ev("u", "s", 1), ev("u", "t", 2)]));
        let polled =
            std::future::poll_fn(|cx| std::task::Poll::Ready(write.as_mut().poll(cx))).await;
        assert!(polled.is_pending(), "the write did not finish at once");
        drop(write);
        // Whatever the blocking task was doing, it rolls back or never starts, unless it
        // committed before the drop (a busy machine may finish it first): then the drop says
        // so through applied_after_abandon. Never a write nobody counted.
        store.apply(vec![ev("v", "s", 5)]).await.unwrap();
        let in_db = store.events_applied().await.unwrap();
        assert_eq!(in_db, store.applied(), "every committed event is counted");
        let u = store.progress("u".into()).await.unwrap();
        match in_db {
            1 => {
                assert!(u.is_empty(), "rolled back: {u:?}");
                assert_eq!(store.applied_after_abandon(), 0);
            }
            3 => {
                assert_eq!(u.get("t"), Some(&2), "committed before the abandon");
                assert_eq!(store.applied_after_abandon(), 2, "the drop reports it");
            }
            n => panic!("{n} events: the abandoned write was half applied"),
        }
    }

    #[tokio::test]
    async fn overflow_saturates() {
        let store = Store::open(&DbLocation::Temp).await.unwrap();
        store
            .apply(vec![ev("u", "s", i64::MAX), ev("u", "s", 1)])
            .await
            .unwrap();
        assert_eq!(store.progress("u".into()).await.unwrap()["s"], i64::MAX);
    }

    #[tokio::test]
    async fn persistent_file_keeps_totals() {
        let dir = tempfile::tempdir().unwrap();
        let location = DbLocation::Path(dir.path().join("p.db"));
        let store = Store::open(&location).await.unwrap();
        store.apply(vec![ev("u", "s", 5)]).await.unwrap();
        drop(store);
        let store = Store::open(&location).await.unwrap();
        assert_eq!(store.progress("u".into()).await.unwrap()["s"], 5);
        assert_eq!(store.events_applied().await.unwrap(), 1);
    }
}
