//! Live tracked tasks as a pprof profile (served as `/debug/pprof/goroutine`).

use super::pprof::Profile;

/// One sample per (name, spawn site) with the task count as value; the stack is the task
/// name (leaf) above its spawn site. Gzipped pprof.
pub(crate) fn pprof() -> Vec<u8> {
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
    p.encode_gzip()
}
