//! Turning instruction addresses into function names, files and lines, and stacks of them
//! into a pprof profile and folded flame-graph lines.

use std::collections::HashMap;

use super::profile::{Line, Profile};

/// One source frame of an address; several when functions were inlined.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    pub(crate) name: String,
    pub(crate) file: String,
    pub(crate) line: u32,
}

/// A cache of resolved addresses for one profile. Dropping it clears the `backtrace`
/// crate's process-wide cache of parsed debug information too, so the memory symbolizing
/// takes (often tens of MB for a binary with debug info) does not outlive the request.
#[derive(Default)]
pub(crate) struct Symbols {
    cache: HashMap<usize, Vec<Frame>>,
}

impl Symbols {
    /// The frames at `ip`, innermost (inlined) first. `ip` is a return address or the
    /// interrupted instruction; resolution looks at the byte before it, which is in the
    /// same function either way.
    pub(crate) fn resolve(&mut self, ip: usize) -> &[Frame] {
        self.cache.entry(ip).or_insert_with(|| {
            let mut frames = Vec::new();
            backtrace::resolve(ip as *mut std::ffi::c_void, |s| {
                let name = match s.name() {
                    Some(n) => format!("{n:#}"),
                    None => format!("{ip:#x}"),
                };
                frames.push(Frame {
                    name,
                    file: s.filename().map(|f| f.display().to_string()).unwrap_or_default(),
                    line: s.lineno().unwrap_or(0),
                });
            });
            if frames.is_empty() {
                frames.push(Frame {
                    name: format!("{ip:#x}"),
                    file: String::new(),
                    line: 0,
                });
            }
            frames
        })
    }
}

impl Drop for Symbols {
    fn drop(&mut self) {
        backtrace::clear_symbol_cache();
        self.cache = HashMap::new();
        // Parsing debug information leaves many freed blocks in glibc's heap; hand them
        // back to the OS rather than keep the profile's peak resident.
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only releases free memory.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// Stacks by function name, root first, with one value per sample type.
pub(crate) type Named = Vec<(Vec<String>, Vec<i64>)>;

/// Adds `stacks` (leaf first, with one value per sample type) to `profile`, dropping from
/// each stack's leaf end the frames `strip` matches. Returns the same stacks by function
/// name, root first, merged where the names agree: what a flame graph or a top list needs.
pub(crate) fn add_stacks(
    profile: &mut Profile,
    symbols: &mut Symbols,
    stacks: &[(Vec<usize>, Vec<i64>)],
    strip: &dyn Fn(&str) -> bool,
) -> Named {
    let mut named: HashMap<Vec<String>, Vec<i64>> = HashMap::new();
    for (ips, values) in stacks {
        let mut locations = Vec::with_capacity(ips.len());
        let mut names: Vec<String> = Vec::new();
        let mut stripping = true;
        for &ip in ips {
            let frames = symbols.resolve(ip);
            let skip = if stripping {
                frames.iter().take_while(|f| strip(&f.name)).count()
            } else {
                0
            };
            if skip == frames.len() {
                continue; // the whole location is allocator or profiler plumbing
            }
            let kept = &frames[skip..];
            stripping = false;
            let lines: Vec<Line<'_>> = kept
                .iter()
                .map(|f| (f.name.as_str(), f.file.as_str(), i64::from(f.line)))
                .collect();
            // A location trimmed at the leaf is a different location from the whole one.
            let key = if skip > 0 { ip as u64 | 1 << 63 } else { ip as u64 };
            locations.push(profile.location_at(key, &lines));
            names.extend(kept.iter().map(|f| f.name.clone()));
        }
        if locations.is_empty() {
            continue;
        }
        profile.sample(locations, values.clone());
        names.reverse();
        let sum = named.entry(names).or_insert_with(|| vec![0; values.len()]);
        for (s, v) in sum.iter_mut().zip(values) {
            *s += v;
        }
    }
    let mut out: Vec<_> = named.into_iter().collect();
    out.sort();
    out
}

/// Folded flame-graph lines (`root;...;leaf value`) from named stacks, taking the value at
/// `index` and leaving out stacks where it is zero.
pub(crate) fn folded(stacks: &Named, index: usize) -> Vec<(String, i64)> {
    stacks
        .iter()
        .filter_map(|(names, values)| {
            let v = values.get(index).copied().unwrap_or(0);
            (v > 0).then(|| {
                let names: Vec<String> = names.iter().map(|n| n.replace(';', ":")).collect();
                (names.join(";"), v)
            })
        })
        .collect()
}

/// An SVG flame graph of folded lines.
pub(crate) fn flamegraph(title: &str, count_name: &str, folded: &[(String, i64)]) -> Result<Vec<u8>, String> {
    let lines: Vec<String> = folded.iter().map(|(stack, v)| format!("{stack} {v}")).collect();
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = title.to_owned();
    opts.count_name = count_name.to_owned();
    let mut svg = Vec::new();
    if lines.is_empty() {
        // inferno refuses empty input; an empty graph with the title says the same.
        opts.subtitle = Some("no samples".to_owned());
        return inferno::flamegraph::from_lines(&mut opts, ["no-samples 1"], &mut svg)
            .map(|()| svg)
            .map_err(|e| e.to_string());
    }
    inferno::flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), &mut svg)
        .map(|()| svg)
        .map_err(|e| e.to_string())
}
