//! The run report as one self-contained HTML page: tables for the run, the findings, the
//! configuration, the headroom and the profiles, and a small inline SVG plot (drawn with
//! `plotters`) for every signal that moved, with the k6 phases marked. No script, no font or
//! stylesheet from the network; it prints.
//!
//! The page holds the comment `<!--perfkit:k6-->` where the k6 helper puts its own verdicts
//! (thresholds, client latency per scenario and phase) before saving the file.

use std::fmt::Write as _;

use plotters::prelude::*;
use serde_json::Value;

/// Where the k6 helper inserts its section.
pub(crate) const K6_MARKER: &str = "<!--perfkit:k6-->";
/// At most this many plots; the rest are listed by name.
const MAX_PLOTS: usize = 160;
/// Points per plot line; longer series keep each bucket's largest value.
const MAX_POINTS: usize = 600;
const PLOT_W: u32 = 470;
const PLOT_H: u32 = 165;

/// Escapes text for HTML element content and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Text with `code` spans for what the report quotes in backticks.
fn prose(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in s.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{}</code>", esc(part));
        } else {
            out.push_str(&esc(part));
        }
    }
    out
}

/// A value in its unit, short.
fn fmt_value(unit: &str, v: f64) -> String {
    match unit {
        "ratio" => format!("{:.0}%", v * 100.0),
        "seconds" if v == 0.0 => "0".into(),
        "seconds" if v.abs() >= 1.0 => format!("{v:.2}s"),
        "seconds" if v.abs() >= 0.001 => format!("{:.1}ms", v * 1e3),
        "seconds" => format!("{:.0}µs", v * 1e6),
        "bytes" if v.abs() >= 1024.0 * 1024.0 * 1024.0 => format!("{:.1}GiB", v / 1073741824.0),
        "bytes" if v.abs() >= 1024.0 * 1024.0 => format!("{:.1}MiB", v / 1048576.0),
        "bytes" if v.abs() >= 1024.0 => format!("{:.0}KiB", v / 1024.0),
        _ if v.abs() >= 1e6 => format!("{:.1}M", v / 1e6),
        _ if v.abs() >= 1e4 => format!("{:.0}k", v / 1e3),
        _ if v.fract() == 0.0 => format!("{v:.0}"),
        _ => format!("{v:.2}"),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Seconds since the Unix epoch as `YYYY-MM-DD hh:mm:ss UTC`.
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem / 60 % 60, rem % 60)
}

const STYLE: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1d2330;margin:24px auto;max-width:1000px;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d5d9e0;padding-bottom:4px}
h3{font-size:14px;margin:16px 0 6px}
table{border-collapse:collapse;width:100%;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid #d5d9e0;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f2f4f7}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#f2f4f7;padding:0 3px;border-radius:3px}
.sev{display:inline-block;padding:1px 6px;border-radius:3px;font-weight:600;font-size:12px;color:#fff}
.CRITICAL{background:#b3261e}.HIGH{background:#d9730d}.MEDIUM{background:#b88a00}.LOW{background:#5b6b82}
.PASS{background:#2e7d32}.FAIL{background:#b3261e}
.muted{color:#5b6b82}.digest{background:#f7f8fa;border:1px solid #d5d9e0;border-radius:4px;padding:8px 12px}
.plots{display:flex;flex-wrap:wrap;gap:8px}.plot{border:1px solid #e3e6eb;border-radius:4px;break-inside:avoid}
.plot svg{display:block}
@media print{body{margin:0;max-width:none}h2{break-after:avoid}tr,.plot{break-inside:avoid}}
"#;

/// Renders the report (`report::build`'s answer) with the timeline it was built from.
pub(crate) fn render(report: &Value, timeline: &Value) -> String {
    let mut h = String::with_capacity(256 * 1024);
    let run = &report["run"];
    let binary = run["binary"].as_str().unwrap_or("service");
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>perfkit run report: {}</title><style>{STYLE}</style></head><body>\n",
        esc(binary)
    );
    let from = run["first_second"].as_u64();
    let to = run["last_second"].as_u64();
    let _ = write!(h, "<h1>Run report: <code>{}</code></h1>\n<p class=\"muted\">", esc(binary));
    match (from, to) {
        (Some(a), Some(b)) => {
            let _ = write!(h, "{} to {} ({} s recorded)", utc(a), utc(b), run["seconds_recorded"]);
        }
        _ => h.push_str("no second of the timeline falls in the requested span"),
    }
    let _ = writeln!(
        h,
        " · perfkit {} · features {} · host: {} CPUs, {} memory · report schema {}</p>",
        esc(&text(&run["perfkit_version"])),
        esc(&run["features"].as_array().map_or(String::new(), |f| {
            f.iter().map(text).collect::<Vec<_>>().join(", ")
        })),
        run["host"]["cpus"],
        run["host"]["memory_bytes"].as_f64().map_or("?".into(), |b| fmt_value("bytes", b)),
        report["schema_version"]
    );
    digest(&mut h, report);
    h.push_str(K6_MARKER);
    h.push('\n');
    findings(&mut h, report);
    plots(&mut h, report, timeline);
    headroom(&mut h, report);
    configuration(&mut h, report);
    profiles(&mut h, report);
    h.push_str(
        "<p class=\"muted\">Written by perfkit from what the service measured: the timeline's \
         one-second figures, the inventory of its primitives and the profiles taken during the run. \
         Times are seconds from the report's first second.</p>\n</body></html>\n",
    );
    h
}

fn findings_of(report: &Value) -> &[Value] {
    report["findings"].as_array().map_or(&[], Vec::as_slice)
}

fn digest(h: &mut String, report: &Value) {
    let f = findings_of(report);
    let count = |s: &str| f.iter().filter(|x| x["severity"] == s).count();
    h.push_str("<div class=\"digest\">");
    let _ = write!(
        h,
        "<b>Findings:</b> {} critical, {} high, {} medium, {} low.",
        count("CRITICAL"),
        count("HIGH"),
        count("MEDIUM"),
        count("LOW")
    );
    if let Some(top) = f.first() {
        let _ = write!(
            h,
            " <b>Top:</b> {} <span class=\"sev {}\">{}</span> {}.",
            esc(&text(&top["id"])),
            esc(&text(&top["severity"])),
            esc(&text(&top["severity"])),
            prose(&text(&top["title"]))
        );
    }
    match f.iter().find(|x| x["bottleneck"] == true) {
        Some(b) => {
            let _ = write!(
                h,
                " <b>Bottleneck:</b> {} {} (saturated first, at t={} s).",
                esc(&text(&b["id"])),
                prose(&text(&b["title"])),
                b["started_at_seconds"]
            );
        }
        None => h.push_str(" <b>Bottleneck:</b> none: no bound saturated."),
    }
    h.push_str("</div>\n");
}

fn findings(h: &mut String, report: &Value) {
    h.push_str("<h2>Findings</h2>\n");
    let f = findings_of(report);
    if f.is_empty() {
        h.push_str("<p>None: nothing was lost, no bound saturated, nothing slowed, every bound had 2× headroom.</p>\n");
        return;
    }
    h.push_str(
        "<table><tr><th>id</th><th>severity</th><th>category</th><th>finding and evidence</th>\
         <th>where</th><th>what to change</th></tr>\n",
    );
    for x in f {
        let sev = esc(&text(&x["severity"]));
        let mut what = format!("<b>{}</b><br>{}", prose(&text(&x["title"])), prose(&text(&x["evidence"])));
        if x["bottleneck"] == true {
            what.push_str("<br><b>The bottleneck:</b> the bound that saturated first.");
        }
        if let Some(c) = x["cause"].as_str() {
            let _ = write!(what, "<br><i>{}</i>", prose(c));
        }
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td><span class=\"sev {sev}\">{sev}</span></td><td>{}</td><td>{what}</td>\
             <td>{}</td><td>{}</td></tr>",
            esc(&text(&x["id"])),
            esc(&text(&x["category"])),
            x["source"].as_str().map_or("—".into(), |s| format!("<code>{}</code>", esc(s))),
            prose(&text(&x["change"]))
        );
    }
    h.push_str("</table>\n");
}

fn headroom(h: &mut String, report: &Value) {
    h.push_str("<h2>Headroom</h2>\n<p class=\"muted\">Each bound's peak use over the run: the first to reach 100% breaks first as load grows.</p>\n");
    let rows = report["headroom"].as_array().map_or(&[][..], Vec::as_slice);
    if rows.is_empty() {
        h.push_str("<p>No bounded primitive recorded a second in this span.</p>\n");
        return;
    }
    h.push_str("<table><tr><th>primitive</th><th>bound</th><th>peak use</th><th>at</th><th>headroom</th></tr>\n");
    for r in rows {
        let _ = writeln!(
            h,
            "<tr><td>{} <code>{}</code></td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">t={} s</td><td class=\"n\">{}</td></tr>",
            esc(&text(&r["section"])),
            esc(&text(&r["name"])),
            esc(&text(&r["bound"])),
            r["peak_use"].as_f64().map_or("—".into(), |v| fmt_value("ratio", v)),
            r["peak_at_seconds"],
            r["headroom"].as_f64().map_or("—".into(), |v| format!("{v:.1}×"))
        );
    }
    h.push_str("</table>\n");
}

fn configuration(h: &mut String, report: &Value) {
    h.push_str("<h2>Configuration</h2>\n");
    let rows = report["configuration"].as_array().map_or(&[][..], Vec::as_slice);
    h.push_str("<table><tr><th>kind</th><th>name</th><th>settings</th><th>source</th><th>crash exposure (items)</th></tr>\n");
    for r in rows {
        let settings = r["settings"].as_object().map_or(String::new(), |m| {
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("{}={}", esc(k), esc(&text(v))))
                .collect::<Vec<_>>()
                .join(", ")
        });
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td><code>{}</code></td><td>{settings}</td><td>{}</td><td class=\"n\">{}</td></tr>",
            esc(&text(&r["kind"])),
            esc(&text(&r["name"])),
            r["source"].as_str().map_or("—".into(), |s| format!("<code>{}</code>", esc(s))),
            esc(&text(&r["crash_exposure_items"]))
        );
    }
    h.push_str("</table>\n");
    let c = &report["crash_exposure"];
    if c.is_object() {
        let _ = writeln!(
            h,
            "<p>Crash exposure: at most <b>{}</b> accepted items are held in memory at once (what a crash would lose).</p>",
            esc(&text(&c["items"]))
        );
    }
}

fn profiles(h: &mut String, report: &Value) {
    h.push_str("<h2>Profiles</h2>\n");
    let p = &report["profiles"];
    let cpu = &p["cpu"];
    if cpu.is_object() {
        let _ = writeln!(
            h,
            "<h3>CPU: {} samples over {:.1} s from t={} s</h3>",
            cpu["samples"],
            cpu["seconds"].as_f64().unwrap_or(0.0),
            cpu["started_at_seconds"]
        );
        for (key, title) in [("top_flat", "by own samples (flat)"), ("top_cum", "by samples including callees (cum)")] {
            let _ = writeln!(h, "<table><tr><th>top 10 {title}</th><th>samples</th><th>share</th></tr>");
            for r in cpu[key].as_array().map_or(&[][..], Vec::as_slice) {
                let _ = writeln!(
                    h,
                    "<tr><td><code>{}</code></td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                    esc(&text(&r["function"])),
                    r["samples"],
                    r["share"].as_f64().map_or("—".into(), |v| format!("{:.1}%", v * 100.0))
                );
            }
            h.push_str("</table>\n");
        }
    } else {
        h.push_str("<p class=\"muted\">No CPU profile ran inside this span (<code>/debug/pprof/profile?seconds=N</code> during the run).</p>\n");
    }
    let heap = &p["heap"];
    if let Some(rows) = heap["top_growth"].as_array() {
        let _ = writeln!(
            h,
            "<h3>Heap: live bytes {} → {} between t={} s and t={} s ({} profiles)</h3>",
            fmt_value("bytes", heap["live_bytes_before"].as_f64().unwrap_or(0.0)),
            fmt_value("bytes", heap["live_bytes_after"].as_f64().unwrap_or(0.0)),
            heap["from_at_seconds"],
            heap["to_at_seconds"],
            heap["profiles"]
        );
        h.push_str("<table><tr><th>allocation site</th><th>before</th><th>after</th><th>growth</th></tr>\n");
        for r in rows {
            let b = |k: &str| fmt_value("bytes", r[k].as_f64().unwrap_or(0.0));
            let _ = writeln!(
                h,
                "<tr><td><code>{}</code></td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(&text(&r["function"])),
                b("bytes_before"),
                b("bytes_after"),
                b("growth_bytes")
            );
        }
        h.push_str("</table>\n");
    } else if let Some(rows) = heap["top_live"].as_array() {
        let _ = writeln!(
            h,
            "<h3>Heap: {} live at t={} s (one heap profile in the span: no growth to compare)</h3>",
            fmt_value("bytes", heap["live_bytes_after"].as_f64().unwrap_or(0.0)),
            heap["to_at_seconds"]
        );
        h.push_str("<table><tr><th>allocation site</th><th>live</th><th>share</th></tr>\n");
        for r in rows {
            let _ = writeln!(
                h,
                "<tr><td><code>{}</code></td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(&text(&r["function"])),
                fmt_value("bytes", r["bytes"].as_f64().unwrap_or(0.0)),
                r["share"].as_f64().map_or("—".into(), |v| format!("{:.1}%", v * 100.0))
            );
        }
        h.push_str("</table>\n");
    } else {
        h.push_str("<p class=\"muted\">No heap profile was taken inside this span (<code>/debug/pprof/heap</code>, twice, for growth).</p>\n");
    }
}

/// The order sections are plotted in, and their singular names.
const SECTIONS: &[(&str, &str)] = &[
    ("queues", "queue"),
    ("pools", "pool"),
    ("resources", "connection pool"),
    ("semaphores", "semaphore"),
    ("locks", "lock"),
    ("batchers", "batcher"),
    ("hot_paths", "hot path"),
    ("http_routes", "route"),
    ("runtimes", "runtime"),
    ("process", "process"),
    ("tasks", "tasks"),
];

fn plots(h: &mut String, report: &Value, timeline: &Value) {
    h.push_str("<h2>Timelines</h2>\n");
    let seconds = super::report::timeline_seconds(timeline);
    let Some(&t0) = seconds.first() else {
        h.push_str("<p>No seconds recorded in this span.</p>\n");
        return;
    };
    let x_max = (seconds.last().copied().unwrap_or(t0) - t0).max(1) as f64;
    let phases: Vec<(f64, String)> = report["run"]["phases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["start_at_seconds"].as_f64()?, p["name"].as_str()?.to_owned())))
        .collect();
    if !phases.is_empty() {
        let _ = writeln!(
            h,
            "<p class=\"muted\">Dashed lines mark the k6 phases: {}.</p>",
            phases
                .iter()
                .map(|(x, n)| format!("<b>{}</b> at t={x:.0} s", esc(n)))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    // Drawn where they fall on the plots' axis: a phase that began a moment before the first
    // recorded second is drawn at its start.
    let marks: Vec<(f64, String)> = phases
        .iter()
        .filter(|(x, _)| (-2.0..=x_max).contains(x))
        .map(|(x, n)| (x.max(0.0), n.clone()))
        .collect();
    let mut moved: Vec<(usize, &Value, Vec<Option<f64>>)> = Vec::new();
    for s in timeline["series"].as_array().into_iter().flatten() {
        let values: Vec<Option<f64>> = s["values"].as_array().into_iter().flatten().map(Value::as_f64).collect();
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.iter().flatten() {
            lo = lo.min(*v);
            hi = hi.max(*v);
        }
        if !(hi > lo || hi > 0.0) {
            continue;
        }
        let order = SECTIONS
            .iter()
            .position(|(k, _)| s["section"] == *k)
            .unwrap_or(SECTIONS.len());
        moved.push((order, s, values));
    }
    moved.sort_by(|a, b| {
        (a.0, a.1["name"].as_str(), a.1["signal"].as_str()).cmp(&(b.0, b.1["name"].as_str(), b.1["signal"].as_str()))
    });
    if moved.is_empty() {
        h.push_str("<p>No signal moved in this span.</p>\n");
        return;
    }
    h.push_str("<div class=\"plots\">\n");
    let mut left_out = Vec::new();
    for (i, (order, s, values)) in moved.iter().enumerate() {
        let section = SECTIONS.get(*order).map_or("", |(_, n)| n);
        let name = s["name"].as_str().unwrap_or("");
        let signal = s["signal"].as_str().unwrap_or("");
        let title = if section == "process" {
            format!("process: {signal}")
        } else {
            format!("{section} {name}: {signal}")
        };
        if i >= MAX_PLOTS {
            left_out.push(title);
            continue;
        }
        let unit = s["unit"].as_str().unwrap_or("count");
        let bound = match (s["section"].as_str(), signal) {
            (Some("queues"), "saturation_max") => Some(super::report::QUEUE_SATURATED),
            (Some("pools" | "runtimes"), "busy_ratio") => Some(super::report::BUSY_SATURATED),
            (Some("resources" | "semaphores"), "saturation_max") => Some(super::report::FULL),
            (Some("locks"), "wait_p99_seconds") => Some(super::report::LOCK_WAIT_SLOW),
            (Some("runtimes"), "schedule_delay_p99_seconds") => Some(super::report::DELAY_STARVED),
            _ => None,
        };
        match plot(&title, unit, bound, values, &seconds, t0, x_max, &marks) {
            Ok(svg) => {
                let _ = writeln!(h, "<div class=\"plot\" title=\"{}\">{svg}</div>", esc(&title));
            }
            Err(e) => {
                let _ = writeln!(h, "<div class=\"plot\">{}: not drawn ({})</div>", esc(&title), esc(&e.0));
            }
        }
    }
    h.push_str("</div>\n");
    if !left_out.is_empty() {
        let _ = writeln!(
            h,
            "<p class=\"muted\">{} more signals moved and are not drawn (the page keeps {MAX_PLOTS} plots): {}.</p>",
            left_out.len(),
            esc(&left_out.join(", "))
        );
    }
}

/// The points of one series, as lines broken where a second has no value, thinned to at most
/// [`MAX_POINTS`] by keeping each bucket's largest value.
fn lines(values: &[Option<f64>], seconds: &[u64], t0: u64) -> Vec<Vec<(f64, f64)>> {
    let bucket = values.len().div_ceil(MAX_POINTS).max(1);
    let mut out: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
    for (chunk_i, chunk) in values.chunks(bucket).enumerate() {
        let best = chunk
            .iter()
            .enumerate()
            .filter_map(|(j, v)| v.map(|v| (j, v)))
            .max_by(|a, b| a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal));
        match best {
            Some((j, v)) => {
                let t = seconds.get(chunk_i * bucket + j).map_or(0, |s| s - t0) as f64;
                if let Some(l) = out.last_mut() {
                    l.push((t, v));
                }
            }
            None => {
                if out.last().is_some_and(|l| !l.is_empty()) {
                    out.push(Vec::new());
                }
            }
        }
    }
    out.retain(|l| !l.is_empty());
    out
}

/// A plot could not be drawn: plotters' reason (its error type is generic over the
/// backend, so only its text is kept).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct PlotError(String);

impl PlotError {
    fn of(e: impl std::fmt::Display) -> Self {
        PlotError(e.to_string())
    }
}

#[allow(clippy::too_many_arguments)]
fn plot(
    title: &str,
    unit: &str,
    bound: Option<f64>,
    values: &[Option<f64>],
    seconds: &[u64],
    t0: u64,
    x_max: f64,
    phases: &[(f64, String)],
) -> Result<String, PlotError> {
    let segments = lines(values, seconds, t0);
    let peak = segments.iter().flatten().map(|p| p.1).fold(0.0f64, f64::max);
    let floor = segments.iter().flatten().map(|p| p.1).fold(0.0f64, f64::min);
    let y_max = if unit == "ratio" { peak.max(1.0) } else if peak > 0.0 { peak * 1.1 } else { 1.0 };
    let y_max = bound.map_or(y_max, |b| y_max.max(b * 1.1));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (PLOT_W, PLOT_H)).into_drawing_area();
        root.fill(&WHITE).map_err(PlotError::of)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 13))
            .margin(6)
            .x_label_area_size(22)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..x_max, floor..y_max)
            .map_err(PlotError::of)?;
        let fmt_y = |v: &f64| fmt_value(unit, *v);
        let fmt_x = |v: &f64| format!("{v:.0}s");
        chart
            .configure_mesh()
            .x_labels(6)
            .y_labels(4)
            .x_label_formatter(&fmt_x)
            .y_label_formatter(&fmt_y)
            .light_line_style(RGBColor(238, 240, 244))
            .bold_line_style(RGBColor(225, 228, 234))
            .label_style(("sans-serif", 10))
            .draw()
            .map_err(PlotError::of)?;
        let grey = RGBColor(130, 140, 155);
        for (x, name) in phases {
            chart
                .draw_series(DashedLineSeries::new(vec![(*x, floor), (*x, y_max)], 4, 3, grey.stroke_width(1)))
                .map_err(PlotError::of)?;
            chart
                .draw_series(std::iter::once(Text::new(name.clone(), (*x, y_max), ("sans-serif", 10).into_font().color(&grey))))
                .map_err(PlotError::of)?;
        }
        if let Some(line) = bound {
            // Where the report calls the bound saturated.
            chart
                .draw_series(DashedLineSeries::new(vec![(0.0, line), (x_max, line)], 2, 4, RGBColor(217, 115, 13).stroke_width(1)))
                .map_err(PlotError::of)?;
        }
        let blue = RGBColor(31, 95, 191);
        for seg in segments {
            if seg.len() == 1 {
                chart
                    .draw_series(std::iter::once(Circle::new(seg[0], 2, blue.filled())))
                    .map_err(PlotError::of)?;
            } else {
                chart
                    .draw_series(LineSeries::new(seg, blue.stroke_width(2)))
                    .map_err(PlotError::of)?;
            }
        }
        root.present().map_err(PlotError::of)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escaping_and_dates() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        assert_eq!(prose("`q<1>` full"), "<code>q&lt;1&gt;</code> full");
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_796_083_200), "2026-12-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn lines_break_at_gaps_and_thin_long_series() {
        let secs: Vec<u64> = (100..110).collect();
        let v = [Some(1.0), Some(2.0), None, None, Some(3.0), None, Some(4.0), Some(5.0), Some(6.0), None];
        let l = lines(&v, &secs, 100);
        assert_eq!(l, vec![vec![(0.0, 1.0), (1.0, 2.0)], vec![(4.0, 3.0)], vec![(6.0, 4.0), (7.0, 5.0), (8.0, 6.0)]]);
        let secs: Vec<u64> = (0..3600).collect();
        let v: Vec<Option<f64>> = (0..3600).map(|i| Some(if i == 1234 { 99.0 } else { 1.0 })).collect();
        let l = lines(&v, &secs, 0);
        assert_eq!(l.len(), 1);
        assert!(l[0].len() <= MAX_POINTS, "{}", l[0].len());
        assert!(l[0].contains(&(1234.0, 99.0)), "the spike survives thinning");
    }

    #[test]
    fn a_page_with_a_plot_per_moved_signal_and_no_external_reference() {
        let timeline = json!({
            "seconds": [1000, 1001, 1002, 1003],
            "series": [
                { "section": "queues", "name": "ev<ents>", "signal": "saturation_max", "unit": "ratio", "values": [0.1, 0.9, 1.0, null] },
                { "section": "pools", "name": "p", "signal": "busy_ratio", "unit": "ratio", "values": [0.0, 0.0, 0.0, 0.0] },
                { "section": "process", "name": "process", "signal": "resident_memory_bytes", "unit": "bytes", "values": [1e7, 2e7, 3e7, 3e7] },
            ],
        });
        let report = json!({
            "schema_version": 1,
            "run": { "first_second": 1000, "last_second": 1003, "seconds_recorded": 4, "binary": "svc",
                     "phases": [{ "name": "stress", "start_at_seconds": 2.0 }] },
            "findings": [{ "id": "F1", "severity": "CRITICAL", "title": "`ev<ents>` queue dropped 3 items",
                           "evidence": "e", "change": "c", "bottleneck": true, "started_at_seconds": 1 }],
            "headroom": [], "configuration": [], "profiles": {},
        });
        let page = render(&report, &timeline);
        assert_eq!(page.matches("<svg").count(), 2, "a plot per signal that moved");
        assert!(page.contains("queue ev&lt;ents&gt;: saturation_max"));
        assert!(page.contains("<code>ev&lt;ents&gt;</code> queue dropped"));
        assert!(page.contains(K6_MARKER));
        assert!(page.contains("stress"));
        for external in ["<script", "<link", " src=", "@import", "url("] {
            assert!(!page.contains(external), "{external} in the page");
        }
    }
}
