//! Configuration of the `ingest` service, read from `INGEST_*` environment variables.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Environment variable holding the HTTP listen address.
pub const ENV_ADDR: &str = "INGEST_ADDR";
/// Environment variable holding the SQLite database file.
pub const ENV_DB: &str = "INGEST_DB";
/// Listen address used when [`ENV_ADDR`] is unset.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";

/// Where the service keeps its SQLite database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbLocation {
    /// A fresh temporary file, deleted when the service exits.
    Temp,
    /// A file at this path, created if missing and kept afterwards.
    Path(PathBuf),
}

impl fmt::Display for DbLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Temp => f.write_str("<temporary file>"),
            Self::Path(path) => write!(f, "{}", path.display()),
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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: DEFAULT_ADDR
                .parse()
                .expect("DEFAULT_ADDR is a valid socket address"),
            db: DbLocation::Temp,
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
        Ok(config)
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
    fn invalid_addr_is_one_clear_line() {
        let err = parse(&[(ENV_ADDR, "localhost")]).unwrap_err();
        assert_eq!(err.var, ENV_ADDR);
        let msg = err.to_string();
        assert!(msg.contains("INGEST_ADDR=\"localhost\""), "{msg}");
        assert!(!msg.contains('\n'));
    }
}
