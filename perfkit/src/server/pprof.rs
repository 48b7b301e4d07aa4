//! The `/debug/pprof/` family, following Go's net/http/pprof conventions.

use http::StatusCode;
use http::Response;

use bytes::Bytes;

use std::sync::Arc;

use super::reply::{Body, Query, Reply, State, attachment, error, html, text};

/// An entry of the index page: link, name and one-line description, like Go's.
struct Entry {
    href: &'static str,
    name: &'static str,
    description: &'static str,
}

const ENTRIES: &[Entry] = &[
    Entry {
        href: "allocs?debug=1",
        name: "allocs",
        description: "A sampling of all past memory allocations (jemalloc, feature heap-profiling). seconds=N gives the delta over N seconds.",
    },
    Entry {
        href: "heap?debug=1",
        name: "heap",
        description: "A sampling of memory allocations of live objects (jemalloc, feature heap-profiling). gc is accepted and ignored. seconds=N gives the delta over N seconds.",
    },
    Entry {
        href: "mutex?debug=1",
        name: "mutex",
        description: "Stack traces of callers that waited for a perfkit::sync lock or semaphore: contentions and delay, sampled (Builder::mutex_profile_rate). seconds=N gives the delta over N seconds.",
    },
    Entry {
        href: "profile?seconds=30",
        name: "profile",
        description: "CPU profile (feature cpu-profiling). Set seconds (default 30, capped); format=flamegraph gives an SVG. One runs at a time; profile/last serves the latest.",
    },
    Entry {
        href: "goroutine?debug=1",
        name: "goroutine",
        description: "Live tracked tasks (perfkit::task), counted by name and spawn site. debug=2 lists every task with its age; without debug, a pprof profile for go tool pprof; seconds=N gives the delta over N seconds.",
    },
    Entry {
        href: "",
        name: "threadcreate",
        description: "Not served: Go counts the OS threads its runtime created, which here are tokio's fixed worker and blocking threads (process_threads on /metrics counts them). Tracked tasks are under goroutine.",
    },
    Entry {
        href: "cmdline",
        name: "cmdline",
        description: "The command line invocation of the current program, NUL-separated.",
    },
    Entry {
        href: "/metrics",
        name: "metrics",
        description: "Prometheus text exposition: perfkit's series, process and runtime figures, and the service's own metrics.",
    },
    Entry {
        href: "/debug/perfkit/snapshot",
        name: "perfkit snapshot",
        description: "JSON: current figures of every queue, batcher, pool, task group, hot path and runtime.",
    },
    Entry {
        href: "/debug/perfkit/inventory",
        name: "perfkit inventory",
        description: "JSON: configuration of every primitive and of this server.",
    },
    Entry {
        href: "/debug/perfkit/timeline",
        name: "perfkit timeline",
        description: "JSON: every primitive's figures for each second of the last hour (from, to: Unix seconds).",
    },
    Entry {
        href: "/debug/perfkit/report",
        name: "perfkit report",
        description: "The run report over the timeline (from, to; format=json or html; phases=name@unix_seconds,...): configuration, ranked findings, bottleneck, headroom, timelines, profiles.",
    },
    Entry {
        href: "/debug/perfkit/heap-sampling",
        name: "heap sampling",
        description: "JSON: jemalloc's heap sampling (feature heap-profiling). POST active=true|false pauses or resumes it; POST lg_sample=N samples one allocation per 2^N bytes (and restarts the figures).",
    },
    Entry {
        href: "/debug/perfkit/k6.js",
        name: "k6 helper",
        description: "The k6 module that polls the snapshot and turns it into k6 metrics, matching this build.",
    },
];

pub(crate) fn index(_: &State, _: &Query) -> Response<Body> {
    let mut s = String::from(
        "<html>\n<head>\n<title>/debug/pprof/</title>\n<style>\n.profile-name{display:inline-block;width:10rem;}\n</style>\n</head>\n<body>\n/debug/pprof/\n<br>\n<p>Endpoints available:</p>\n<ul>\n",
    );
    for e in ENTRIES {
        if e.href.is_empty() {
            s.push_str(&format!(
                "<li><div class=profile-name>{}:</div> {}</li>\n",
                e.name, e.description
            ));
            continue;
        }
        s.push_str(&format!(
            "<li><div class=profile-name><a href=\"{}\">{}</a>:</div> {}</li>\n",
            e.href, e.name, e.description
        ));
    }
    s.push_str("</ul>\n</body>\n</html>\n");
    html(s)
}

pub(crate) fn cmdline(_: &State, _: &Query) -> Response<Body> {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    text(StatusCode::OK, args.join("\0"))
}

/// `/debug/pprof/goroutine`: `debug=0` (pprof), `1` (counts by name and site), `2` (every
/// task), or `seconds=N` (the difference of two counts N seconds apart).
pub(crate) fn goroutine(state: Arc<State>, q: Query) -> Reply {
    let debug = !matches!(q.get("debug"), None | Some("0"));
    match super::delta::seconds(&q, state.profile_max_seconds, debug) {
        Err(reason) => {
            let r = reason.response();
            Box::pin(async move { r })
        }
        Ok(None) => {
            let r = goroutine_now(&q);
            Box::pin(async move { r })
        }
        Ok(Some(n)) => Box::pin(async move {
            let _claim = match super::delta::claim("goroutine", n) {
                Ok(c) => c,
                Err(busy) => return busy.response(),
            };
            let start = std::time::SystemTime::now();
            let before = crate::profile::goroutine::counts();
            tokio::time::sleep(std::time::Duration::from_secs(n)).await;
            let after = crate::profile::goroutine::counts();
            let span = (start, std::time::Duration::from_secs(n));
            let gz = crate::profile::goroutine::delta_pprof(&before, &after, span);
            attachment("goroutine", Bytes::from(gz))
        }),
    }
}

fn goroutine_now(q: &Query) -> Response<Body> {
    match q.get("debug").unwrap_or("0") {
        "0" => goroutine_profile(),
        "1" => {
            let groups = crate::task::grouped();
            let total: usize = groups.iter().map(|g| g.0).sum();
            let mut s = format!("tasks profile: total {total}\n");
            for (count, name, site) in groups {
                s.push_str(&format!("{count} @ {name} {site}\n#\t{name}\n#\t{site}\n\n"));
            }
            text(StatusCode::OK, s)
        }
        "2" => {
            let mut s = String::new();
            for t in crate::task::dump() {
                s.push_str(&format!(
                    "task {} [{}, {:.3}s]:\n\tspawned at {}\n\n",
                    t.id, t.name, t.age_seconds, t.site
                ));
            }
            text(StatusCode::OK, s)
        }
        other => error(
            StatusCode::BAD_REQUEST,
            &format!("invalid debug={other:?}: expected 0, 1 or 2"),
        ),
    }
}

fn goroutine_profile() -> Response<Body> {
    attachment("goroutine", Bytes::from(crate::profile::goroutine::pprof()))
}

pub(crate) fn profile(state: Arc<State>, q: Query) -> Reply {
    #[cfg(feature = "cpu-profiling")]
    return Box::pin(super::cpu::profile(state, q));
    #[cfg(not(feature = "cpu-profiling"))]
    {
        let _ = (state, q);
        Box::pin(async { not_built("CPU profiles", "cpu-profiling") })
    }
}

pub(crate) fn profile_last(state: Arc<State>, q: Query) -> Reply {
    #[cfg(feature = "cpu-profiling")]
    return Box::pin(super::cpu::last(state, q));
    #[cfg(not(feature = "cpu-profiling"))]
    {
        let _ = (state, q);
        Box::pin(async { not_built("CPU profiles", "cpu-profiling") })
    }
}

pub(crate) fn heap(state: Arc<State>, q: Query) -> Reply {
    #[cfg(feature = "heap-profiling")]
    return Box::pin(super::heap::serve(state, q, crate::profile::HeapKind::Inuse));
    #[cfg(not(feature = "heap-profiling"))]
    {
        let _ = (state, q);
        Box::pin(async { not_built("heap profiles", "heap-profiling") })
    }
}

pub(crate) fn allocs(state: Arc<State>, q: Query) -> Reply {
    #[cfg(feature = "heap-profiling")]
    return Box::pin(super::heap::serve(state, q, crate::profile::HeapKind::Allocs));
    #[cfg(not(feature = "heap-profiling"))]
    {
        let _ = (state, q);
        Box::pin(async { not_built("allocation profiles", "heap-profiling") })
    }
}

/// `/debug/perfkit/heap-sampling`: jemalloc's heap sampling (`GET`), switched on or off
/// (`POST ?active=true|false`) or set to one sample per `2^N` bytes (`POST ?lg_sample=N`,
/// which also restarts the profile's figures from zero).
pub(crate) fn heap_sampling(_: &State, q: &Query, post: bool) -> Response<Body> {
    #[cfg(feature = "heap-profiling")]
    {
        use crate::profile::{self as profile, HeapError};
        let active = match q.get("active") {
            None => None,
            Some("true" | "1") => Some(true),
            Some("false" | "0") => Some(false),
            Some(other) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("invalid active={other:?}: expected true or false"),
                );
            }
        };
        let lg = match q.get("lg_sample").map(str::parse::<u32>) {
            None => None,
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "invalid lg_sample={:?}: expected a whole number from 0 to {}",
                        q.get("lg_sample").unwrap_or(""),
                        profile::MAX_LG_SAMPLE
                    ),
                );
            }
        };
        if !post && (active.is_some() || lg.is_some()) {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "changing heap sampling needs POST; GET only reads it",
            );
        }
        if post && active.is_none() && lg.is_none() {
            return error(
                StatusCode::BAD_REQUEST,
                "nothing to change: give active=true|false, lg_sample=N, or both",
            );
        }
        let status = |e: &HeapError| match e {
            HeapError::Off => StatusCode::NOT_IMPLEMENTED,
            HeapError::BadSampleRate(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if let Some(n) = lg {
            if let Err(e) = profile::set_heap_sample_rate(n) {
                return error(status(&e), &e.to_string());
            }
        }
        if let Some(on) = active {
            if let Err(e) = profile::set_heap_sampling(on) {
                return error(status(&e), &e.to_string());
            }
        }
        match profile::heap_sampling() {
            Ok(now) => super::reply::json(&now.json()),
            Err(e) => error(status(&e), &e.to_string()),
        }
    }
    #[cfg(not(feature = "heap-profiling"))]
    {
        let _ = (q, post);
        not_built("Heap profiles", "heap-profiling")
    }
}

/// The inventory's `server.heap_sampling`: jemalloc's sampling now, or `null` when heap
/// profiling is not built in or not switched on.
pub(crate) fn heap_sampling_json() -> serde_json::Value {
    #[cfg(feature = "heap-profiling")]
    if let Ok(s) = crate::profile::heap_sampling() {
        return s.json();
    }
    serde_json::Value::Null
}

#[cfg(not(all(feature = "cpu-profiling", feature = "heap-profiling")))]
fn not_built(what: &str, feature: &str) -> Response<Body> {
    error(
        StatusCode::NOT_IMPLEMENTED,
        &format!("{what} are not built in: enable perfkit's `{feature}` feature"),
    )
}

#[cfg(all(test, not(all(feature = "cpu-profiling", feature = "heap-profiling"))))]
mod tests {
    use super::*;

    fn state() -> Arc<State> {
        Arc::new(State {
            token: None,
            local_addr: "127.0.0.1:0".parse().unwrap(),
            max_connections: 1,
            header_read_timeout: std::time::Duration::from_secs(1),
            profile_max_seconds: 60,
            profile_frequency: 99,
        })
    }

    fn answer(reply: Reply) -> (StatusCode, String) {
        use http_body_util::BodyExt;
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let r = reply.await;
            let status = r.status();
            let body = r.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        })
    }

    #[cfg(not(feature = "cpu-profiling"))]
    #[test]
    fn cpu_profiles_without_the_feature_are_501_naming_it() {
        for reply in [profile(state(), Query::default()), profile_last(state(), Query::default())] {
            let (status, body) = answer(reply);
            assert_eq!(status, StatusCode::NOT_IMPLEMENTED);
            assert!(body.contains("`cpu-profiling` feature"), "{body}");
        }
    }

    #[cfg(not(feature = "heap-profiling"))]
    #[test]
    fn heap_profiles_without_the_feature_are_501_naming_it() {
        for reply in [heap(state(), Query::default()), allocs(state(), Query::default())] {
            let (status, body) = answer(reply);
            assert_eq!(status, StatusCode::NOT_IMPLEMENTED);
            assert!(body.contains("`heap-profiling` feature"), "{body}");
        }
    }
}
