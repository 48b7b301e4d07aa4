//! The source layout the architecture promises: profiles live in `perfkit::profile`, and
//! the debug server only routes HTTP to them.

mod common;

use std::path::Path;

fn sources(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|x| x == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            out.push((path.display().to_string(), text));
        }
    }
    out
}

#[test]
fn no_file_under_server_samples_encodes_or_symbolizes() {
    let root = common::workspace_root().join("perfkit/src");
    // What sampling, encoding and symbolizing look like in code.
    let forbidden = [
        "Profile::new",
        "encode_gzip",
        "add_stacks",
        "sampler::",
        "Symbols",
        "backtrace::",
        "inferno::",
        "tikv_jemalloc_ctl",
        "jemalloc_pprof",
        "setitimer",
    ];
    let server = sources(&root.join("server"));
    assert!(server.len() >= 10, "{} files", server.len());
    let mut found = Vec::new();
    for (path, text) in &server {
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for f in forbidden {
                if code.contains(f) {
                    found.push(format!("{path}:{}: {f}", n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "profiling code under server/:\n{}",
        found.join("\n")
    );
    // And the profile module never reaches back into the server.
    for (path, text) in sources(&root.join("profile")) {
        assert!(!text.contains("crate::server"), "{path} imports the server");
    }
}
