//! The contention profile of perfkit's instrumented locks and semaphores, symbolized and
//! written as pprof or Go's legacy text (served as `/debug/pprof/mutex`).
//!
//! Each stack's innermost frame names the lock: `lock "<name>" (<kind>)`. Below it is the
//! waiting caller's stack — the whole stack when perfkit is built with a profiler
//! (`cpu-profiling` or `heap-profiling`), else the call site of `lock()` / `acquire()`.

use std::time::{Duration, SystemTime};

use super::encode::Profile;
use crate::sync::{ContentionEntry, ContentionProfile};

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

/// A contention profile in the form asked for.
#[derive(Debug)]
pub(crate) enum Rendered {
    /// Go's `debug=1` text.
    Text(String),
    /// Gzipped pprof.
    Pprof(Vec<u8>),
}

/// The profile as Go's text (`debug`) or as gzipped pprof; `span` is a delta's start and
/// length.
pub(crate) fn render(
    profile: &ContentionProfile,
    debug: bool,
    span: Option<(SystemTime, Duration)>,
) -> Rendered {
    let mut resolver = Resolver::new();
    if debug {
        return Rendered::Text(legacy_text(profile, &mut resolver));
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
    Rendered::Pprof(p.encode_gzip())
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
        s.push_str(&format!(
            "{} {} @ {}\n",
            e.delay_nanos,
            e.count,
            addrs.join(" ")
        ));
        for f in &frames {
            if f.file.is_empty() {
                s.push_str(&format!("#\t{:#x}\t{}\n", f.addr, f.function));
            } else {
                s.push_str(&format!(
                    "#\t{:#x}\t{}\t{}:{}\n",
                    f.addr, f.function, f.file, f.line
                ));
            }
        }
        s.push('\n');
    }
    s
}
