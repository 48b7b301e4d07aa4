//! The `/debug/pprof/` family, following Go's net/http/pprof conventions.

use http::StatusCode;
use http::Response;

use super::http::{Body, Query, State, html, text};

/// An entry of the index page: link, name and one-line description, like Go's.
struct Entry {
    href: &'static str,
    name: &'static str,
    description: &'static str,
}

const ENTRIES: &[Entry] = &[
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
