//! The objects the dynamic loader has mapped, read with `dl_iterate_phdr`: the one walk of
//! their program headers that the sampler (which code is unsafe to unwind through) and the
//! symbolizer (which object an address is in, and where its file begins) share.

use std::ffi::{CStr, c_int, c_void};

#[cfg(target_pointer_width = "64")]
type Phdr = libc::Elf64_Phdr;
#[cfg(target_pointer_width = "32")]
type Phdr = libc::Elf32_Phdr;

/// One loaded object, as the loader describes it during the walk.
pub(crate) struct Object<'a> {
    /// Its path as the loader has it: empty for the main executable.
    pub(crate) name: &'a str,
    /// The load bias: a segment's virtual address plus this is where it is in memory.
    pub(crate) bias: usize,
    headers: &'a [Phdr],
}

impl Object<'_> {
    /// The executable `PT_LOAD` segments: (start, end) in memory and the file offset.
    pub(crate) fn executable_segments(&self) -> impl Iterator<Item = (usize, usize, u64)> + '_ {
        self.headers
            .iter()
            .filter(|ph| ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_X != 0)
            .map(|ph| {
                let start = self.bias + ph.p_vaddr as usize;
                // The offset is a u32 on 32-bit targets.
                #[allow(clippy::useless_conversion)]
                let offset = u64::from(ph.p_offset);
                (start, start + ph.p_memsz as usize, offset)
            })
    }
}

/// Calls `f` with every object the loader has mapped, the main executable first. `f` must
/// not panic: it runs inside the loader's callback, where unwinding aborts the process.
pub(crate) fn for_each<F: FnMut(&Object<'_>)>(mut f: F) {
    unsafe extern "C" fn each<G: FnMut(&Object<'_>)>(
        info: *mut libc::dl_phdr_info,
        _: libc::size_t,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: dl_iterate_phdr passes valid info for the duration of the call.
        let info = unsafe { &*info };
        // SAFETY: `data` is the `G` handed to dl_iterate_phdr below, borrowed only here.
        let f = unsafe { &mut *(data as *mut G) };
        let name = if info.dlpi_name.is_null() {
            ""
        } else {
            // SAFETY: a NUL-terminated path the loader owns for the duration of the call.
            unsafe { CStr::from_ptr(info.dlpi_name) }
                .to_str()
                .unwrap_or("")
        };
        let headers: &[Phdr] = if info.dlpi_phdr.is_null() {
            &[]
        } else {
            // SAFETY: dlpi_phdr points at dlpi_phnum headers the loader owns for the
            // duration of the call, and `headers` does not outlive it.
            unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) }
        };
        f(&Object {
            name,
            bias: info.dlpi_addr as usize,
            headers,
        });
        0
    }
    // SAFETY: the callback reads only what the loader hands it and calls `f`, which lives
    // on this frame until the walk returns.
    unsafe { libc::dl_iterate_phdr(Some(each::<F>), &mut f as *mut F as *mut c_void) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_main_executable_comes_first_and_holds_this_function() {
        let here = the_main_executable_comes_first_and_holds_this_function as *const () as usize;
        let mut seen = Vec::new();
        for_each(|o| {
            let holds = o
                .executable_segments()
                .any(|(lo, hi, _)| (lo..hi).contains(&here));
            seen.push((o.name.to_owned(), holds, o.executable_segments().count()));
        });
        assert!(
            seen.len() >= 2,
            "the executable and at least libc: {seen:?}"
        );
        assert_eq!(seen[0].0, "", "{seen:?}");
        assert!(seen[0].1, "this function is in the executable: {seen:?}");
        assert_eq!(seen.iter().filter(|s| s.1).count(), 1, "{seen:?}");
        assert!(
            seen.iter().any(|s| s.0.contains("libc.so") && s.2 > 0),
            "libc has an executable segment: {seen:?}"
        );
    }
}
