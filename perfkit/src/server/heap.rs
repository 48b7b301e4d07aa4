//! `/debug/pprof/heap` and `/debug/pprof/allocs`: the request's parameters, one expensive
//! answer at a time, and the answer's form. The profile is `crate::profile::heap`'s.

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};

use super::reply::{Body, Query, State, error, text};
use crate::profile::heap::{self, HeapForm, HeapKind};

pub(crate) async fn serve(state: Arc<State>, q: Query, kind: HeapKind) -> Response<Body> {
    // `gc` is accepted for Go compatibility and ignored: there is no collector to run.
    let debug = match q.get("debug").unwrap_or("0") {
        "0" => false,
        "1" => true,
        other => return error(StatusCode::BAD_REQUEST, &format!("invalid debug={other:?}: expected 0 or 1")),
    };
    let flamegraph = match q.get("format") {
        None | Some("pprof" | "proto") => false,
        Some("flamegraph" | "svg") => true,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("invalid format={other:?}: expected pprof or flamegraph"),
            );
        }
    };
    let delta = match super::delta::seconds(&q, state.profile_max_seconds, debug) {
        Ok(d) => d,
        Err(reason) => return reason.response(),
    };
    if delta.is_some() && flamegraph {
        return error(
            StatusCode::BAD_REQUEST,
            "seconds and format=flamegraph are incompatible: a delta profile is pprof only",
        );
    }
    if let Err(reason) = heap::check(kind) {
        return error(StatusCode::NOT_IMPLEMENTED, &reason.to_string());
    }
    if let Some(n) = delta {
        return serve_delta(kind, n).await;
    }
    let what = if kind == HeapKind::Inuse { "a heap profile" } else { "an allocation profile" };
    let key = format!("{kind:?} debug={debug} flamegraph={flamegraph}");
    let form = match (debug, flamegraph) {
        (true, _) => HeapForm::Text,
        (false, true) => HeapForm::Flamegraph,
        (false, false) => HeapForm::Pprof,
    };
    super::lane::exclusive(key, what, move || match heap::heap(kind, form) {
        Ok(bytes) => match form {
            HeapForm::Text => text(StatusCode::OK, String::from_utf8_lossy(&bytes).into_owned()),
            HeapForm::Flamegraph => {
                super::reply::response(StatusCode::OK, "image/svg+xml", Bytes::from(bytes))
            }
            _ => {
                let name = if kind == HeapKind::Inuse { "heap" } else { "allocs" };
                super::reply::attachment(name, Bytes::from(bytes))
            }
        },
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("heap profile failed: {e}")),
    })
    .await
}

/// `seconds=N`: two dumps N seconds apart and their difference.
async fn serve_delta(kind: HeapKind, n: u64) -> Response<Body> {
    let (profile, name) = match kind {
        HeapKind::Inuse => ("heap", "heap"),
        _ => ("allocs", "allocs"),
    };
    let _claim = match super::delta::claim(profile, n) {
        Ok(c) => c,
        Err(busy) => return busy.response(),
    };
    let start = std::time::SystemTime::now();
    let take = move || heap::snapshot(kind);
    let before = match tokio::task::spawn_blocking(take).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, &format!("heap profile failed: {e}")),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &format!("heap profile failed: {e}")),
    };
    tokio::time::sleep(std::time::Duration::from_secs(n)).await;
    let span = (start, std::time::Duration::from_secs(n));
    let what = if kind == HeapKind::Inuse { "a heap delta profile" } else { "an allocation delta profile" };
    // The second dump and the symbolizing wait for their turn rather than be refused.
    super::lane::queued(what, move || match heap::snapshot(kind) {
        Ok(after) => super::reply::attachment(name, Bytes::from(heap::delta_pprof(&before, &after, kind, span))),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("heap profile failed: {e}")),
    })
    .await
}
