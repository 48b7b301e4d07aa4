//! OpenMetrics 1.0 text, for scrapers that ask for it (`Accept:
//! application/openmetrics-text`, as Prometheus sends first).
//!
//! The exposition is the Prometheus 0.0.4 text [`super::render`] writes, rewritten family by
//! family, so both formats always carry the same samples:
//!
//! * a counter's family is named without `_total` (`# TYPE perfkit_queue_enqueued
//!   counter`); its samples keep the suffix. A 0.0.4 counter whose name lacks `_total`
//!   (possible for the service's own facade metrics) becomes `unknown`, which OpenMetrics
//!   allows under any name; `untyped` becomes `unknown` too;
//! * `# UNIT seconds` or `# UNIT bytes` is written for families whose name ends in it;
//! * `"` in `# HELP` text is escaped, as OpenMetrics requires;
//! * the text ends with `# EOF`.
//!
//! [`super::render_openmetrics`] also writes a `_created` sample (the series' creation time)
//! after each counter and histogram series perfkit stores. Counters and gauges a primitive
//! reports at scrape time (a pool's job outcomes, a lock's acquisitions) and the facade's
//! metrics have none: the format makes `_created` optional.

/// The `Content-Type` of an OpenMetrics answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `Content-Type` of a Prometheus text answer.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header value prefers OpenMetrics (version 1.0.0, 0.0.1 or none
/// given) to the Prometheus text format: an OpenMetrics range with a q-value above 0 and no
/// lower than that of any `text/plain` or `*/*` range.
pub fn prefers_openmetrics(accept: &str) -> bool {
    let mut om: f64 = 0.0;
    let mut text: f64 = 0.0;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let mut q = 1.0;
        let mut version_ok = true;
        for p in parts {
            if let Some(v) = p.strip_prefix("q=") {
                q = v.trim().parse().unwrap_or(0.0);
            } else if let Some(v) = p.strip_prefix("version=") {
                version_ok = matches!(v.trim(), "1.0.0" | "0.0.1");
            }
        }
        match media.as_str() {
            "application/openmetrics-text" if version_ok => om = om.max(q),
            "text/plain" | "text/*" | "*/*" => text = text.max(q),
            _ => {}
        }
    }
    om > 0.0 && om >= text
}

/// Rewrites Prometheus 0.0.4 text into OpenMetrics 1.0 text (see the module docs).
pub fn from_prometheus_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 16 + 8);
    // A `# HELP` line waits for its family's `# TYPE`, which decides the family's name.
    let mut help: Option<(&str, &str)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some((name, doc)) = help.take() {
                write_help(&mut out, name, doc); // a family with no TYPE line
            }
            let (name, doc) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name, doc));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (family, kind) = match kind.trim() {
                "counter" => match name.strip_suffix("_total") {
                    Some(f) => (f, "counter"),
                    None => (name, "unknown"),
                },
                "untyped" => (name, "unknown"),
                k => (name, k),
            };
            if let Some((h, doc)) = help.take() {
                if h == name {
                    write_help(&mut out, family, doc);
                } else {
                    write_help(&mut out, h, doc);
                }
            }
            out.push_str("# TYPE ");
            out.push_str(family);
            out.push(' ');
            out.push_str(kind);
            out.push('\n');
            if let Some(unit) = ["seconds", "bytes"]
                .into_iter()
                .find(|u| family.ends_with(&format!("_{u}")))
            {
                out.push_str("# UNIT ");
                out.push_str(family);
                out.push(' ');
                out.push_str(unit);
                out.push('\n');
            }
        } else if line.starts_with('#') || line.trim().is_empty() {
            // Other comments and blank lines have no place in OpenMetrics.
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if let Some((name, doc)) = help {
        write_help(&mut out, name, doc);
    }
    out.push_str("# EOF\n");
    out
}

/// A `# HELP` line, its text already escaped for 0.0.4 (`\\`, `\n`), with `"` escaped too.
fn write_help(out: &mut String, name: &str, doc: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    for ch in doc.chars() {
        if ch == '"' {
            out.push_str("\\\"");
        } else {
            out.push(ch);
        }
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers_pick_the_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(prefers_openmetrics(prometheus));
        assert!(prefers_openmetrics("application/openmetrics-text"));
        assert!(!prefers_openmetrics("text/plain"));
        assert!(!prefers_openmetrics("*/*"));
        assert!(!prefers_openmetrics(""));
        assert!(!prefers_openmetrics("application/openmetrics-text;q=0"));
        assert!(!prefers_openmetrics(
            "application/openmetrics-text;version=2.0.0"
        ));
        assert!(!prefers_openmetrics(
            "application/openmetrics-text;q=0.2,text/plain;q=0.9"
        ));
    }

    #[test]
    fn counters_lose_total_in_their_family_name_and_units_are_written() {
        let text = "# HELP perfkit_queue_enqueued_total Items \"accepted\".\n# TYPE perfkit_queue_enqueued_total counter\nperfkit_queue_enqueued_total{queue=\"a\"} 3\n# HELP perfkit_queue_wait_seconds Wait.\n# TYPE perfkit_queue_wait_seconds histogram\nperfkit_queue_wait_seconds_bucket{le=\"+Inf\"} 1\nperfkit_queue_wait_seconds_sum 0.5\nperfkit_queue_wait_seconds_count 1\n# TYPE odd counter\nodd 1\n# HELP plain A gauge.\n# TYPE plain untyped\nplain 2\n\n";
        let om = from_prometheus_text(text);
        assert_eq!(
            om,
            "# HELP perfkit_queue_enqueued Items \\\"accepted\\\".\n# TYPE perfkit_queue_enqueued counter\nperfkit_queue_enqueued_total{queue=\"a\"} 3\n# HELP perfkit_queue_wait_seconds Wait.\n# TYPE perfkit_queue_wait_seconds histogram\n# UNIT perfkit_queue_wait_seconds seconds\nperfkit_queue_wait_seconds_bucket{le=\"+Inf\"} 1\nperfkit_queue_wait_seconds_sum 0.5\nperfkit_queue_wait_seconds_count 1\n# TYPE odd unknown\nodd 1\n# HELP plain A gauge.\n# TYPE plain unknown\nplain 2\n# EOF\n"
        );
    }
}
