//! What jemalloc's sampling heap profiler costs allocation-heavy code.
//!
//! This bench binary installs jemalloc with `perfkit::jemalloc_profiling!()`, as a service
//! does for `/debug/pprof/heap`, and switches sampling at run time through jemalloc's
//! `prof.active`, so both ids run in the same process on the same allocator:
//! * `jemalloc` — profiling compiled in, sampling off (the baseline);
//! * `jemalloc_prof_19` — sampling on at the macro's rate (one sample per 512 KiB).
//!
//! One iteration allocates and frees 1 000 vectors of 16 B to 4 KiB, touching each.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

perfkit::jemalloc_profiling!();

fn set_sampling(on: bool) {
    // SAFETY: "prof.active" is a documented writable bool when jemalloc runs with prof:true.
    unsafe { tikv_jemalloc_ctl::raw::write(b"prof.active\0", on) }
        .expect("jemalloc runs with prof:true");
}

fn churn() {
    let mut size = 16usize;
    for _ in 0..1_000 {
        let mut v = Vec::<u8>::with_capacity(size);
        v.push(1);
        black_box(&v);
        size = if size >= 4096 { 16 } else { size * 2 };
    }
}

fn heap_profiler(c: &mut Criterion) {
    let mut g = c.benchmark_group("heap_profiler");
    set_sampling(false);
    g.bench_function("jemalloc", |b| b.iter(churn));
    set_sampling(true);
    g.bench_function("jemalloc_prof_19", |b| b.iter(churn));
    g.finish();
}

criterion_group!(benches, heap_profiler);
criterion_main!(benches);
