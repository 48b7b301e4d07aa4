//! A `SIGPROF` CPU sampler with memory bounded per profile and released after it.
//!
//! `setitimer(ITIMER_PROF)` makes the kernel send `SIGPROF` to the process each time it has
//! used `1/frequency` s of CPU, to the thread that was running. The handler walks that
//! thread's stack with the system unwinder and appends the addresses to an arena sized for
//! the profile's length when it starts. The handler never allocates or locks: it claims room
//! in the arena with one atomic add, and a sample that does not fit is counted as lost.
//!
//! When the profile ends, the timer stops, the arena is unpublished, and the reader waits
//! for handlers still running before it takes the arena back. The `SIGPROF` handler stays
//! installed afterwards (it returns at once when no arena is published), so a signal still
//! in flight after the timer stopped can never hit the default action, which would end the
//! process.
//!
//! Stacks interrupted inside the unwinder itself (`libgcc_s`), the dynamic loader or the
//! vDSO are recorded as their leaf address only: unwinding from there could deadlock on the
//! unwinder's own locks or read bad unwind tables.

use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::sync::Mutex;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Frames kept per sample, leaf first.
pub(crate) const MAX_DEPTH: usize = 128;

/// Words in the smallest and largest arena (one word per frame plus one per sample).
const MIN_WORDS: usize = 1 << 16;
const MAX_WORDS: usize = 1 << 23; // 64 MiB of address space; pages are touched only as used
/// Words budgeted per expected sample (typical async stacks are 20–60 frames deep).
const WORDS_PER_SAMPLE: usize = 48;

const MAX_RANGES: usize = 16;

struct Arena {
    words: Box<[AtomicUsize]>,
    next: AtomicUsize,
    samples: AtomicU64,
    lost: AtomicU64,
    leaf_only: AtomicU64,
    leaf_ranges: [(usize, usize); MAX_RANGES],
}

static ARENA: AtomicPtr<Arena> = AtomicPtr::new(std::ptr::null_mut());
static IN_HANDLER: AtomicUsize = AtomicUsize::new(0);
/// Whether perfkit's handler is installed; guards installation.
static INSTALLED: Mutex<bool> = Mutex::new(false);

/// A running profile. Stop it with [`Session::stop`]; dropping it stops it too and throws
/// the samples away (a client that disconnected mid-profile).
pub(crate) struct Session {
    arena: Option<*mut Arena>,
    started: Instant,
    start_time: SystemTime,
    frequency: u32,
    arena_bytes: usize,
}

// SAFETY: the raw pointer is owned: the session is the only one that frees the arena, and
// nothing else in it is tied to the thread that started the profile.
unsafe impl Send for Session {}

/// What a stopped profile collected: distinct stacks (leaf first) with their counts.
#[derive(Debug)]
pub(crate) struct Samples {
    pub(crate) stacks: Vec<(Vec<usize>, u64)>,
    pub(crate) samples: u64,
    pub(crate) lost: u64,
    pub(crate) leaf_only: u64,
    pub(crate) frequency: u32,
    pub(crate) start_time: SystemTime,
    pub(crate) duration: Duration,
    pub(crate) arena_bytes: usize,
}

/// Why a profile could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum StartError {
    /// Another profile is running.
    #[error("a CPU profile is already running; one runs at a time")]
    Busy,
    /// Something else owns `SIGPROF`.
    #[error("SIGPROF already has a handler in this process (another profiler?)")]
    HandlerTaken,
    /// A system call setting up the handler or the timer failed.
    #[error("{what} failed: {source}")]
    Setup {
        /// What was being done.
        what: &'static str,
        /// The system's error.
        source: std::io::Error,
    },
}

/// Starts sampling at `frequency` Hz, with room for a profile of `seconds`.
pub(crate) fn start(frequency: u32, seconds: u64) -> Result<Session, StartError> {
    install_handler()?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let expected = (frequency as usize)
        .saturating_mul(seconds as usize)
        .saturating_mul(cpus);
    let words = expected
        .saturating_mul(WORDS_PER_SAMPLE)
        .clamp(MIN_WORDS, MAX_WORDS);
    // A zeroed allocation of this size is fresh mapped memory: pages cost nothing until a
    // sample is written into them.
    let zeroed = vec![0usize; words].into_boxed_slice();
    // SAFETY: AtomicUsize has the same size, alignment and bit validity as usize.
    let words: Box<[AtomicUsize]> =
        unsafe { Box::from_raw(Box::into_raw(zeroed) as *mut [AtomicUsize]) };
    let arena_bytes = words.len() * std::mem::size_of::<usize>();
    let arena = Box::into_raw(Box::new(Arena {
        words,
        next: AtomicUsize::new(0),
        samples: AtomicU64::new(0),
        lost: AtomicU64::new(0),
        leaf_only: AtomicU64::new(0),
        leaf_ranges: leaf_only_ranges(),
    }));
    if ARENA
        .compare_exchange(
            std::ptr::null_mut(),
            arena,
            Ordering::SeqCst,
            Ordering::SeqCst,
        )
        .is_err()
    {
        // SAFETY: never published, still ours.
        drop(unsafe { Box::from_raw(arena) });
        return Err(StartError::Busy);
    }
    let session = Session {
        arena: Some(arena),
        started: Instant::now(),
        start_time: SystemTime::now(),
        frequency,
        arena_bytes,
    };
    if let Err(e) = set_timer(frequency) {
        drop(session); // unpublishes the arena
        return Err(StartError::Setup {
            what: "setitimer(ITIMER_PROF)",
            source: e,
        });
    }
    Ok(session)
}

impl Session {
    /// Stops sampling and returns what was collected.
    pub(crate) fn stop(mut self) -> Samples {
        let duration = self.started.elapsed();
        let arena = self.unpublish();
        let (stacks, next) = {
            let words = &arena.words;
            let end = arena.next.load(Ordering::Relaxed).min(words.len());
            let mut counts: HashMap<Vec<usize>, u64> = HashMap::new();
            let mut i = 0;
            while i < end {
                let n = words[i].load(Ordering::Relaxed);
                if n == 0 || i + 1 + n > end {
                    break; // cannot happen once handlers are done; stop rather than misread
                }
                let stack: Vec<usize> = words[i + 1..i + 1 + n]
                    .iter()
                    .map(|w| w.load(Ordering::Relaxed))
                    .collect();
                *counts.entry(stack).or_default() += 1;
                i += 1 + n;
            }
            (counts.into_iter().collect::<Vec<_>>(), end)
        };
        let _ = next;
        Samples {
            stacks,
            samples: arena.samples.load(Ordering::Relaxed),
            lost: arena.lost.load(Ordering::Relaxed),
            leaf_only: arena.leaf_only.load(Ordering::Relaxed),
            frequency: self.frequency,
            start_time: self.start_time,
            duration,
            arena_bytes: self.arena_bytes,
        }
    }

    /// Stops the timer, unpublishes the arena and waits until no handler can touch it.
    fn unpublish(&mut self) -> Box<Arena> {
        let _ = clear_timer();
        let ptr = self.arena.take().expect("a session unpublishes once");
        ARENA.store(std::ptr::null_mut(), Ordering::SeqCst);
        // A handler increments IN_HANDLER before it loads ARENA (both SeqCst), so once the
        // count reads zero after the store above, no handler holds the old pointer.
        while IN_HANDLER.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
        // SAFETY: created by Box::into_raw in `start`, no longer reachable by handlers.
        unsafe { Box::from_raw(ptr) }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.arena.is_some() {
            drop(self.unpublish());
        }
    }
}

fn install_handler() -> Result<(), StartError> {
    let mut installed = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
    if *installed {
        return Ok(());
    }
    // SAFETY: `sigaction` is plain data; all zeroes is a valid value of it.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: reads the current action into a valid local; sets nothing.
    if unsafe { libc::sigaction(libc::SIGPROF, std::ptr::null(), &mut old) } != 0 {
        return Err(StartError::Setup {
            what: "reading the SIGPROF handler",
            source: std::io::Error::last_os_error(),
        });
    }
    if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN {
        return Err(StartError::HandlerTaken);
    }
    // SAFETY: as above.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_sigprof as *const () as usize;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
    // SAFETY: a valid pointer to the local's signal set.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: installs a handler that is async-signal-safe (it neither allocates nor locks)
    // from a valid, fully initialised action.
    if unsafe { libc::sigaction(libc::SIGPROF, &action, std::ptr::null_mut()) } != 0 {
        return Err(StartError::Setup {
            what: "installing the SIGPROF handler",
            source: std::io::Error::last_os_error(),
        });
    }
    *installed = true;
    Ok(())
}

fn set_timer(frequency: u32) -> std::io::Result<()> {
    let micros = (1_000_000 / i64::from(frequency.max(1))).max(1);
    let tv = libc::timeval {
        tv_sec: (micros / 1_000_000) as libc::time_t,
        tv_usec: (micros % 1_000_000) as libc::suseconds_t,
    };
    itimer(tv)
}

fn clear_timer() -> std::io::Result<()> {
    itimer(libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    })
}

fn itimer(tv: libc::timeval) -> std::io::Result<()> {
    let value = libc::itimerval {
        it_interval: tv,
        it_value: tv,
    };
    // SAFETY: valid pointer to a local; the old value is not requested.
    if unsafe { libc::setitimer(libc::ITIMER_PROF, &value, std::ptr::null_mut()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

extern "C" fn on_sigprof(_: c_int, _: *mut libc::siginfo_t, context: *mut c_void) {
    // SAFETY: errno is thread-local and its location always valid on this thread.
    let errno_at = unsafe { libc::__errno_location() };
    // SAFETY: reading the interrupted code's errno, to restore it below.
    let errno = unsafe { *errno_at };
    IN_HANDLER.fetch_add(1, Ordering::SeqCst);
    let arena = ARENA.load(Ordering::SeqCst);
    if !arena.is_null() {
        // SAFETY: the arena stays allocated while IN_HANDLER is non-zero (see unpublish).
        record(unsafe { &*arena }, interrupted_pc(context));
    }
    IN_HANDLER.fetch_sub(1, Ordering::SeqCst);
    // SAFETY: restoring the interrupted code's errno at its thread-local location.
    unsafe { *errno_at = errno };
}

/// Runs inside the signal handler: no allocation, no locks.
fn record(arena: &Arena, pc: usize) {
    arena.samples.fetch_add(1, Ordering::Relaxed);
    let mut stack = [0usize; MAX_DEPTH];
    let mut n = 0;
    if pc == 0 {
        arena.lost.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if arena
        .leaf_ranges
        .iter()
        .any(|&(lo, hi)| pc >= lo && pc < hi)
    {
        stack[0] = pc;
        n = 1;
        arena.leaf_only.fetch_add(1, Ordering::Relaxed);
    } else {
        // The first frames are this handler's own and the signal trampoline; the stack of
        // interest starts at the interrupted instruction.
        let mut started = false;
        // SAFETY: the unsynchronized variant takes no lock; the unwinder reads only this
        // thread's stack and the loaded objects' unwind tables.
        unsafe {
            backtrace::trace_unsynchronized(|frame| {
                let ip = frame.ip() as usize;
                if ip == 0 {
                    return false; // the outermost frame
                }
                if !started {
                    if ip != pc {
                        return true;
                    }
                    started = true;
                }
                stack[n] = ip;
                n += 1;
                n < MAX_DEPTH
            });
        }
        if n == 0 {
            // The unwinder did not get through the signal frame: keep the leaf at least.
            stack[0] = pc;
            n = 1;
            arena.leaf_only.fetch_add(1, Ordering::Relaxed);
        }
    }
    let start = arena.next.fetch_add(n + 1, Ordering::Relaxed);
    if start.saturating_add(n + 1) > arena.words.len() {
        arena.lost.fetch_add(1, Ordering::Relaxed);
        return;
    }
    for (slot, &ip) in arena.words[start + 1..start + 1 + n]
        .iter()
        .zip(&stack[..n])
    {
        slot.store(ip, Ordering::Relaxed);
    }
    arena.words[start].store(n, Ordering::Relaxed);
}

/// The program counter of the interrupted instruction, from the signal context.
fn interrupted_pc(context: *mut c_void) -> usize {
    if context.is_null() {
        return 0;
    }
    let uc = context as *const libc::ucontext_t;
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    // SAFETY: the kernel passes a valid ucontext_t to an SA_SIGINFO handler.
    return unsafe { (*uc).uc_mcontext.gregs[libc::REG_RIP as usize] as usize };
    #[cfg(all(target_os = "linux", target_arch = "aarch64"))]
    // SAFETY: as above.
    return unsafe { (*uc).uc_mcontext.pc as usize };
    #[cfg(not(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )))]
    {
        let _ = uc;
        0
    }
}

/// Executable segments of the unwinder, the dynamic loader and the vDSO.
fn leaf_only_ranges() -> [(usize, usize); MAX_RANGES] {
    const RISKY: [&str; 6] = [
        "libgcc_s",
        "ld-linux",
        "ld64.so",
        "linux-vdso",
        "linux-gate",
        "libunwind",
    ];
    let mut ranges = [(0, 0); MAX_RANGES];
    let mut len = 0;
    super::objects::for_each(|o| {
        if !RISKY.iter().any(|k| o.name.contains(k)) {
            return;
        }
        for (lo, hi, _) in o.executable_segments() {
            if len < MAX_RANGES {
                ranges[len] = (lo, hi);
                len += 1;
            }
        }
    });
    ranges
}

/// Serializes this module's tests: the sampler is process-wide.
#[cfg(test)]
static TEST_LOCK: Mutex<()> = Mutex::new(());

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn spin(until: Instant) -> u64 {
        let mut x = 0u64;
        while Instant::now() < until {
            for i in 0..10_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
        }
        x
    }

    #[test]
    fn samples_a_busy_thread_and_frees_the_arena() {
        let _serial = TEST_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let session = start(250, 1).expect("profiler starts");
        assert!(start(250, 1).is_err(), "a second profile is refused");
        spin(Instant::now() + Duration::from_millis(400));
        let s = session.stop();
        assert!(s.samples >= 20, "{s:?}");
        assert_eq!(s.lost, 0);
        let deep = s
            .stacks
            .iter()
            .filter(|(st, _)| st.len() > 3)
            .map(|(_, c)| c)
            .sum::<u64>();
        assert!(
            deep * 2 > s.samples,
            "most samples have callers: {deep} of {}",
            s.samples
        );
        assert!(ARENA.load(Ordering::SeqCst).is_null());
        // Another profile can start after the first ended.
        drop(start(99, 1).expect("restart"));
    }
}
