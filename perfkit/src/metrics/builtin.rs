//! The registry every service gets: the built-in collectors (the process's figures and the
//! counting allocator's) registered like any primitive's, and the process-wide instance.
//! Here rather than in the registry, which knows only the collector contract.

use std::sync::{Arc, OnceLock};

use super::process::ProcessCollector;
use super::registry::Registry;

impl Registry {
    /// A registry with the default cardinality cap and the built-in collectors: the
    /// process's `process_*` figures (and their 10 s peaks) and the counting allocator's
    /// heap figures when it is installed.
    pub fn new() -> Self {
        let r = Registry::bare();
        r.register_owned("process".into(), Arc::new(ProcessCollector::new()));
        r.register_owned("alloc".into(), Arc::new(crate::alloc::AllocCollector));
        r
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

/// The process-wide registry every perfkit primitive records into and the debug server
/// renders.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::new)
}
