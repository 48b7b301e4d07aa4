//! Live tracked tasks as a pprof profile (served as `/debug/pprof/goroutine`), and the
//! difference between two such counts (`?seconds=N`).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use super::encode::Profile;

/// Live tracked tasks by (name, spawn site).
pub(crate) type Counts = HashMap<(&'static str, String), i64>;

/// The live tracked tasks now.
pub(crate) fn counts() -> Counts {
    crate::task::grouped()
        .into_iter()
        .map(|(count, name, site)| ((name, site), count as i64))
        .collect()
}

/// One sample per (name, spawn site) with the task count as value; the stack is the task
/// name (leaf) above its spawn site. Gzipped pprof.
pub(crate) fn pprof() -> Vec<u8> {
    let rows = crate::task::grouped()
        .into_iter()
        .map(|(count, name, site)| (count as i64, name, site))
        .collect();
    encode(rows, None)
}

/// Tasks alive at the end minus tasks alive at the start, per (name, spawn site): a name
/// that leaks shows a positive count, one whose tasks ended a negative one; unchanged ones
/// are left out. Gzipped pprof over `span`.
pub(crate) fn delta_pprof(
    before: &Counts,
    after: &Counts,
    span: (SystemTime, Duration),
) -> Vec<u8> {
    let mut diff: HashMap<(&'static str, String), i64> = after.clone();
    for (key, n) in before {
        *diff.entry(key.clone()).or_default() -= n;
    }
    let mut rows: Vec<(i64, &'static str, String)> = diff
        .into_iter()
        .filter(|(_, n)| *n != 0)
        .map(|((name, site), n)| (n, name, site))
        .collect();
    rows.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)).then(a.2.cmp(&b.2)));
    encode(rows, Some(span))
}

fn encode(rows: Vec<(i64, &'static str, String)>, span: Option<(SystemTime, Duration)>) -> Vec<u8> {
    let mut p = Profile::new(&[("goroutine", "count")], 1);
    if let Some((start, duration)) = span {
        p.set_time(start, duration);
    }
    for (count, name, site) in rows {
        let (file, line) = match site.rsplit_once(':') {
            Some((f, l)) => (f.to_owned(), l.parse().unwrap_or(0)),
            None => (site.clone(), 0),
        };
        let leaf = p.location(name, &file, line);
        let root = p.location(&format!("spawned at {site}"), &file, line);
        p.sample(vec![leaf, root], vec![count]);
    }
    p.encode_gzip()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delta_keeps_what_changed_with_its_sign() {
        let key = |n: &'static str| (n, format!("src/{n}.rs:1"));
        let before: Counts = [(key("steady"), 3), (key("ending"), 2)]
            .into_iter()
            .collect();
        let after: Counts = [(key("steady"), 3), (key("leaking"), 5)]
            .into_iter()
            .collect();
        let gz = delta_pprof(&before, &after, (SystemTime::now(), Duration::from_secs(1)));
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut raw).unwrap();
        let text = String::from_utf8_lossy(&raw);
        assert!(
            text.contains("leaking") && text.contains("ending"),
            "{text}"
        );
        assert!(
            !text.contains("steady"),
            "unchanged counts are left out: {text}"
        );
    }
}
