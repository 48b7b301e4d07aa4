//! What perfkit's own memory management tells valgrind's memcheck.
//!
//! The pool's job cells circulate on perfkit's free lists ([`crate::pool`]'s recycler) and
//! the live-task table's slots are reused in place, so to memcheck a cell or slot that was
//! given back still looks allocated: a use after release, or a release twice, would go
//! unseen. Built with `--cfg perfkit_memcheck` (x86_64), these functions issue valgrind's
//! client requests (the ones `memcheck.h` defines as `VALGRIND_MAKE_MEM_NOACCESS`,
//! `_UNDEFINED`, `VALGRIND_CHECK_MEM_IS_ADDRESSABLE` and `VALGRIND_DISABLE_ERROR_REPORTING`)
//! so a released cell is off limits until it is handed out again. A client request is a
//! no-op sequence of instructions when the program does not run under valgrind.
//!
//! Without the cfg every function here is an empty `#[inline(always)]` one: nothing is
//! compiled in.

#[cfg(all(perfkit_memcheck, target_arch = "x86_64"))]
mod imp {
    /// `VG_USERREQ_TOOL_BASE('M', 'C')`: memcheck's requests.
    const MEMCHECK: usize = ((b'M' as usize) << 24) | ((b'C' as usize) << 16);
    const MAKE_MEM_NOACCESS: usize = MEMCHECK;
    const MAKE_MEM_UNDEFINED: usize = MEMCHECK + 1;
    const CHECK_MEM_IS_ADDRESSABLE: usize = MEMCHECK + 4;
    /// `VG_USERREQ__CHANGE_ERR_DISABLEMENT`, a core request.
    const CHANGE_ERR_DISABLEMENT: usize = 0x1801;

    /// Issues client request `request` with two arguments; `default` when not under
    /// valgrind.
    #[inline(always)]
    fn request(request: usize, a1: usize, a2: usize, default: usize) -> usize {
        let args: [usize; 6] = [request, a1, a2, 0, 0, 0];
        let mut result = default;
        // SAFETY: valgrind's amd64 client request sequence (valgrind.h). Natively it changes
        // nothing: `rdi` is rotated by 3 + 13 + 61 + 51 = 128 bits, back to itself (only the
        // flags change, which asm! assumes by default), and `rbx` is exchanged with itself.
        // Under valgrind the sequence is recognised: valgrind reads the six words at `rax`
        // (kept alive and readable here) and writes its answer to `rdx`.
        unsafe {
            core::arch::asm!(
                "rol rdi, 3",
                "rol rdi, 13",
                "rol rdi, 61",
                "rol rdi, 51",
                "xchg rbx, rbx",
                inout("rdx") result,
                in("rax") args.as_ptr(),
                options(nostack),
            );
        }
        result
    }

    #[inline(always)]
    pub(crate) fn no_access(ptr: *const u8, len: usize) {
        request(MAKE_MEM_NOACCESS, ptr as usize, len, 0);
    }

    #[inline(always)]
    pub(crate) fn undefined(ptr: *const u8, len: usize) {
        request(MAKE_MEM_UNDEFINED, ptr as usize, len, 0);
    }

    #[inline(always)]
    pub(crate) fn check_addressable(ptr: *const u8, len: usize) {
        request(CHECK_MEM_IS_ADDRESSABLE, ptr as usize, len, 0);
    }

    #[inline(always)]
    pub(crate) fn errors_off() {
        request(CHANGE_ERR_DISABLEMENT, 1, 0, 0);
    }

    #[inline(always)]
    pub(crate) fn errors_on() {
        request(CHANGE_ERR_DISABLEMENT, (-1isize) as usize, 0, 0);
    }
}

#[cfg(not(all(perfkit_memcheck, target_arch = "x86_64")))]
mod imp {
    #[inline(always)]
    pub(crate) fn no_access(_: *const u8, _: usize) {}
    #[inline(always)]
    pub(crate) fn undefined(_: *const u8, _: usize) {}
    #[inline(always)]
    pub(crate) fn check_addressable(_: *const u8, _: usize) {}
    #[inline(always)]
    pub(crate) fn errors_off() {}
    #[inline(always)]
    pub(crate) fn errors_on() {}
}

/// Released: memcheck reports any access to these bytes until [`handed_out`].
#[inline(always)]
pub(crate) fn released(ptr: *const u8, len: usize) {
    imp::no_access(ptr, len);
}

/// Handed out again: the bytes may be written; reading them before that is reported.
#[inline(always)]
pub(crate) fn handed_out(ptr: *const u8, len: usize) {
    imp::undefined(ptr, len);
}

/// Reports (once) if any of these bytes is not addressable: a release of something
/// already released.
#[inline(always)]
pub(crate) fn must_be_held(ptr: *const u8, len: usize) {
    imp::check_addressable(ptr, len);
}

/// Runs `f` with memcheck's error reporting off on this thread: for speculative reads that
/// are validated afterwards (a seqlock-style read of a slot that may be released meanwhile).
#[inline(always)]
pub(crate) fn unchecked<T>(f: impl FnOnce() -> T) -> T {
    struct On;
    impl Drop for On {
        #[inline(always)]
        fn drop(&mut self) {
            imp::errors_on();
        }
    }
    imp::errors_off();
    let _on = On;
    f()
}
