//! Turning instruction addresses into function names, files and lines, and stacks of them
//! into a pprof profile and folded flame-graph lines.
//!
//! Addresses in the main executable are resolved with the `backtrace` crate, from its DWARF
//! when it has some (function, file, line, inlined frames), else from its symbol table.
//! Addresses in shared objects (libc, libgcc_s, ...) are resolved from ELF symbol tables
//! only: the object's own and, when the system has its separate debug file
//! (`/usr/lib/debug/.build-id/..`, e.g. Debian's `libc6-dbg`), that file's complete one. Their
//! DWARF is never parsed: for libc that alone took about 35 MB at the peak of a profile,
//! to add file and line to frames that are not the service's code.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::encode::{Line, Mapping, Profile};

/// One source frame of an address; several when functions were inlined.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    /// The name shown: demangled, without the hash, and with `<Type as Trait>::f` written
    /// `Type::f` (see [`display_name`]).
    pub(crate) name: String,
    /// The full demangled name, without the hash: the profile's `system_name`, and what
    /// frames are recognized by (e.g. the allocator's, trimmed from heap profiles).
    pub(crate) full: String,
    pub(crate) file: String,
    pub(crate) line: u32,
}

/// The name a profile shows for a demangled `full` name: `<Type as Trait>::method` and
/// `<Type>::method` become `Type::method` (also when nested at the start), everything else
/// is kept.
///
/// `go tool pprof` simplifies names it thinks it has to demangle itself by deleting every
/// `<...>`: `<tokio::runtime::task::core::Core<T,S> as Future>::poll` and every other
/// trait method called `poll` all became `::poll`, one line in `-top`. With this name, and
/// the full form in `system_name` (so that the two differ and pprof leaves the name alone), a
/// profile reads `tokio::runtime::task::core::Core<T,S>::poll`.
pub(crate) fn display_name(full: &str) -> String {
    let mut name = full.to_owned();
    // `<A as B>::rest` and `<A>::rest` -> `A::rest`, repeatedly for `<<A as B>::C as D>::rest`.
    while name.starts_with('<') {
        let Some((close, as_at)) = impl_header(&name) else {
            break;
        };
        if !name[close + 1..].starts_with("::") {
            break;
        }
        name = format!("{}{}", &name[1..as_at.unwrap_or(close)], &name[close + 1..]);
    }
    name
}

/// For a name starting with `<`: the index of its matching `>` and of a top-level ` as `
/// inside, if any. `->` (function pointer types) is not a bracket.
fn impl_header(name: &str) -> Option<(usize, Option<usize>)> {
    let bytes = name.as_bytes();
    let mut depth = 0usize;
    let mut as_at = None;
    for i in 0..bytes.len() {
        match bytes[i] {
            b'<' => depth += 1,
            b'>' if i > 0 && bytes[i - 1] == b'-' => {}
            b'>' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some((i, as_at));
                }
            }
            b' ' if depth == 1 && as_at.is_none() && name[i..].starts_with(" as ") => {
                as_at = Some(i)
            }
            _ => {}
        }
    }
    None
}

/// A cache of resolved addresses for one profile. Dropping it clears the `backtrace`
/// crate's process-wide cache of parsed debug information too, so the memory symbolizing
/// takes (often tens of MB for a binary with debug info) does not outlive the request.
#[derive(Default)]
pub(crate) struct Symbols {
    cache: HashMap<usize, Vec<Frame>>,
    /// The loaded objects, read on first use.
    objects: Option<Vec<Loaded>>,
    /// Symbol tables of shared objects by path (`None`: unreadable).
    tables: HashMap<PathBuf, Option<SymbolTable>>,
}

/// What an address in a stack is, which decides the instruction it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Addr {
    /// A return address: the call is the instruction before it, so the byte before is
    /// looked up (the return address itself may be the next function's first byte).
    Return,
    /// An interrupted instruction (a CPU sample's leaf): looked up at its own address, which
    /// may be its function's first byte.
    #[cfg_attr(not(feature = "cpu-profiling"), allow(dead_code))]
    Exact,
}

impl Addr {
    /// The byte whose function and line an address of this kind stands for.
    pub(crate) fn probe(self, ip: usize) -> usize {
        match self {
            Addr::Return => ip.saturating_sub(1),
            Addr::Exact => ip,
        }
    }
}

impl Symbols {
    /// The frames at `ip`, innermost (inlined) first, looked up at `at.probe(ip)`.
    pub(crate) fn resolve(&mut self, ip: usize, at: Addr) -> &[Frame] {
        let probe = at.probe(ip);
        if !self.cache.contains_key(&probe) {
            let frames = self
                .in_shared_object(probe)
                .unwrap_or_else(|| in_executable(probe));
            self.cache.insert(probe, frames);
        }
        &self.cache[&probe]
    }

    /// The loaded object holding the byte `probe` (an index for [`Symbols::object`]).
    pub(crate) fn object_of(&mut self, probe: usize) -> Option<usize> {
        self.objects
            .get_or_insert_with(loaded_objects)
            .iter()
            .position(|o| o.contains(probe))
    }

    /// A loaded object found by [`Symbols::object_of`].
    pub(crate) fn object(&self, index: usize) -> Option<&Loaded> {
        self.objects.as_ref()?.get(index)
    }

    /// The frame at the byte `probe` from a shared object's symbol table; `None` when it is
    /// not in a shared object that can be read.
    fn in_shared_object(&mut self, probe: usize) -> Option<Vec<Frame>> {
        let objects = self.objects.get_or_insert_with(loaded_objects);
        let object = objects.iter().find(|o| o.contains(probe))?;
        let path = object.path.as_ref()?;
        let table = self
            .tables
            .entry(path.clone())
            .or_insert_with(|| {
                if is_vdso(path) {
                    SymbolTable::load_vdso()
                } else {
                    SymbolTable::load(path)
                }
            })
            .as_ref()?;
        let at = (probe - object.bias) as u64;
        let full = match table.lookup(at) {
            Some(raw) => format!("{:#}", backtrace::SymbolName::new(raw.as_bytes())),
            // A function the table does not list (a static one in a stripped library, such
            // as the unwinder's internals in libgcc_s): named by its object and its address
            // there, which `addr2line -e <object>` takes.
            None => unlisted(path, at),
        };
        Some(vec![Frame {
            name: display_name(&full),
            full,
            file: String::new(),
            line: 0,
        }])
    }
}

/// The name of an address no symbol covers in a shared object: `libgcc_s.so.1+0x1353b`.
fn unlisted(path: &Path, at: u64) -> String {
    let object = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    format!("{object}+{at:#x}")
}

/// The frames at the byte `probe` in the main executable (or an address nothing claims),
/// from the `backtrace` crate.
fn in_executable(probe: usize) -> Vec<Frame> {
    let mut frames = Vec::new();
    // `backtrace::resolve` looks at the byte before the address it is given.
    let ip = probe.wrapping_add(1);
    backtrace::resolve(ip as *mut std::ffi::c_void, |s| {
        let full = match s.name() {
            Some(n) => format!("{n:#}"),
            None => format!("{probe:#x}"),
        };
        frames.push(Frame {
            name: display_name(&full),
            full,
            file: s
                .filename()
                .map(|f| f.display().to_string())
                .unwrap_or_default(),
            line: s.lineno().unwrap_or(0),
        });
    });
    if frames.is_empty() {
        frames.push(Frame {
            name: format!("{probe:#x}"),
            full: format!("{probe:#x}"),
            file: String::new(),
            line: 0,
        });
    }
    frames
}

/// A loaded object: its executable segments, the bias from its file's addresses to the
/// process's, and its path (`None` for the main executable).
pub(crate) struct Loaded {
    segments: Vec<(usize, usize)>,
    bias: usize,
    /// File offset of the first executable segment.
    offset: u64,
    path: Option<PathBuf>,
}

impl Loaded {
    fn contains(&self, addr: usize) -> bool {
        self.segments
            .iter()
            .any(|&(lo, hi)| (lo..hi).contains(&addr))
    }

    /// What a profile's mapping says about this object: the addresses its executable
    /// segments span, the file offset of the first, and its path.
    pub(crate) fn mapping(&self) -> Mapping {
        let start = self.segments.iter().map(|s| s.0).min().unwrap_or(0);
        let limit = self.segments.iter().map(|s| s.1).max().unwrap_or(0);
        let file = match &self.path {
            Some(p) => p.display().to_string(),
            None => std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        };
        Mapping {
            start: start as u64,
            limit: limit as u64,
            offset: self.offset,
            file,
        }
    }
}

/// Every object the dynamic loader has mapped, with its executable segments.
fn loaded_objects() -> Vec<Loaded> {
    let mut out = Vec::new();
    super::objects::for_each(|o| {
        let mut segments = Vec::new();
        let mut offset = None;
        for (lo, hi, file_offset) in o.executable_segments() {
            segments.push((lo, hi));
            offset.get_or_insert(file_offset);
        }
        out.push(Loaded {
            segments,
            bias: o.bias,
            offset: offset.unwrap_or(0),
            // The main executable has an empty name.
            path: (!o.name.is_empty()).then(|| PathBuf::from(o.name)),
        });
    });
    out
}

/// A shared object's function symbols, sorted by address.
struct SymbolTable {
    /// (address in the file, size, symbol as written in the file)
    symbols: Vec<(u64, u64, Box<str>)>,
}

impl SymbolTable {
    /// Reads the symbol tables of `path` and of its separate debug file, if installed.
    /// Only the sections needed are read from disk.
    fn load(path: &Path) -> Option<SymbolTable> {
        let mut symbols = Vec::new();
        let build_id = read_symbols(path, &mut symbols)?;
        if let Some(id) = build_id.filter(|id| id.len() > 1) {
            let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
            let debug = PathBuf::from(format!(
                "/usr/lib/debug/.build-id/{}/{}.debug",
                &hex[..2],
                &hex[2..]
            ));
            if debug.is_file() {
                read_symbols(&debug, &mut symbols);
            }
        }
        symbols.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        symbols.dedup_by_key(|s| s.0);
        symbols.shrink_to_fit();
        Some(SymbolTable { symbols })
    }

    /// The symbols of the vDSO (`clock_gettime`, `gettimeofday`, ...), which has no file:
    /// the kernel maps its whole image into every process, so it is read from memory.
    fn load_vdso() -> Option<SymbolTable> {
        let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
        let range = maps.lines().find(|l| l.trim_end().ends_with("[vdso]"))?;
        let (lo, hi) = range.split_whitespace().next()?.split_once('-')?;
        let (lo, hi) = (
            usize::from_str_radix(lo, 16).ok()?,
            usize::from_str_radix(hi, 16).ok()?,
        );
        // SAFETY: the kernel maps the vDSO readable for the life of the process, at exactly
        // this range, and nothing writes it.
        let image = unsafe { std::slice::from_raw_parts(lo as *const u8, hi.checked_sub(lo)?) };
        let mut symbols = Vec::new();
        read_symbols_from(&object::File::parse(image).ok()?, &mut symbols);
        symbols.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        symbols.dedup_by_key(|s| s.0);
        Some(SymbolTable { symbols })
    }

    /// The function containing `addr` (an address in the file), if a symbol covers it.
    fn lookup(&self, addr: u64) -> Option<&str> {
        let i = self
            .symbols
            .partition_point(|s| s.0 <= addr)
            .checked_sub(1)?;
        let (start, size, name) = &self.symbols[i];
        (*size == 0 || addr < start + size).then_some(&**name)
    }
}

/// Adds the defined function symbols of the ELF file at `path` to `out`; returns its
/// build id (`None` inside when it has none), or `None` when it cannot be read.
fn read_symbols(path: &Path, out: &mut Vec<(u64, u64, Box<str>)>) -> Option<Option<Vec<u8>>> {
    use object::Object;
    let cache = object::ReadCache::new(std::fs::File::open(path).ok()?);
    let file = object::File::parse(&cache).ok()?;
    read_symbols_from(&file, out);
    Some(file.build_id().ok().flatten().map(<[u8]>::to_vec))
}

/// Adds the defined function symbols of `file` to `out`.
fn read_symbols_from<'d, R: object::ReadRef<'d>>(
    file: &object::File<'d, R>,
    out: &mut Vec<(u64, u64, Box<str>)>,
) {
    use object::{Object, ObjectSymbol, SymbolKind};
    for sym in file.symbols().chain(file.dynamic_symbols()) {
        if sym.kind() != SymbolKind::Text || !sym.is_definition() || sym.address() == 0 {
            continue;
        }
        let Ok(raw) = sym.name_bytes() else { continue };
        let name = String::from_utf8_lossy(raw);
        out.push((sym.address(), sym.size(), name.into()));
    }
}

/// Whether a loaded object is the vDSO, which has no file on disk.
fn is_vdso(path: &Path) -> bool {
    let name = path.to_string_lossy();
    name.starts_with("linux-vdso") || name.starts_with("linux-gate")
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
/// each stack's leaf end the frames `strip` matches. `leaf` says what each stack's first
/// address is (the interrupted instruction of a CPU sample, or a return address); the
/// others are return addresses. Returns the same stacks by function name, root first,
/// merged where the names agree: what a flame graph or a top list needs.
pub(crate) fn add_stacks(
    profile: &mut Profile,
    symbols: &mut Symbols,
    stacks: &[(Vec<usize>, Vec<i64>)],
    leaf: Addr,
    strip: &dyn Fn(&str) -> bool,
) -> Named {
    let mut named: HashMap<Vec<String>, Vec<i64>> = HashMap::new();
    for (ips, values) in stacks {
        let mut locations = Vec::with_capacity(ips.len());
        let mut names: Vec<String> = Vec::new();
        let mut stripping = true;
        for (depth, &ip) in ips.iter().enumerate() {
            let at = if depth == 0 { leaf } else { Addr::Return };
            let probe = at.probe(ip);
            let object = symbols.object_of(probe);
            let frames = symbols.resolve(ip, at).to_vec();
            let skip = if stripping {
                frames.iter().take_while(|f| strip(&f.full)).count()
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
                .map(|f| {
                    (
                        f.name.as_str(),
                        f.full.as_str(),
                        f.file.as_str(),
                        i64::from(f.line),
                    )
                })
                .collect();
            let mapping =
                object.map(|i| profile.mapping(i, || symbols.object(i).map(Loaded::mapping)));
            // One location per instruction; a location trimmed at the leaf is a different
            // location from the whole one.
            let key = if skip > 0 {
                probe as u64 | 1 << 63
            } else {
                probe as u64
            };
            locations.push(profile.location_at(key, probe as u64, mapping.flatten(), &lines));
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

/// A flame graph could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FlamegraphError(#[from] std::io::Error);

/// An SVG flame graph of folded lines.
pub(crate) fn flamegraph(
    title: &str,
    count_name: &str,
    folded: &[(String, i64)],
) -> Result<Vec<u8>, FlamegraphError> {
    let lines: Vec<String> = folded
        .iter()
        .map(|(stack, v)| format!("{stack} {v}"))
        .collect();
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = title.to_owned();
    opts.count_name = count_name.to_owned();
    let mut svg = Vec::new();
    if lines.is_empty() {
        // inferno refuses empty input; an empty graph with the title says the same.
        opts.subtitle = Some("no samples".to_owned());
        inferno::flamegraph::from_lines(&mut opts, ["no-samples 1"], &mut svg)?;
        return Ok(svg);
    }
    inferno::flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), &mut svg)?;
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_object_addresses_are_named_from_symbol_tables() {
        let mut syms = Symbols::default();
        // A return address just past the start of libc's `getpid`.
        let ip = libc::getpid as *const () as usize + 1;
        let frames = syms.resolve(ip, Addr::Return).to_vec();
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert!(frames[0].name.contains("getpid"), "{frames:?}");
        assert!(
            frames[0].file.is_empty(),
            "no DWARF is read for shared objects: {frames:?}"
        );
        // The executable's own functions still go through its own symbols.
        #[inline(never)]
        fn marker_for_the_symbolizer_test() -> usize {
            std::hint::black_box(7)
        }
        let start = marker_for_the_symbolizer_test as *const () as usize;
        let frames = syms.resolve(start + 1, Addr::Return).to_vec();
        assert!(
            frames
                .iter()
                .any(|f| f.name.contains("marker_for_the_symbolizer_test")),
            "{frames:?}"
        );
        // An interrupted first instruction is its own function's, whether in the
        // executable or in a shared object: looked up at the byte before, it would belong
        // to whatever precedes it.
        let frames = syms.resolve(start, Addr::Exact).to_vec();
        assert!(
            frames
                .iter()
                .any(|f| f.name.contains("marker_for_the_symbolizer_test")),
            "{frames:?}"
        );
        let getpid = libc::getpid as *const () as usize;
        assert!(syms.resolve(getpid, Addr::Exact)[0].name.contains("getpid"));
        assert!(
            !syms.resolve(getpid, Addr::Return)[0]
                .name
                .contains("getpid")
        );
        // The vDSO has no file; its functions are named from its image in memory. Valgrind
        // maps none into the programs it runs (the auxiliary vector has no AT_SYSINFO_EHDR):
        // then there is nothing to name, and saying so is the answer.
        // SAFETY: getauxval only reads the auxiliary vector.
        if unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) } == 0 {
            assert!(SymbolTable::load_vdso().is_none());
            assert_eq!(syms.resolve(1, Addr::Exact)[0].name, "0x1");
            return;
        }
        let vdso = SymbolTable::load_vdso().expect("a vDSO with symbols");
        assert!(
            vdso.symbols.iter().any(|s| s.2.contains("clock_gettime")),
            "{:?}",
            vdso.symbols
        );
        let (at, _, name) = vdso
            .symbols
            .iter()
            .find(|s| s.2.contains("clock_gettime"))
            .unwrap();
        let name = name.to_string();
        let bias = syms
            .objects
            .get_or_insert_with(loaded_objects)
            .iter()
            .find(|o| o.path.as_deref().is_some_and(is_vdso))
            .expect("the vDSO is a loaded object")
            .bias;
        let ip = bias + *at as usize;
        assert_eq!(syms.resolve(ip, Addr::Exact)[0].name, name);
        // Nothing claims address 1.
        assert_eq!(syms.resolve(1, Addr::Exact)[0].name, "0x1");
    }

    #[test]
    fn an_address_no_symbol_covers_is_named_by_its_object() {
        assert_eq!(
            unlisted(Path::new("/lib/x86_64-linux-gnu/libgcc_s.so.1"), 0x1353b),
            "libgcc_s.so.1+0x1353b"
        );
        // In a loaded library: the first byte of libc's first executable segment, where
        // its PLT begins, which no symbol covers (not even with Debian's libc6-dbg).
        let mut syms = Symbols::default();
        let start = syms
            .objects
            .get_or_insert_with(loaded_objects)
            .iter()
            .find(|o| {
                o.path
                    .as_deref()
                    .is_some_and(|p| p.to_string_lossy().contains("libc.so"))
            })
            .expect("libc is loaded")
            .segments[0]
            .0;
        let name = syms.resolve(start, Addr::Exact)[0].name.clone();
        assert!(
            name.starts_with("libc.so") && name.contains("+0x"),
            "an address no libc symbol covers is named by libc: {name}"
        );
    }

    #[test]
    fn trait_impls_are_named_by_their_type() {
        for (full, shown) in [
            (
                "<tokio::runtime::task::core::Core<T,S> as core::future::future::Future>::poll",
                "tokio::runtime::task::core::Core<T,S>::poll",
            ),
            ("<<A as B>::C as D>::m", "A::C::m"),
            (
                "<F as core::ops::function::FnOnce<()>>::call_once{{vtable.shim}}",
                "F::call_once{{vtable.shim}}",
            ),
            (
                "<fn() -> u8 as x::Tr>::m::{{closure}}",
                "fn() -> u8::m::{{closure}}",
            ),
            (
                "core::ptr::drop_in_place<perfkit::pool::Pool>",
                "core::ptr::drop_in_place<perfkit::pool::Pool>",
            ),
            ("<[T]>::len", "[T]::len"),
            (
                "<std::sys::thread::unix::Thread>::new::thread_start",
                "std::sys::thread::unix::Thread::new::thread_start",
            ),
            ("<unbalanced", "<unbalanced"),
            ("epoll_wait", "epoll_wait"),
        ] {
            assert_eq!(display_name(full), shown, "{full}");
        }
    }

    #[test]
    fn a_symbol_covers_only_its_own_bytes() {
        let t = SymbolTable {
            symbols: vec![(0x100, 0x10, "a".into()), (0x200, 0, "b".into())],
        };
        assert_eq!(t.lookup(0x100), Some("a"));
        assert_eq!(t.lookup(0x10f), Some("a"));
        assert_eq!(t.lookup(0x110), None);
        assert_eq!(t.lookup(0xff), None);
        assert_eq!(t.lookup(0x250), Some("b")); // no size: the nearest one before
    }
}
