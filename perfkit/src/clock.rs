//! The clock perfkit timestamps with: quanta's TSC-based clock where the TSC is usable
//! (a raw read is a single `rdtsc`, ~7-10 ns here, against ~25-30 ns for `Instant::now()`),
//! falling back to the OS monotonic clock elsewhere. Raw readings are scaled to nanoseconds
//! only when a duration is needed, off the hot path where possible.

use std::sync::OnceLock;

fn clock() -> &'static quanta::Clock {
    static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();
    CLOCK.get_or_init(quanta::Clock::new)
}

/// A raw, unscaled reading. Only differences between two readings mean anything.
#[inline]
pub(crate) fn raw() -> u64 {
    clock().raw()
}

/// Nanoseconds between two raw readings (0 if `end` is before `start`).
#[inline]
pub(crate) fn nanos_between(start: u64, end: u64) -> u64 {
    clock().delta_as_nanos(start, end)
}

/// Milliseconds since the first call, for coarse rate limiting.
pub(crate) fn millis() -> u64 {
    static START: OnceLock<u64> = OnceLock::new();
    let start = *START.get_or_init(raw);
    nanos_between(start, raw()) / 1_000_000
}
