//! The service's own metrics, recorded through the `metrics` facade.
//!
//! perfkit installs the Prometheus recorder, so these series appear on the debug server's
//! `/metrics` next to perfkit's own.

/// Counter: events accepted by `POST /events` (answered 202).
pub const EVENTS_ACCEPTED_TOTAL: &str = "ingest_events_accepted_total";
/// Counter: `POST /events` requests refused, labelled by `reason`.
pub const REQUESTS_REJECTED_TOTAL: &str = "ingest_requests_rejected_total";
/// Histogram: time spent in one database write transaction, in seconds.
pub const DB_WRITE_SECONDS: &str = "ingest_db_write_seconds";
/// Histogram: time spent reading one user's progress, in seconds.
pub const DB_READ_SECONDS: &str = "ingest_db_read_seconds";

/// Registers descriptions and units for the service's metrics with the installed recorder.
///
/// Call after the recorder is installed (after perfkit has started); descriptions given to
/// the no-op recorder are lost.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!(
        EVENTS_ACCEPTED_TOTAL,
        Unit::Count,
        "Events accepted by POST /events (answered 202)."
    );
    describe_counter!(
        REQUESTS_REJECTED_TOTAL,
        Unit::Count,
        "POST /events requests refused, by reason."
    );
    describe_histogram!(
        DB_WRITE_SECONDS,
        Unit::Seconds,
        "Duration of one SQLite write transaction (all events of one request)."
    );
    describe_histogram!(
        DB_READ_SECONDS,
        Unit::Seconds,
        "Duration of one SQLite progress read."
    );
}
