/// A batcher configuration that cannot be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// `max_batch` is zero.
    #[error("batcher {name:?}: max_batch must be at least 1")]
    ZeroMaxBatch {
        /// The batcher's name.
        name: String,
    },
    /// `max_delay` is zero.
    #[error("batcher {name:?}: max_delay must be greater than zero")]
    ZeroMaxDelay {
        /// The batcher's name.
        name: String,
    },
    /// The retry policy allows no attempt at all.
    #[error("batcher {name:?}: the retry policy must allow at least one attempt")]
    ZeroAttempts {
        /// The batcher's name.
        name: String,
    },
    /// The intake queue could not be built (empty name, zero `max_pending`, ...).
    #[error(transparent)]
    Queue(#[from] crate::queue::BuildError),
    /// The current tokio runtime has no timer (built without `enable_time`), which the
    /// interval trigger and the retry backoff need.
    #[error(
        "batcher {name:?}: the tokio runtime has timers disabled; build it with enable_time() or enable_all()"
    )]
    NoTimer {
        /// The batcher's name.
        name: String,
    },
    /// `build` was called outside a tokio runtime; the flusher needs one to run on.
    #[error("batcher {name:?}: build() must be called from within a tokio runtime")]
    NoRuntime {
        /// The batcher's name.
        name: String,
    },
}
