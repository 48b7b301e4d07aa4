//! Criterion benchmarks for perfkit live in `benches/`; this library is empty.
