//! Writing the Prometheus text exposition format (version 0.0.4).

use std::fmt::Write as _;

use super::histogram::HistogramSnapshot;
use super::names::{Kind, MetricDef};

/// `# HELP` and `# TYPE` lines.
pub(crate) fn header(out: &mut String, def: &MetricDef) {
    out.push_str("# HELP ");
    out.push_str(def.name);
    out.push(' ');
    for ch in def.help.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push_str("\n# TYPE ");
    out.push_str(def.name);
    out.push(' ');
    out.push_str(def.kind.as_str());
    out.push('\n');
}

fn label_value(out: &mut String, v: &str) {
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn labels(out: &mut String, names: &[&str], values: &[String], extra: Option<(&str, &str)>) {
    if names.is_empty() && extra.is_none() {
        return;
    }
    // An empty value is the same series as no label at all (a queue that belongs to no
    // pool has no `pool` label), and is written that way.
    if values.iter().all(String::is_empty) && extra.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (n, v) in names.iter().zip(values) {
        if v.is_empty() {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(n);
        out.push_str("=\"");
        label_value(out, v);
        out.push('"');
    }
    if let Some((n, v)) = extra {
        if !first {
            out.push(',');
        }
        out.push_str(n);
        out.push_str("=\"");
        out.push_str(v);
        out.push('"');
    }
    out.push('}');
}

/// Formats a float the way Prometheus parses it (`+Inf`, `-Inf`, `NaN`).
pub(crate) fn float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

/// One sample line with a float value.
pub(crate) fn sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    names: &[&str],
    values: &[String],
    extra: Option<(&str, &str)>,
    v: f64,
) {
    out.push_str(name);
    out.push_str(suffix);
    labels(out, names, values, extra);
    out.push(' ');
    float(out, v);
    out.push('\n');
}

/// One sample line with an integer value.
pub(crate) fn sample_u64(out: &mut String, name: &str, names: &[&str], values: &[String], v: u64) {
    out.push_str(name);
    labels(out, names, values, None);
    out.push(' ');
    let _ = write!(out, "{v}");
    out.push('\n');
}

/// A histogram's `_bucket`, `_sum` and `_count` lines.
pub(crate) fn histogram(
    out: &mut String,
    def: &MetricDef,
    values: &[String],
    h: &HistogramSnapshot,
) {
    debug_assert_eq!(def.kind, Kind::Histogram);
    let cumulative = h.cumulative(def.buckets);
    let mut le = String::with_capacity(16);
    for (i, n) in cumulative.iter().enumerate() {
        le.clear();
        match def.buckets.get(i) {
            Some(b) => float(&mut le, *b),
            None => le.push_str("+Inf"),
        }
        out.push_str(def.name);
        out.push_str("_bucket");
        labels(out, def.labels, values, Some(("le", &le)));
        let _ = writeln!(out, " {n}");
    }
    sample(out, def.name, "_sum", def.labels, values, None, h.sum());
    out.push_str(def.name);
    out.push_str("_count");
    labels(out, def.labels, values, None);
    let _ = writeln!(out, " {}", h.count());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut s = String::new();
        sample_u64(&mut s, "m_total", &["a"], &["x\"y\\z\nw".to_owned()], 3);
        assert_eq!(s, "m_total{a=\"x\\\"y\\\\z\\nw\"} 3\n");
    }

    #[test]
    fn floats_use_prometheus_spellings() {
        let mut s = String::new();
        float(&mut s, f64::INFINITY);
        s.push(' ');
        float(&mut s, f64::NAN);
        s.push(' ');
        float(&mut s, 0.000_001);
        assert_eq!(s, "+Inf NaN 0.000001");
    }
}
