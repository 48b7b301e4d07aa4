//! `/debug/pprof/mutex`: the contention profile of perfkit's instrumented locks and
//! semaphores, in Go's conventions.
//!
//! * no parameters: the profile since start-up, gzipped pprof with two sample types,
//!   `contentions/count` and `delay/nanoseconds`, the period being the sampling rate;
//! * `debug=1`: the same as text, Go's legacy format (`cycles/second` is 1e9: delays are
//!   nanoseconds);
//! * `seconds=N`: what was recorded during the next N seconds (a delta), pprof only, as
//!   Go's `serveDeltaProfile`: N must be a positive whole number no larger than the
//!   server's `profile_max_seconds`, and `debug` must then be 0.
//!
//! Each stack's innermost frame names the lock: `lock "<name>" (<kind>)`. Below it is the
//! waiting caller's stack — the whole stack when perfkit is built with a profiler
//! (`cpu-profiling` or `heap-profiling`), else the call site of `lock()` / `acquire()`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};

use super::http::{Body, Query, Reply, State, error, text};
use super::profile::Profile;
use crate::sync::{ContentionEntry, ContentionProfile};

/// When a delta profile began, and how long it covers.
type Span = (std::time::SystemTime, Duration);

enum Ask {
    Cumulative { debug: bool },
    Delta(u64),
}

fn parse(q: &Query, max: u64) -> Result<Ask, String> {
    let debug = match q.get("debug").map(str::trim) {
        None | Some("0") | Some("") => false,
        Some("1") => true,
        Some(other) => return Err(format!("invalid debug={other:?}: expected 0 or 1")),
    };
    let Some(raw) = q.get("seconds") else {
        return Ok(Ask::Cumulative { debug });
    };
    let n: i64 = raw
        .trim()
        .parse()
        .map_err(|_| format!("invalid seconds={raw:?}: must be a positive whole number"))?;
    if n <= 0 {
        return Err(format!("invalid seconds={n}: must be a positive whole number"));
    }
    if n as u64 > max {
        return Err(format!(
            "seconds={n} is above this server's maximum of {max} (Builder::profile_max_seconds)"
        ));
    }
    if debug {
        return Err("seconds and debug are incompatible: a delta profile is pprof only".into());
    }
    Ok(Ask::Delta(n as u64))
}

pub(crate) fn serve(state: Arc<State>, q: Query) -> Reply {
    Box::pin(async move {
        let ask = match parse(&q, state.profile_max_seconds) {
            Ok(a) => a,
            Err(reason) => return error(StatusCode::BAD_REQUEST, &reason),
        };
        let (profile, debug, span) = match ask {
            Ask::Cumulative { debug } => (crate::sync::contention_snapshot(), debug, None),
            Ask::Delta(n) => {
                let start = std::time::SystemTime::now();
                let before = crate::sync::contention_snapshot();
                tokio::time::sleep(Duration::from_secs(n)).await;
                let delta = crate::sync::contention_snapshot().since(&before);
                (delta, false, Some((start, Duration::from_secs(n))))
            }
        };
        answer(profile, debug, span).await
    })
}

#[cfg(any(feature = "cpu-profiling", feature = "heap-profiling"))]
async fn answer(profile: ContentionProfile, debug: bool, span: Option<Span>) -> Response<Body> {
    // Symbolizing reads debug information: one such job at a time, off the server thread.
    super::lane::queued("a mutex profile", move || render(&profile, debug, span)).await
}

#[cfg(not(any(feature = "cpu-profiling", feature = "heap-profiling")))]
async fn answer(profile: ContentionProfile, debug: bool, span: Option<Span>) -> Response<Body> {
    render(&profile, debug, span)
}

/// One frame of a contention stack: address (0 for the lock's own frame and a bare call
/// site), function, file and line.
struct Frame {
    addr: usize,
    function: String,
    file: String,
    line: u32,
}

/// Turns entries' addresses into frames; a cache shared over one answer.
struct Resolver {
    #[cfg(any(feature = "cpu-profiling", feature = "heap-profiling"))]
    symbols: super::symbols::Symbols,
}

impl Resolver {
    fn new() -> Self {
        Resolver {
            #[cfg(any(feature = "cpu-profiling", feature = "heap-profiling"))]
            symbols: super::symbols::Symbols::default(),
        }
    }

    /// The stack of `e`, innermost first: the lock's frame, then the caller's frames (the
    /// capture's own and perfkit's lock frames left out).
    fn frames(&mut self, e: &ContentionEntry) -> Vec<Frame> {
        let mut out = vec![Frame {
            addr: 0,
            function: format!("lock \"{}\" ({})", e.lock, e.kind),
            file: String::new(),
            line: 0,
        }];
        let before = out.len();
        self.caller_frames(e, &mut out);
        if out.len() == before {
            out.push(Frame {
                addr: 0,
                function: format!("{}:{}", e.site.file(), e.site.line()),
                file: e.site.file().to_owned(),
                line: e.site.line(),
            });
        }
        out
    }

    #[cfg(any(feature = "cpu-profiling", feature = "heap-profiling"))]
    fn caller_frames(&mut self, e: &ContentionEntry, out: &mut Vec<Frame>) {
        let mut stripping = true;
        for &ip in e.stack.iter() {
            let frames = self.symbols.resolve(ip, super::symbols::Addr::Return);
            for f in frames {
                if stripping && plumbing(&f.full) {
                    continue;
                }
                stripping = false;
                out.push(Frame {
                    addr: ip,
                    function: f.name.clone(),
                    file: f.file.clone(),
                    line: f.line,
                });
            }
        }
    }

    #[cfg(not(any(feature = "cpu-profiling", feature = "heap-profiling")))]
    fn caller_frames(&mut self, _: &ContentionEntry, _: &mut Vec<Frame>) {}
}

/// Frames between the contended acquisition and the caller: the stack walk's own and
/// perfkit's lock internals, including the futures they are polled in.
#[cfg(any(feature = "cpu-profiling", feature = "heap-profiling"))]
fn plumbing(full: &str) -> bool {
    full.starts_with("backtrace::")
        || full.contains("perfkit::sync::")
        || full.starts_with("<core::future::")
        || full.starts_with("core::future::")
        || full.starts_with("<tokio::time::")
        || full.is_empty()
}

fn render(profile: &ContentionProfile, debug: bool, span: Option<Span>) -> Response<Body> {
    let mut resolver = Resolver::new();
    if debug {
        return text(StatusCode::OK, legacy_text(profile, &mut resolver));
    }
    let rate = i64::from(profile.rate.max(1));
    let mut p = Profile::new(&[("contentions", "count"), ("delay", "nanoseconds")], rate);
    if let Some((start, duration)) = span {
        p.set_time(start, duration);
    }
    p.comment(&format!(
        "perfkit contention profile: one contended acquisition in {} sampled; {} sampled events left out (profile full)",
        profile.rate, profile.dropped
    ));
    for e in &profile.entries {
        let stack: Vec<u64> = resolver
            .frames(e)
            .iter()
            .map(|f| p.location(&f.function, &f.file, i64::from(f.line)))
            .collect();
        p.sample(
            stack,
            vec![
                i64::try_from(e.count).unwrap_or(i64::MAX),
                i64::try_from(e.delay_nanos).unwrap_or(i64::MAX),
            ],
        );
    }
    super::pprof::attachment("mutex", Bytes::from(p.encode_gzip()))
}

/// Go's `debug=1` text: a header, then per stack `<delay> <count> @ <addresses>` and one
/// `#` line per frame.
fn legacy_text(profile: &ContentionProfile, resolver: &mut Resolver) -> String {
    let mut s = format!(
        "--- mutex:\ncycles/second=1000000000\nsampling period={}\n",
        profile.rate
    );
    if profile.dropped > 0 {
        s.push_str(&format!(
            "# {} sampled events left out: the profile holds at most {} stacks\n",
            profile.dropped,
            crate::sync::MAX_ENTRIES
        ));
    }
    for e in &profile.entries {
        let frames = resolver.frames(e);
        let addrs: Vec<String> = frames.iter().map(|f| format!("{:#x}", f.addr)).collect();
        s.push_str(&format!("{} {} @ {}\n", e.delay_nanos, e.count, addrs.join(" ")));
        for f in &frames {
            if f.file.is_empty() {
                s.push_str(&format!("#\t{:#x}\t{}\n", f.addr, f.function));
            } else {
                s.push_str(&format!("#\t{:#x}\t{}\t{}:{}\n", f.addr, f.function, f.file, f.line));
            }
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Query {
        Query::from_pairs(pairs)
    }

    #[test]
    fn parameters_follow_go_and_bad_ones_say_why() {
        assert!(matches!(parse(&q(&[]), 60), Ok(Ask::Cumulative { debug: false })));
        assert!(matches!(parse(&q(&[("debug", "1")]), 60), Ok(Ask::Cumulative { debug: true })));
        assert!(matches!(parse(&q(&[("seconds", "3")]), 60), Ok(Ask::Delta(3))));
        for (pairs, says) in [
            (&[("seconds", "0")][..], "positive"),
            (&[("seconds", "-2")][..], "positive"),
            (&[("seconds", "abc")][..], "positive"),
            (&[("seconds", "61")][..], "maximum of 60"),
            (&[("seconds", "2"), ("debug", "1")][..], "incompatible"),
            (&[("debug", "2")][..], "expected 0 or 1"),
        ] {
            let e = parse(&q(pairs), 60).err().unwrap_or_default();
            assert!(e.contains(says), "{pairs:?}: {e:?}");
            assert!(!e.contains('\n'), "one line: {e:?}");
        }
    }
}
