//! Configuration of the `ingest` service, read from `INGEST_*` environment variables.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use perfkit::queue::Policy;

/// Environment variable holding the HTTP listen address.
pub const ENV_ADDR: &str = "INGEST_ADDR";
/// Environment variable holding the SQLite database file.
pub const ENV_DB: &str = "INGEST_DB";
/// Listen address used when [`ENV_ADDR`] is unset.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";
/// Environment variable holding the event queue's bound.
pub const ENV_QUEUE_CAPACITY: &str = "INGEST_QUEUE_CAPACITY";
/// Environment variable holding the event queue's overflow policy.
pub const ENV_QUEUE_POLICY: &str = "INGEST_QUEUE_POLICY";
/// Environment variable holding the batcher's flush interval, in milliseconds.
pub const ENV_FLUSH_INTERVAL_MS: &str = "INGEST_FLUSH_INTERVAL_MS";
/// Environment variable holding the batcher's largest batch, in events.
pub const ENV_MAX_BATCH: &str = "INGEST_MAX_BATCH";
/// Environment variable holding an artificial delay added to every flush, in milliseconds.
pub const ENV_FLUSH_DELAY_MS: &str = "INGEST_FLUSH_DELAY_MS";
/// Environment variable: the flush delay applies only from this many seconds after start.
pub const ENV_SLOW_AFTER_S: &str = "INGEST_SLOW_AFTER_S";
/// Environment variable that, set to `1`, leaks one tracked task per request.
pub const ENV_LEAK_TASKS: &str = "INGEST_LEAK_TASKS";
/// Environment variable: workers of the `progress` pool.
pub const ENV_WORKERS: &str = "INGEST_WORKERS";
/// Environment variable: CPU work added to every event's processing, in microseconds.
pub const ENV_WORK_DELAY_US: &str = "INGEST_WORK_DELAY_US";
/// Environment variable: longest wait for room in the `events` queue per request, in ms.
pub const ENV_ENQUEUE_TIMEOUT_MS: &str = "INGEST_ENQUEUE_TIMEOUT_MS";
/// Environment variable: longest time from SIGTERM to the process's exit, in milliseconds.
pub const ENV_SHUTDOWN_TIMEOUT_MS: &str = "INGEST_SHUTDOWN_TIMEOUT_MS";
/// Environment variable: most API connections open at once.
pub const ENV_MAX_CONNECTIONS: &str = "INGEST_MAX_CONNECTIONS";
/// Environment variable: longest wait for a request's head (and on an idle connection), in ms.
pub const ENV_HEADER_TIMEOUT_MS: &str = "INGEST_HEADER_TIMEOUT_MS";
/// Environment variable: longest time a request may take to be answered, in milliseconds.
pub const ENV_REQUEST_TIMEOUT_MS: &str = "INGEST_REQUEST_TIMEOUT_MS";
/// Environment variable: connections in the database pool.
pub const ENV_DB_POOL: &str = "INGEST_DB_POOL";
/// Environment variable: longest wait for a connection from the pool, in milliseconds.
pub const ENV_DB_TIMEOUT_MS: &str = "INGEST_DB_TIMEOUT_MS";
/// Environment variable: artificial latency of every read query, holding its connection.
pub const ENV_QUERY_DELAY_MS: &str = "INGEST_QUERY_DELAY_MS";
/// Environment variable: a PostgreSQL URL (`postgres://...`) to use instead of SQLite.
pub const ENV_DATABASE_URL: &str = "INGEST_DATABASE_URL";
/// Environment variable: CPU work done while holding the `progress` lock, in microseconds.
pub const ENV_LOCK_HOLD_US: &str = "INGEST_LOCK_HOLD_US";

/// The accepted range of every numeric variable: `(variable, least, most)`. Nothing is
/// allocated in proportion to a number outside it.
pub const RANGES: &[(&str, u64, u64)] = &[
    (ENV_QUEUE_CAPACITY, 1, 10_000_000),
    (ENV_FLUSH_INTERVAL_MS, 1, 3_600_000),
    (ENV_MAX_BATCH, 1, 100_000),
    (ENV_FLUSH_DELAY_MS, 0, 3_600_000),
    (ENV_SLOW_AFTER_S, 0, 86_400),
    (ENV_WORKERS, 1, 1024),
    (ENV_WORK_DELAY_US, 0, 10_000_000),
    (ENV_ENQUEUE_TIMEOUT_MS, 1, 600_000),
    (ENV_SHUTDOWN_TIMEOUT_MS, 100, 3_600_000),
    (ENV_MAX_CONNECTIONS, 1, 65_536),
    (ENV_HEADER_TIMEOUT_MS, 100, 600_000),
    (ENV_REQUEST_TIMEOUT_MS, 100, 600_000),
    (ENV_DB_POOL, 1, 1_000),
    (ENV_DB_TIMEOUT_MS, 1, 600_000),
    (ENV_QUERY_DELAY_MS, 0, 600_000),
    (ENV_LOCK_HOLD_US, 0, 10_000_000),
];

/// Where the service keeps its database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbLocation {
    /// A fresh temporary SQLite file, deleted when the service exits.
    Temp,
    /// An SQLite file at this path, created if missing and kept afterwards.
    Path(PathBuf),
    /// A PostgreSQL database (`INGEST_DATABASE_URL`); its tables are created if missing.
    Postgres(String),
}

impl fmt::Display for DbLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Temp => f.write_str("<temporary file>"),
            Self::Path(path) => write!(f, "{}", path.display()),
            // The URL may hold a password: show only where it points.
            Self::Postgres(url) => {
                let host = url.rsplit_once('@').map_or(url.as_str(), |(_, h)| h);
                let host = host.strip_prefix("postgres://").unwrap_or(host);
                let host = host.strip_prefix("postgresql://").unwrap_or(host);
                write!(f, "postgres://…@{host}")
            }
        }
    }
}

/// The service's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Address the HTTP API listens on (`INGEST_ADDR`, default `127.0.0.1:8080`).
    pub addr: SocketAddr,
    /// SQLite database (`INGEST_DB`, default: a fresh temporary file).
    pub db: DbLocation,
    /// Bound of the `events` queue (`INGEST_QUEUE_CAPACITY`, default 10 000: ten seconds of
    /// the gate's default load).
    pub queue_capacity: usize,
    /// What a full `events` queue does (`INGEST_QUEUE_POLICY`: `block` (default), `reject`,
    /// `drop_oldest`, `drop_newest`).
    pub queue_policy: Policy,
    /// Flush at the latest this long after a batch's first event (`INGEST_FLUSH_INTERVAL_MS`,
    /// default 1000).
    pub flush_interval: Duration,
    /// Largest batch written in one transaction (`INGEST_MAX_BATCH`, default 500).
    pub max_batch: usize,
    /// Artificial latency added to every flush, a slow database (`INGEST_FLUSH_DELAY_MS`,
    /// default 0).
    pub flush_delay: Duration,
    /// The flush delay starts this long after the service started (`INGEST_SLOW_AFTER_S`,
    /// default 0): a database that turns slow late in a run.
    pub slow_after: Duration,
    /// Workers of the `progress` pool that processes every event (`INGEST_WORKERS`,
    /// default 4).
    pub workers: usize,
    /// Busy CPU work added to every event's processing on the pool, a slow worker
    /// (`INGEST_WORK_DELAY_US`, default 0).
    pub work_delay: Duration,
    /// Debug switch: leak one tracked task per request (`INGEST_LEAK_TASKS=1`), so a load
    /// test can prove its task-growth gate fails.
    pub leak_tasks: bool,
    /// Under the `block` policy, how long one `POST /events` may wait for room in the
    /// `events` queue, over all its events (`INGEST_ENQUEUE_TIMEOUT_MS`, default 1000); then
    /// it is answered (503 when none of its events got in).
    pub enqueue_timeout: Duration,
    /// From SIGTERM to the process's exit at most (`INGEST_SHUTDOWN_TIMEOUT_MS`, default
    /// 20 000): what can be written by then is, the rest is counted as dropped.
    pub shutdown_timeout: Duration,
    /// API connections open at once (`INGEST_MAX_CONNECTIONS`, default 1024); more wait in
    /// the listen backlog.
    pub max_connections: usize,
    /// A request head must arrive within this after the connection opens or its previous
    /// answer, so half-sent and idle connections are closed (`INGEST_HEADER_TIMEOUT_MS`,
    /// default 10 000).
    pub header_timeout: Duration,
    /// A request not answered within this gets a 503 (`INGEST_REQUEST_TIMEOUT_MS`, default
    /// 10 000).
    pub request_timeout: Duration,
    /// Connections in the database pool shared by reads and the batcher's writes
    /// (`INGEST_DB_POOL`, default 50), opened as needed.
    pub db_pool: usize,
    /// Longest wait for a connection from the pool (`INGEST_DB_TIMEOUT_MS`, default 5000);
    /// then the read answers 503 and the flush fails (and is retried).
    pub db_timeout: Duration,
    /// Artificial latency of every read query (`GET /v1/progress`), spent holding its
    /// connection: a slow query (`INGEST_QUERY_DELAY_MS`, default 0).
    pub query_delay: Duration,
    /// Busy CPU work done while holding the `progress` lock in every event's processing:
    /// a critical section that grew (`INGEST_LOCK_HOLD_US`, default 0).
    pub lock_hold: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: DEFAULT_ADDR
                .parse()
                .expect("DEFAULT_ADDR is a valid socket address"),
            db: DbLocation::Temp,
            queue_capacity: 10_000,
            queue_policy: Policy::Block,
            flush_interval: Duration::from_millis(1000),
            max_batch: 500,
            flush_delay: Duration::ZERO,
            slow_after: Duration::ZERO,
            workers: 4,
            work_delay: Duration::ZERO,
            leak_tasks: false,
            enqueue_timeout: Duration::from_millis(1000),
            shutdown_timeout: Duration::from_millis(20_000),
            max_connections: 1024,
            header_timeout: Duration::from_millis(10_000),
            request_timeout: Duration::from_millis(10_000),
            db_pool: 50,
            db_timeout: Duration::from_millis(5000),
            query_delay: Duration::ZERO,
            lock_hold: Duration::ZERO,
        }
    }
}

/// A configuration variable holds a value the service cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {var}={value:?}: {reason}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub var: &'static str,
    /// The value it held (lossily decoded if it was not UTF-8).
    pub value: String,
    /// Why the value was refused.
    pub reason: String,
}

impl Config {
    /// Reads the configuration from the process environment.
    ///
    /// An unset or empty variable takes its default.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|var| match std::env::var(var) {
            Ok(value) => Ok(Some(value)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(raw)) => Err(ConfigError {
                var,
                value: raw.to_string_lossy().into_owned(),
                reason: "not valid UTF-8".to_owned(),
            }),
        })
    }

    /// Reads the configuration through `lookup`, which maps a variable name to its value
    /// (`Ok(None)` when unset). Used by [`Config::from_env`] and by tests.
    pub fn from_lookup<F>(mut lookup: F) -> Result<Self, ConfigError>
    where
        F: FnMut(&'static str) -> Result<Option<String>, ConfigError>,
    {
        let mut config = Self::default();
        if let Some(value) = non_empty(lookup(ENV_ADDR)?) {
            config.addr = value.trim().parse().map_err(|_| ConfigError {
                var: ENV_ADDR,
                value: value.clone(),
                reason: format!("expected IP:PORT, e.g. {DEFAULT_ADDR}"),
            })?;
        }
        if let Some(value) = non_empty(lookup(ENV_DB)?) {
            config.db = DbLocation::Path(PathBuf::from(value));
        }
        if let Some(value) = non_empty(lookup(ENV_DATABASE_URL)?) {
            let url = value.trim();
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(ConfigError {
                    var: ENV_DATABASE_URL,
                    value: value.clone(),
                    reason: "expected a postgres:// or postgresql:// URL".to_owned(),
                });
            }
            config.db = DbLocation::Postgres(url.to_owned());
        }
        if let Some(v) = number(&mut lookup, ENV_DB_POOL)? {
            config.db_pool = v as usize;
        }
        if let Some(v) = number(&mut lookup, ENV_DB_TIMEOUT_MS)? {
            config.db_timeout = Duration::from_millis(v);
        }
        if let Some(v) = number(&mut lookup, ENV_QUERY_DELAY_MS)? {
            config.query_delay = Duration::from_millis(v);
        }
        if let Some(v) = number(&mut lookup, ENV_LOCK_HOLD_US)? {
            config.lock_hold = Duration::from_micros(v);
        }
        if let Some(v) = number(&mut lookup, ENV_QUEUE_CAPACITY)? {
            config.queue_capacity = v as usize;
        }
        if let Some(value) = non_empty(lookup(ENV_QUEUE_POLICY)?) {
            config.queue_policy = Policy::from_str(&value).map_err(|e| ConfigError {
                var: ENV_QUEUE_POLICY,
                value: value.clone(),
                reason: e.to_string(),
            })?;
        }
        if let Some(v) = number(&mut lookup, ENV_FLUSH_INTERVAL_MS)? {
            config.flush_interval = Duration::from_millis(v);
        }
        if let Some(v) = number(&mut lookup, ENV_MAX_BATCH)? {
            config.max_batch = v as usize;
        }
        if let Some(v) = number(&mut lookup, ENV_FLUSH_DELAY_MS)? {
            config.flush_delay = Duration::from_millis(v);
        }
        if let Some(v) = number(&mut lookup, ENV_SLOW_AFTER_S)? {
            config.slow_after = Duration::from_secs(v);
        }
        if let Some(v) = number(&mut lookup, ENV_WORKERS)? {
            config.workers = v as usize;
        }
        if let Some(v) = number(&mut lookup, ENV_WORK_DELAY_US)? {
            config.work_delay = Duration::from_micros(v);
        }
        if let Some(v) = number(&mut lookup, ENV_ENQUEUE_TIMEOUT_MS)? {
            config.enqueue_timeout = Duration::from_millis(v);
        }
        if let Some(v) = number(&mut lookup, ENV_SHUTDOWN_TIMEOUT_MS)? {
            config.shutdown_timeout = Duration::from_millis(v);
        }
        if let Some(v) = number(&mut lookup, ENV_MAX_CONNECTIONS)? {
            config.max_connections = v as usize;
        }
        if let Some(v) = number(&mut lookup, ENV_HEADER_TIMEOUT_MS)? {
            config.header_timeout = Duration::from_millis(v);
        }
        if let Some(v) = number(&mut lookup, ENV_REQUEST_TIMEOUT_MS)? {
            config.request_timeout = Duration::from_millis(v);
        }
        if config.enqueue_timeout >= config.request_timeout {
            return Err(ConfigError {
                var: ENV_ENQUEUE_TIMEOUT_MS,
                value: config.enqueue_timeout.as_millis().to_string(),
                reason: format!(
                    "must be below {ENV_REQUEST_TIMEOUT_MS} ({} ms), or a request could time out after some of its events were accepted",
                    config.request_timeout.as_millis()
                ),
            });
        }
        if let Some(value) = non_empty(lookup(ENV_LEAK_TASKS)?) {
            config.leak_tasks = match value.trim() {
                "1" | "true" => true,
                "0" | "false" => false,
                _ => {
                    return Err(ConfigError {
                        var: ENV_LEAK_TASKS,
                        value,
                        reason: "expected 1 or 0".to_owned(),
                    });
                }
            };
        }
        Ok(config)
    }
}

/// Reads a whole number within the variable's range in [`RANGES`].
fn number<F>(lookup: &mut F, var: &'static str) -> Result<Option<u64>, ConfigError>
where
    F: FnMut(&'static str) -> Result<Option<String>, ConfigError>,
{
    let Some(value) = non_empty(lookup(var)?) else {
        return Ok(None);
    };
    let (_, min, max) = RANGES
        .iter()
        .copied()
        .find(|(v, _, _)| *v == var)
        .expect("every numeric variable has a range");
    match value.trim().parse::<u64>() {
        Ok(v) if (min..=max).contains(&v) => Ok(Some(v)),
        _ => Err(ConfigError {
            var,
            value,
            reason: format!("expected a whole number from {min} to {max}"),
        }),
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&'static str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<&str, String> = vars.iter().map(|(k, v)| (*k, v.to_string())).collect();
        Config::from_lookup(|var| Ok(map.get(var).cloned()))
    }

    #[test]
    fn defaults() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.db, DbLocation::Temp);
        assert_eq!(parse(&[(ENV_ADDR, ""), (ENV_DB, " ")]).unwrap(), config);
    }

    #[test]
    fn explicit_values() {
        let config = parse(&[(ENV_ADDR, "0.0.0.0:9000"), (ENV_DB, "/tmp/x.db")]).unwrap();
        assert_eq!(config.addr, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(config.db, DbLocation::Path("/tmp/x.db".into()));
    }

    #[test]
    fn database_settings() {
        let d = parse(&[]).unwrap();
        assert_eq!((d.db_pool, d.db_timeout), (50, Duration::from_millis(5000)));
        assert_eq!(
            (d.query_delay, d.lock_hold),
            (Duration::ZERO, Duration::ZERO)
        );
        let c = parse(&[
            (ENV_DB_POOL, "2"),
            (ENV_QUERY_DELAY_MS, "40"),
            (ENV_LOCK_HOLD_US, "300"),
            (
                ENV_DATABASE_URL,
                "postgres://app:secret@127.0.0.1:5433/ingest",
            ),
        ])
        .unwrap();
        assert_eq!(c.db_pool, 2);
        assert_eq!(c.query_delay, Duration::from_millis(40));
        assert_eq!(c.lock_hold, Duration::from_micros(300));
        assert_eq!(
            c.db,
            DbLocation::Postgres("postgres://app:secret@127.0.0.1:5433/ingest".into())
        );
        assert_eq!(
            c.db.to_string(),
            "postgres://…@127.0.0.1:5433/ingest",
            "no password shown"
        );
        let err = parse(&[(ENV_DATABASE_URL, "mysql://x")]).unwrap_err();
        assert_eq!(err.var, ENV_DATABASE_URL);
        assert!(parse(&[(ENV_DB_POOL, "0")]).is_err());
    }

    #[test]
    fn invalid_addr_is_one_clear_line() {
        let err = parse(&[(ENV_ADDR, "localhost")]).unwrap_err();
        assert_eq!(err.var, ENV_ADDR);
        let msg = err.to_string();
        assert!(msg.contains("INGEST_ADDR=\"localhost\""), "{msg}");
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn pipeline_settings() {
        let config = parse(&[
            (ENV_QUEUE_CAPACITY, "64"),
            (ENV_QUEUE_POLICY, "drop_oldest"),
            (ENV_FLUSH_INTERVAL_MS, "250"),
            (ENV_MAX_BATCH, "50"),
            (ENV_FLUSH_DELAY_MS, "20"),
        ])
        .unwrap();
        assert_eq!(config.queue_capacity, 64);
        assert_eq!(config.queue_policy, Policy::DropOldest);
        assert_eq!(config.flush_interval, Duration::from_millis(250));
        assert_eq!(config.max_batch, 50);
        assert_eq!(config.flush_delay, Duration::from_millis(20));
        assert_eq!(
            parse(&[(ENV_SLOW_AFTER_S, "25")]).unwrap().slow_after,
            Duration::from_secs(25)
        );
        let defaults = parse(&[]).unwrap();
        assert_eq!((defaults.queue_capacity, defaults.max_batch), (10_000, 500));
        assert_eq!(defaults.queue_policy, Policy::Block);
        assert!(!defaults.leak_tasks);
        assert!(parse(&[(ENV_LEAK_TASKS, "1")]).unwrap().leak_tasks);
        assert!(parse(&[(ENV_LEAK_TASKS, "yes")]).is_err());
        assert_eq!(defaults.workers, 4);
        assert_eq!(parse(&[(ENV_WORKERS, "8")]).unwrap().workers, 8);
        assert!(parse(&[(ENV_WORKERS, "0")]).is_err());
        assert_eq!(
            parse(&[(ENV_WORK_DELAY_US, "250")]).unwrap().work_delay,
            Duration::from_micros(250)
        );
    }

    #[test]
    fn bad_pipeline_settings_are_clear_errors() {
        let err = parse(&[(ENV_QUEUE_CAPACITY, "0")]).unwrap_err();
        assert_eq!(err.var, ENV_QUEUE_CAPACITY);
        assert!(
            err.to_string().contains("expected a whole number from 1"),
            "{err}"
        );
        let err = parse(&[(ENV_QUEUE_POLICY, "fifo")]).unwrap_err();
        assert!(
            err.to_string()
                .contains("expected block, reject, drop_oldest or drop_newest"),
            "{err}"
        );
        assert!(parse(&[(ENV_FLUSH_DELAY_MS, "0")]).is_ok());
        assert!(parse(&[(ENV_MAX_BATCH, "-3")]).is_err());
    }

    #[test]
    fn every_number_is_checked_against_its_range() {
        // The enqueue timeout must stay below the request timeout, whatever the range allows.
        let room = [(ENV_REQUEST_TIMEOUT_MS, "600000")];
        for &(var, min, max) in RANGES {
            let ok = |v: u64| {
                let v = v.to_string();
                let mut vars = vec![(var, v.as_str())];
                if var != ENV_REQUEST_TIMEOUT_MS {
                    vars.extend(room);
                } else {
                    vars.push((ENV_ENQUEUE_TIMEOUT_MS, "1"));
                }
                parse(&vars)
            };
            assert!(ok(min).is_ok(), "{var}={min}: {:?}", ok(min));
            if var != ENV_ENQUEUE_TIMEOUT_MS {
                assert!(ok(max).is_ok(), "{var}={max}: {:?}", ok(max));
            }
            for bad in [max + 1, u64::MAX] {
                let err = parse(&[(var, &bad.to_string())]).unwrap_err();
                assert_eq!(err.var, var);
                assert_eq!(
                    err.to_string(),
                    format!("invalid {var}=\"{bad}\": expected a whole number from {min} to {max}")
                );
            }
            if min > 0 {
                assert!(parse(&[(var, &(min - 1).to_string())]).is_err(), "{var}");
            }
        }
        let d = parse(&[]).unwrap();
        assert_eq!(d.enqueue_timeout, Duration::from_millis(1000));
        assert_eq!(d.shutdown_timeout, Duration::from_millis(20_000));
        assert_eq!(
            parse(&[(ENV_WORKERS, "4294967295")]).unwrap_err().reason,
            "expected a whole number from 1 to 1024"
        );
        let err = parse(&[(ENV_ENQUEUE_TIMEOUT_MS, "10000")]).unwrap_err();
        assert_eq!(err.var, ENV_ENQUEUE_TIMEOUT_MS);
        assert!(
            err.reason
                .starts_with("must be below INGEST_REQUEST_TIMEOUT_MS (10000 ms)"),
            "{err}"
        );
    }
}
