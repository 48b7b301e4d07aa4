//! `/debug/pprof/profile` and `/debug/pprof/profile/last`: CPU profiles as gzipped pprof or
//! SVG flame graphs. Sampling and symbolizing are `crate::profile`'s; this module parses the
//! request, runs one profile at a time and answers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Response, StatusCode};
use tokio::sync::watch;

use super::reply::{Body, Query, State, error};
use crate::profile::cpu::{self as cpu, CpuProfile, CpuProfiler, StartError};
use super::reply::BadRequest;

/// Go's default profile length.
pub(crate) const DEFAULT_SECONDS: u64 = 30;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Pprof,
    Flamegraph,
}

fn format(q: &Query) -> Result<Format, BadRequest> {
    match q.get("format") {
        None | Some("pprof" | "proto") => Ok(Format::Pprof),
        Some("flamegraph" | "svg") => Ok(Format::Flamegraph),
        Some(other) => Err(BadRequest::from(format!("invalid format={other:?}: expected pprof or flamegraph"))),
    }
}

/// Go's rules for `seconds`: absent or ≤ 0 means the default; above the maximum is an error.
fn seconds(q: &Query, max: u64) -> Result<u64, BadRequest> {
    let Some(raw) = q.get("seconds") else {
        return Ok(DEFAULT_SECONDS.min(max));
    };
    let digits = raw.trim().strip_prefix('-').unwrap_or(raw.trim());
    let n: i64 = raw.trim().parse().map_err(|_| {
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            BadRequest::from(format!("seconds={} is out of range: this server's maximum is {max}", raw.trim()))
        } else {
            BadRequest::from(format!("invalid seconds={raw:?}: expected a whole number of seconds"))
        }
    })?;
    if n <= 0 {
        return Ok(DEFAULT_SECONDS.min(max));
    }
    let n = n as u64;
    if n > max {
        return Err(BadRequest::from(format!(
            "seconds={n} is above this server's maximum of {max} (Builder::profile_max_seconds)"
        )));
    }
    Ok(n)
}

/// A profile requested over HTTP that is running: when it started, how long it was asked to
/// run, and where its outcome will be announced to the requests that joined it.
struct Running {
    since: Instant,
    length: Duration,
    outcome: watch::Receiver<Option<Outcome>>,
}

/// How a running profile ended, for the requests that joined it.
#[derive(Clone)]
enum Outcome {
    Done(Arc<CpuProfile>),
    Refused(StatusCode, String),
}

static RUNNING: Mutex<Option<Running>> = Mutex::new(None);

/// Frees the "running" slot however the request ends, including a client that disconnects.
struct RunningSlot;

impl Drop for RunningSlot {
    fn drop(&mut self) {
        *RUNNING.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// `/debug/pprof/profile?seconds=N`. One profile runs at a time. A request that arrives
/// while one (started over HTTP) runs *joins* it: it waits for that profile to end and gets
/// the same profile, in its own `format`, with the header `X-Perfkit-Profile-Joined` giving
/// how far that profile was when the request came (`1.2s of 5s`). So a continuous profiler's
/// periodic scrape and a load test's own profile both get an answer where Go answers the
/// second with an error. A profile started from code ([`crate::profile::CpuProfiler`])
/// cannot be joined: a request then gets `409`.
pub(crate) async fn profile(state: Arc<State>, q: Query) -> Response<Body> {
    let fmt = match format(&q) {
        Ok(f) => f,
        Err(e) => return e.response(),
    };
    let secs = match seconds(&q, state.profile_max_seconds) {
        Ok(s) => s,
        Err(e) => return e.response(),
    };
    let claimed = {
        let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
        match running.as_ref() {
            Some(r) => Err((r.outcome.clone(), r.since.elapsed(), r.length)),
            None => {
                let (tx, rx) = watch::channel(None);
                *running = Some(Running {
                    since: Instant::now(),
                    length: Duration::from_secs(secs),
                    outcome: rx,
                });
                Ok((tx, RunningSlot))
            }
        }
    };
    let (tx, slot) = match claimed {
        Ok(c) => c,
        Err((rx, ran, length)) => return join(rx, ran, length, fmt).await,
    };
    let session = match CpuProfiler::start_sampling(state.profile_frequency, secs) {
        Ok(s) => s,
        Err(e) => {
            let (status, reason) = match e {
                StartError::Busy => (StatusCode::CONFLICT, e.to_string()),
                _ => (StatusCode::SERVICE_UNAVAILABLE, format!("cannot start the CPU profiler: {e}")),
            };
            let _ = tx.send(Some(Outcome::Refused(status, reason.clone())));
            return error(status, &reason);
        }
    };
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let samples = session.stop();
    drop(slot);
    // The samples are taken: symbolizing waits for its turn rather than be refused.
    super::lane::queued("a CPU profile", move || {
        let completed = cpu::finish_kept(samples);
        let _ = tx.send(Some(Outcome::Done(Arc::clone(&completed))));
        render(&completed, fmt)
    })
    .await
}

/// Waits for the running profile a request joined, and answers with it.
async fn join(
    mut rx: watch::Receiver<Option<Outcome>>,
    ran: Duration,
    length: Duration,
    fmt: Format,
) -> Response<Body> {
    let outcome = match rx.wait_for(Option::is_some).await {
        Ok(v) => v.clone(),
        Err(_) => None,
    };
    let mut r = match outcome {
        Some(Outcome::Done(c)) => match fmt {
            Format::Pprof => render(&c, fmt),
            // Drawing waits for its turn, as the profile it joined did.
            Format::Flamegraph => super::lane::queued("a CPU profile flame graph", move || render(&c, fmt)).await,
        },
        Some(Outcome::Refused(status, reason)) => return error(status, &reason),
        None => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the CPU profile this request joined stopped before it ended (its client went away); ask again",
            );
        }
    };
    let joined = format!("{:.1}s of {}s", ran.as_secs_f64(), length.as_secs());
    if let Ok(v) = http::HeaderValue::from_str(&joined) {
        r.headers_mut().insert("x-perfkit-profile-joined", v);
    }
    r
}

pub(crate) async fn last(_: Arc<State>, q: Query) -> Response<Body> {
    let fmt = match format(&q) {
        Ok(f) => f,
        Err(e) => return e.response(),
    };
    let last = cpu::last();
    match (last, fmt) {
        (Some(c), Format::Pprof) => render(&c, fmt),
        (Some(c), Format::Flamegraph) => {
            let key = format!("last flamegraph {}", c.title());
            super::lane::exclusive(key, "a CPU profile flame graph", move || render(&c, fmt)).await
        }
        (None, _) => error(
            StatusCode::NOT_FOUND,
            "no CPU profile has completed yet; request /debug/pprof/profile?seconds=N first",
        ),
    }
}

/// The answer in the format asked for; drawing a flame graph is the expensive part.
fn render(c: &CpuProfile, fmt: Format) -> Response<Body> {
    match fmt {
        Format::Pprof => super::reply::attachment("profile", c.pprof_bytes()),
        Format::Flamegraph => match c.flamegraph() {
            Ok(svg) => super::reply::response(StatusCode::OK, "image/svg+xml", Bytes::from(svg)),
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("drawing the flame graph failed: {e}"),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(raw: &[(&str, &str)]) -> Query {
        Query::from_pairs(raw)
    }

    #[test]
    fn seconds_follow_go() {
        assert_eq!(seconds(&q(&[]), 60), Ok(30));
        assert_eq!(seconds(&q(&[("seconds", "0")]), 60), Ok(30));
        assert_eq!(seconds(&q(&[("seconds", "-5")]), 60), Ok(30));
        assert_eq!(seconds(&q(&[("seconds", "5")]), 60), Ok(5));
        assert_eq!(seconds(&q(&[]), 10), Ok(10));
        assert!(seconds(&q(&[("seconds", "abc")]), 60).unwrap_err().contains("whole number"));
        assert_eq!(
            seconds(&q(&[("seconds", "99999999999999999999")]), 60).unwrap_err(),
            "seconds=99999999999999999999 is out of range: this server's maximum is 60"
        );
        assert!(seconds(&q(&[("seconds", "100000")]), 60).unwrap_err().contains("maximum of 60"));
        assert!(format(&q(&[("format", "png")])).is_err());
    }
}
