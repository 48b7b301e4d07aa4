//! `seconds=N` on `/debug/pprof/heap`, `/allocs`, `/goroutine` and `/mutex`: Go's delta
//! profiles (`serveDeltaProfile`). The profile is taken twice, N seconds apart, and the
//! answer is the difference, pprof only. N is a positive whole number no larger than the
//! server's `profile_max_seconds`; a second delta request for the same profile while one
//! runs gets `409` with the time left, as a second CPU profile does.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{Response, StatusCode};

use super::reply::{Body, Query, error};
use super::reply::BadRequest;

/// The delta's length asked for in `q`, or `None` for none. `debug` is whether the request
/// asked for text (`debug` other than 0), which a delta cannot be.
pub(crate) fn seconds(q: &Query, max: u64, debug: bool) -> Result<Option<u64>, BadRequest> {
    let Some(raw) = q.get("seconds") else {
        return Ok(None);
    };
    let n: i64 = raw
        .trim()
        .parse()
        .map_err(|_| BadRequest::from(format!("invalid seconds={raw:?}: must be a positive whole number")))?;
    if n <= 0 {
        return Err(BadRequest::from(format!("invalid seconds={n}: must be a positive whole number")));
    }
    if n as u64 > max {
        return Err(BadRequest::from(format!(
            "seconds={n} is above this server's maximum of {max} (Builder::profile_max_seconds)"
        )));
    }
    if debug {
        return Err("seconds and debug are incompatible: a delta profile is pprof only".into());
    }
    Ok(Some(n as u64))
}

/// Running deltas by profile: when each started and how long it was asked to run.
static RUNNING: Mutex<Option<HashMap<&'static str, (Instant, Duration)>>> = Mutex::new(None);

/// A running delta of one profile; dropping it (however the request ends) frees the slot.
#[derive(Debug)]
pub(crate) struct Claim(&'static str);

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(m) = RUNNING.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            m.remove(self.0);
        }
    }
}

/// Another delta of the same profile is running: the `409` to answer.
#[derive(Debug)]
pub(crate) struct Busy(String);

impl Busy {
    pub(crate) fn response(&self) -> Response<Body> {
        error(StatusCode::CONFLICT, &self.0)
    }
}

/// Claims the delta slot of `profile` for `seconds`, or says how long the running one has
/// left.
pub(crate) fn claim(profile: &'static str, seconds: u64) -> Result<Claim, Busy> {
    let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
    let m = running.get_or_insert_with(HashMap::new);
    if let Some((since, length)) = m.get(profile) {
        let ran = since.elapsed();
        return Err(Busy(format!(
            "a {profile} delta profile is already running (started {:.1}s ago, {:.1}s left); one runs at a time",
            ran.as_secs_f64(),
            length.saturating_sub(ran).as_secs_f64()
        )));
    }
    m.insert(profile, (Instant::now(), Duration::from_secs(seconds)));
    Ok(Claim(profile))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Query {
        Query::from_pairs(pairs)
    }

    #[test]
    fn seconds_follow_go_and_bad_ones_say_why() {
        assert_eq!(seconds(&q(&[]), 60, false), Ok(None));
        assert_eq!(seconds(&q(&[("seconds", "3")]), 60, false), Ok(Some(3)));
        for (pairs, debug, says) in [
            (&[("seconds", "0")][..], false, "positive"),
            (&[("seconds", "-2")][..], false, "positive"),
            (&[("seconds", "abc")][..], false, "positive"),
            (&[("seconds", "61")][..], false, "maximum of 60"),
            (&[("seconds", "2")][..], true, "incompatible"),
        ] {
            let e = seconds(&q(pairs), 60, debug).err().unwrap_or_default();
            assert!(e.contains(says), "{pairs:?}: {e:?}");
            assert!(!e.contains('\n'), "one line: {e:?}");
        }
    }

    #[test]
    fn one_delta_per_profile_at_a_time() {
        let a = claim("test-a", 5).unwrap();
        let busy = claim("test-a", 5).unwrap_err();
        assert_eq!(busy.response().status(), StatusCode::CONFLICT);
        assert!(busy.0.contains("s left"), "{}", busy.0);
        let other = claim("test-b", 5).expect("another profile's delta may run alongside");
        drop(a);
        let again = claim("test-a", 5).expect("the slot is free once the first ends");
        drop((again, other));
    }
}
