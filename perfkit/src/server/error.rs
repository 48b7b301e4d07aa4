use std::net::SocketAddr;

/// Why the debug server could not be configured or started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// `PERFKIT_ADDR` (or another address source) is not a socket address.
    #[error("invalid debug server address {value:?}: {reason}")]
    InvalidAddr {
        /// The text that failed to parse.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A non-loopback address was requested without a bearer token.
    #[error("refusing to bind the debug server to non-loopback address {addr} without a token; set PERFKIT_TOKEN or bind to 127.0.0.1")]
    TokenRequired {
        /// The requested address.
        addr: SocketAddr,
    },
    /// The token is empty or contains characters that cannot appear in an HTTP header.
    #[error("invalid debug server token: {reason}")]
    InvalidToken {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A setting is out of range.
    #[error("invalid debug server setting {setting}: {reason}")]
    InvalidSetting {
        /// The builder method or variable at fault.
        setting: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Binding the listening socket failed (address in use, permission, ...).
    #[error("could not bind the debug server to {addr}: {source}")]
    Bind {
        /// The requested address.
        addr: SocketAddr,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Starting the server's thread or runtime failed.
    #[error("could not start the debug server thread: {0}")]
    Spawn(#[source] std::io::Error),
}
