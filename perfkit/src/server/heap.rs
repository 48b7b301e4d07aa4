//! `/debug/pprof/heap` and `/debug/pprof/allocs`: the request's parameters, one expensive
//! answer at a time, and the answer's form. The profile is `crate::profile::heap`'s.

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};

use super::http::{Body, Query, State, error, text};
use crate::profile::heap::{self, HeapForm, HeapKind};

pub(crate) async fn serve(_: Arc<State>, q: Query, kind: HeapKind) -> Response<Body> {
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
    if let Err(reason) = heap::check(kind) {
        return error(StatusCode::NOT_IMPLEMENTED, &reason.to_string());
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
                super::http::response(StatusCode::OK, "image/svg+xml", Bytes::from(bytes))
            }
            _ => {
                let name = if kind == HeapKind::Inuse { "heap" } else { "allocs" };
                super::pprof::attachment(name, Bytes::from(bytes))
            }
        },
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("heap profile failed: {e}")),
    })
    .await
}
