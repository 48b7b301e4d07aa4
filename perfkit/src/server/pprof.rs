//! The `/debug/pprof/` family, following Go's net/http/pprof conventions.

use http::StatusCode;
use http::Response;

use bytes::Bytes;
use http::header::{self, HeaderValue};

use super::http::{Body, Query, State, error, html, response, text};
use super::profile::Profile;

/// An entry of the index page: link, name and one-line description, like Go's.
struct Entry {
    href: &'static str,
    name: &'static str,
    description: &'static str,
}

const ENTRIES: &[Entry] = &[
    Entry {
        href: "goroutine?debug=1",
        name: "goroutine",
        description: "Live tracked tasks (perfkit::task), counted by name and spawn site. debug=2 lists every task with its age; without debug, a pprof profile for go tool pprof.",
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

pub(crate) fn goroutine(_: &State, q: &Query) -> Response<Body> {
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

/// Live tracked tasks as a pprof profile: one sample per (name, spawn site) with the task
/// count as value; the stack is the task name (leaf) above its spawn site.
fn goroutine_profile() -> Response<Body> {
    let mut p = Profile::new(&[("goroutine", "count")], 1);
    for (count, name, site) in crate::task::grouped() {
        let (file, line) = match site.rsplit_once(':') {
            Some((f, l)) => (f.to_owned(), l.parse().unwrap_or(0)),
            None => (site.clone(), 0),
        };
        let leaf = p.location(name, &file, line);
        let root = p.location(&format!("spawned at {site}"), &file, line);
        p.sample(vec![leaf, root], vec![count as i64]);
    }
    let mut r = response(
        StatusCode::OK,
        "application/octet-stream",
        Bytes::from(p.encode_gzip()),
    );
    r.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"goroutine\""),
    );
    r
}
