//! A minimal writer for the pprof protobuf format (`profile.proto`), gzipped, as
//! `go tool pprof` reads it. Only what perfkit's profiles need: sample types, samples with
//! stacks and values, locations with one line each, functions and the string table.

use std::collections::HashMap;
use std::io::Write;

/// A profile under construction.
pub(crate) struct Profile {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    sample_types: Vec<(i64, i64)>,
    functions: Vec<(i64, i64, i64)>, // name, filename, start line
    function_ids: HashMap<(String, String), u64>,
    locations: Vec<(u64, i64)>, // function id, line
    location_ids: HashMap<(u64, i64), u64>,
    samples: Vec<(Vec<u64>, Vec<i64>)>,
    period_type: (i64, i64),
    period: i64,
    time_nanos: i64,
}

impl Profile {
    /// An empty profile whose samples carry one value per `(type, unit)` pair.
    pub(crate) fn new(sample_types: &[(&str, &str)], period: i64) -> Self {
        let mut p = Profile {
            strings: vec![String::new()],
            string_ids: HashMap::from([(String::new(), 0)]),
            sample_types: Vec::new(),
            functions: Vec::new(),
            function_ids: HashMap::new(),
            locations: Vec::new(),
            location_ids: HashMap::new(),
            samples: Vec::new(),
            period_type: (0, 0),
            period,
            time_nanos: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
        };
        p.sample_types = sample_types.iter().map(|(t, u)| (p.string(t), p.string(u))).collect();
        p.period_type = p.sample_types.first().copied().unwrap_or((0, 0));
        p
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

    /// The location of `function` (defined in `file`) at `line`, created on first use.
    pub(crate) fn location(&mut self, function: &str, file: &str, line: i64) -> u64 {
        let key = (function.to_owned(), file.to_owned());
        let fid = match self.function_ids.get(&key) {
            Some(&id) => id,
            None => {
                let (n, f) = (self.string(function), self.string(file));
                self.functions.push((n, f, line));
                let id = self.functions.len() as u64;
                self.function_ids.insert(key, id);
                id
            }
        };
        *self.location_ids.entry((fid, line)).or_insert_with(|| {
            self.locations.push((fid, line));
            self.locations.len() as u64
        })
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
        for (i, &(fid, line)) in self.locations.iter().enumerate() {
            let mut l = Vec::new();
            uint(&mut l, 1, fid);
            uint(&mut l, 2, line as u64);
            let mut m = Vec::new();
            uint(&mut m, 1, i as u64 + 1);
            message(&mut m, 4, &l);
            message(&mut out, 4, &m);
        }
        for (i, &(name, file, line)) in self.functions.iter().enumerate() {
            let mut m = Vec::new();
            uint(&mut m, 1, i as u64 + 1);
            uint(&mut m, 2, name as u64);
            uint(&mut m, 3, name as u64);
            uint(&mut m, 4, file as u64);
            uint(&mut m, 5, line as u64);
            message(&mut out, 5, &m);
        }
        for s in &self.strings {
            bytes(&mut out, 6, s.as_bytes());
        }
        uint(&mut out, 9, self.time_nanos as u64);
        message(&mut out, 11, &value_type(self.period_type.0, self.period_type.1));
        uint(&mut out, 12, self.period as u64);
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
