//! A minimal writer for the pprof protobuf format (`profile.proto`), gzipped, as
//! `go tool pprof` reads it. Only what perfkit's profiles need: sample types, samples with
//! stacks and values, mappings, locations with their address and lines, functions and the
//! string table.

// Some writers (named locations, a delta's span) only serve the debug server's profiles.
#![cfg_attr(not(feature = "server"), allow(dead_code))]

use std::collections::HashMap;
use std::io::Write;

/// A profile under construction.
pub(crate) struct Profile {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    sample_types: Vec<(i64, i64)>,
    functions: Vec<(i64, i64, i64, i64)>, // name, system name, filename, start line
    function_ids: HashMap<(String, String), u64>,
    locations: Vec<Location>,
    /// (start, limit, file offset, filename)
    mappings: Vec<(u64, u64, u64, i64)>,
    /// Mapping ids by the caller's key for the object (an index of loaded objects).
    #[cfg_attr(
        not(any(feature = "cpu-profiling", feature = "heap-profiling")),
        allow(dead_code)
    )]
    mapping_ids: HashMap<usize, Option<u64>>,
    location_ids: HashMap<(u64, i64), u64>,
    #[cfg_attr(
        not(any(feature = "cpu-profiling", feature = "heap-profiling")),
        allow(dead_code)
    )]
    keyed_locations: HashMap<u64, u64>,
    samples: Vec<(Vec<u64>, Vec<i64>)>,
    period_type: (i64, i64),
    period: i64,
    time_nanos: i64,
    duration_nanos: i64,
    comments: Vec<i64>,
    default_sample_type: i64,
}

/// A location: an instruction address in a mapping (0: none), and its lines as (function
/// id, line number), innermost first.
struct Location {
    address: u64,
    mapping: u64,
    lines: Vec<(u64, i64)>,
}

/// One line of a location: function name, its system (full) name, file and line number.
#[cfg_attr(
    not(any(feature = "cpu-profiling", feature = "heap-profiling")),
    allow(dead_code)
)]
pub(crate) type Line<'a> = (&'a str, &'a str, &'a str, i64);

#[cfg(any(feature = "cpu-profiling", feature = "heap-profiling"))]
/// A profile mapping: the addresses an object's code spans and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mapping {
    pub(crate) start: u64,
    pub(crate) limit: u64,
    pub(crate) offset: u64,
    pub(crate) file: String,
}

impl Profile {
    /// An empty profile whose samples carry one value per `(type, unit)` pair. The period
    /// type is the first sample type until [`Profile::set_period`] says otherwise.
    pub(crate) fn new(sample_types: &[(&str, &str)], period: i64) -> Self {
        let mut p = Profile {
            strings: vec![String::new()],
            string_ids: HashMap::from([(String::new(), 0)]),
            sample_types: Vec::new(),
            functions: Vec::new(),
            function_ids: HashMap::new(),
            locations: Vec::new(),
            mappings: Vec::new(),
            mapping_ids: HashMap::new(),
            location_ids: HashMap::new(),
            keyed_locations: HashMap::new(),
            samples: Vec::new(),
            period_type: (0, 0),
            period,
            time_nanos: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
            duration_nanos: 0,
            comments: Vec::new(),
            default_sample_type: 0,
        };
        p.sample_types = sample_types
            .iter()
            .map(|(t, u)| (p.string(t), p.string(u)))
            .collect();
        p.period_type = p.sample_types.first().copied().unwrap_or((0, 0));
        p
    }

    #[cfg(any(feature = "cpu-profiling", feature = "heap-profiling"))]
    /// Sets the period's type and value (e.g. `("cpu", "nanoseconds")`, 10 101 010).
    pub(crate) fn set_period(&mut self, (t, u): (&str, &str), period: i64) {
        self.period_type = (self.string(t), self.string(u));
        self.period = period;
    }

    /// When the profile started and how long it covers.
    pub(crate) fn set_time(&mut self, start: std::time::SystemTime, duration: std::time::Duration) {
        self.time_nanos = start
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        self.duration_nanos = i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX);
    }

    #[cfg(feature = "heap-profiling")]
    /// The sample type `go tool pprof` shows unless told otherwise.
    pub(crate) fn set_default_sample_type(&mut self, t: &str) {
        self.default_sample_type = self.string(t);
    }

    #[cfg(any(feature = "cpu-profiling", feature = "heap-profiling"))]
    /// The id of the mapping for the loaded object known by `key`, created on first use
    /// from `describe` (`None`: no mapping). Mappings are marked as already symbolized, so
    /// `go tool pprof` shows the file and does not try to symbolize on its own.
    pub(crate) fn mapping(
        &mut self,
        key: usize,
        describe: impl FnOnce() -> Option<Mapping>,
    ) -> Option<u64> {
        if let Some(&id) = self.mapping_ids.get(&key) {
            return id;
        }
        let id = describe().map(|m| {
            let file = self.string(&m.file);
            self.mappings.push((m.start, m.limit, m.offset, file));
            self.mappings.len() as u64
        });
        self.mapping_ids.insert(key, id);
        id
    }

    /// A free-text comment (`go tool pprof -comments`).
    pub(crate) fn comment(&mut self, c: &str) {
        let id = self.string(c);
        self.comments.push(id);
    }

    fn string(&mut self, s: &str) -> i64 {
        if let Some(&id) = self.string_ids.get(s) {
            return id;
        }
        let id = self.strings.len() as i64;
        self.strings.push(s.to_owned());
        self.string_ids.insert(s.to_owned(), id);
        id
    }

    fn function(&mut self, function: &str, system_name: &str, file: &str, line: i64) -> u64 {
        let key = (system_name.to_owned(), file.to_owned());
        if let Some(&id) = self.function_ids.get(&key) {
            return id;
        }
        let (n, sn, f) = (
            self.string(function),
            self.string(system_name),
            self.string(file),
        );
        self.functions.push((n, sn, f, line));
        let id = self.functions.len() as u64;
        self.function_ids.insert(key, id);
        id
    }

    /// The location of `function` (defined in `file`) at `line`, created on first use.
    pub(crate) fn location(&mut self, function: &str, file: &str, line: i64) -> u64 {
        let fid = self.function(function, function, file, line);
        if let Some(&id) = self.location_ids.get(&(fid, line)) {
            return id;
        }
        self.locations.push(Location {
            address: 0,
            mapping: 0,
            lines: vec![(fid, line)],
        });
        let id = self.locations.len() as u64;
        self.location_ids.insert((fid, line), id);
        id
    }

    #[cfg(any(feature = "cpu-profiling", feature = "heap-profiling"))]
    /// The location known by `key` (an instruction address), created on first use with
    /// `lines`: innermost first, the last being the function the others were inlined into.
    pub(crate) fn location_at(
        &mut self,
        key: u64,
        address: u64,
        mapping: Option<u64>,
        lines: &[Line<'_>],
    ) -> u64 {
        if let Some(&id) = self.keyed_locations.get(&key) {
            return id;
        }
        let lines = lines
            .iter()
            .map(|&(f, sn, file, line)| (self.function(f, sn, file, 0), line))
            .collect();
        self.locations.push(Location {
            address,
            mapping: mapping.unwrap_or(0),
            lines,
        });
        let id = self.locations.len() as u64;
        self.keyed_locations.insert(key, id);
        id
    }

    /// A sample: `stack` is leaf first, as in profile.proto.
    pub(crate) fn sample(&mut self, stack: Vec<u64>, values: Vec<i64>) {
        self.samples.push((stack, values));
    }

    /// The encoded, gzipped profile.
    pub(crate) fn encode_gzip(&self) -> Vec<u8> {
        let raw = self.encode();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        // Writing into a Vec cannot fail.
        let _ = gz.write_all(&raw);
        gz.finish().unwrap_or_default()
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for &(t, u) in &self.sample_types {
            message(&mut out, 1, &value_type(t, u));
        }
        for (stack, values) in &self.samples {
            let mut m = Vec::new();
            packed(&mut m, 1, stack.iter().copied());
            packed(&mut m, 2, values.iter().map(|&v| v as u64));
            message(&mut out, 2, &m);
        }
        for (i, &(start, limit, offset, file)) in self.mappings.iter().enumerate() {
            let mut m = Vec::new();
            uint(&mut m, 1, i as u64 + 1); // id
            uint(&mut m, 2, start); // memory_start
            uint(&mut m, 3, limit); // memory_limit
            uint(&mut m, 4, offset); // file_offset
            uint(&mut m, 5, file as u64); // filename
            for field in 7..=10 {
                uint(&mut m, field, 1); // has_functions, _filenames, _line_numbers, _inline_frames
            }
            message(&mut out, 3, &m);
        }
        for (i, loc) in self.locations.iter().enumerate() {
            let mut m = Vec::new();
            uint(&mut m, 1, i as u64 + 1);
            uint(&mut m, 2, loc.mapping); // mapping_id (0: none)
            uint(&mut m, 3, loc.address);
            for &(fid, line) in &loc.lines {
                let mut l = Vec::new();
                uint(&mut l, 1, fid);
                uint(&mut l, 2, line as u64);
                message(&mut m, 4, &l);
            }
            message(&mut out, 4, &m);
        }
        for (i, &(name, system_name, file, line)) in self.functions.iter().enumerate() {
            let mut m = Vec::new();
            uint(&mut m, 1, i as u64 + 1);
            uint(&mut m, 2, name as u64);
            uint(&mut m, 3, system_name as u64);
            uint(&mut m, 4, file as u64);
            uint(&mut m, 5, line as u64);
            message(&mut out, 5, &m);
        }
        for s in &self.strings {
            bytes(&mut out, 6, s.as_bytes());
        }
        uint(&mut out, 9, self.time_nanos as u64);
        uint(&mut out, 10, self.duration_nanos as u64);
        message(
            &mut out,
            11,
            &value_type(self.period_type.0, self.period_type.1),
        );
        uint(&mut out, 12, self.period as u64);
        packed(&mut out, 13, self.comments.iter().map(|&c| c as u64));
        uint(&mut out, 14, self.default_sample_type as u64);
        out
    }
}

fn value_type(t: i64, u: i64) -> Vec<u8> {
    let mut m = Vec::new();
    uint(&mut m, 1, t as u64);
    uint(&mut m, 2, u as u64);
    m
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn uint(out: &mut Vec<u8>, field: u32, v: u64) {
    if v == 0 {
        return; // proto3 default: omitted
    }
    varint(out, u64::from(field) << 3);
    varint(out, v);
}

fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    varint(out, (u64::from(field) << 3) | 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn message(out: &mut Vec<u8>, field: u32, m: &[u8]) {
    bytes(out, field, m);
}

fn packed(out: &mut Vec<u8>, field: u32, vals: impl Iterator<Item = u64>) {
    let mut b = Vec::new();
    for v in vals {
        varint(&mut b, v);
    }
    if !b.is_empty() {
        bytes(out, field, &b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_fields() {
        let mut v = Vec::new();
        varint(&mut v, 300);
        assert_eq!(v, [0xAC, 0x02]);
        let mut f = Vec::new();
        uint(&mut f, 1, 150);
        assert_eq!(f, [0x08, 0x96, 0x01]);
    }

    #[test]
    fn string_table_starts_empty_and_dedupes() {
        let mut p = Profile::new(&[("goroutine", "count")], 1);
        let a = p.location("flusher", "src/main.rs", 10);
        let b = p.location("flusher", "src/main.rs", 10);
        assert_eq!(a, b);
        assert_eq!(p.strings[0], "");
        assert_eq!(p.strings.iter().filter(|s| *s == "flusher").count(), 1);
        assert!(!p.encode_gzip().is_empty());
    }
}
