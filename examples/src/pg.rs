//! The PostgreSQL side of the store (`INGEST_DATABASE_URL`): the same tables and the same
//! transaction as SQLite's, through `tokio-postgres`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use perfkit::resource::Lease;

use crate::event::Event;
use crate::store::{Fate, StoreError};

type Client = Lease<deadpool_postgres::Object>;

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS progress (
    user_id TEXT NOT NULL,
    stat    TEXT NOT NULL,
    value   BIGINT NOT NULL,
    PRIMARY KEY (user_id, stat)
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO meta (key, value) VALUES ('events_applied', 0) ON CONFLICT (key) DO NOTHING;
";

/// One statement for the whole batch: the events' values summed per `(user_id, stat)`
/// first (one row may not be updated twice by one `INSERT ... ON CONFLICT`), then added to
/// the totals.
const UPSERT: &str = "INSERT INTO progress (user_id, stat, value)
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[])
    ON CONFLICT (user_id, stat) DO UPDATE SET value = progress.value + excluded.value";
const COUNT_APPLIED: &str = "UPDATE meta SET value = value + $1 WHERE key = 'events_applied'";
const READ_APPLIED: &str = "SELECT value FROM meta WHERE key = 'events_applied'";
const READ_PROGRESS: &str = "SELECT stat, value FROM progress WHERE user_id = $1";

/// Writes `events` in one transaction and commits it unless the write was abandoned
/// before the commit was sent (then it rolls back). Returns whether it committed.
///
/// Unlike SQLite's, this commit cannot hold the fate's lock while it waits for the server,
/// so an abandon can land while the commit is on its way: the abandoning side then counts
/// the events as lost, and this side, seeing the abandon after a commit that succeeded,
/// adds them to `after_abandon`. Each committed event is counted once either way.
pub(crate) async fn apply(
    mut client: Client,
    events: &[Event],
    fate: &Mutex<Fate>,
    applied: &AtomicU64,
    after_abandon: &AtomicU64,
) -> Result<bool, StoreError> {
    let abandoned = || *fate.lock().unwrap_or_else(|p| p.into_inner()) == Fate::Abandoned;
    if abandoned() {
        return Ok(false);
    }
    let mut sums: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for e in events {
        let v = sums.entry((&e.user_id, &e.stat)).or_default();
        *v = v.saturating_add(e.value);
    }
    let (mut users, mut stats, mut values) = (Vec::new(), Vec::new(), Vec::new());
    for ((u, s), v) in sums {
        users.push(u);
        stats.push(s);
        values.push(v);
    }
    let tx = client.transaction().await?;
    tx.execute(UPSERT, &[&users, &stats, &values]).await?;
    let count = i64::try_from(events.len()).unwrap_or(i64::MAX);
    tx.execute(COUNT_APPLIED, &[&count]).await?;
    if abandoned() {
        tx.rollback().await?;
        return Ok(false);
    }
    tx.commit().await?;
    let n = events.len() as u64;
    applied.fetch_add(n, Ordering::Relaxed);
    let mut f = fate.lock().unwrap_or_else(|p| p.into_inner());
    if *f == Fate::Abandoned {
        after_abandon.fetch_add(n, Ordering::Relaxed);
    } else {
        *f = Fate::Committed;
    }
    Ok(true)
}

/// `user_id`'s totals, after `delay` spent in the database on the same connection (a slow
/// query).
pub(crate) async fn progress(
    client: &Client,
    user_id: &str,
    delay: Duration,
) -> Result<BTreeMap<String, i64>, StoreError> {
    if !delay.is_zero() {
        client
            .execute("SELECT pg_sleep($1)", &[&delay.as_secs_f64()])
            .await?;
    }
    let rows = client.query(READ_PROGRESS, &[&user_id]).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

pub(crate) async fn events_applied(client: &Client) -> Result<u64, tokio_postgres::Error> {
    let row = client.query_one(READ_APPLIED, &[]).await?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}
