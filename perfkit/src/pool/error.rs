use std::fmt;

/// Why a pool could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The name is empty.
    #[error("pool name is empty")]
    EmptyName,
    /// `workers` is 0.
    #[error("pool {name:?}: workers must be at least 1")]
    ZeroWorkers {
        /// The pool's name.
        name: String,
    },
    /// `queue_capacity` is 0.
    #[error("pool {name:?}: queue_capacity must be at least 1")]
    ZeroCapacity {
        /// The pool's name.
        name: String,
    },
    /// `lanes` is 0 or above [`MAX_LANES`](super::MAX_LANES).
    #[error("pool {name:?}: lanes must be between 1 and {max}, got {lanes}")]
    BadLanes {
        /// The pool's name.
        name: String,
        /// The lane count asked for.
        lanes: usize,
        /// The most lanes a pool can have.
        max: usize,
    },
    /// `fair_every` is 0.
    #[error("pool {name:?}: fair_every must be at least 1")]
    ZeroFairEvery {
        /// The pool's name.
        name: String,
    },
    /// A warning threshold is not a fraction in (0, 1].
    #[error("pool {name:?}: warning threshold {threshold} is not in (0, 1]")]
    InvalidThreshold {
        /// The pool's name.
        name: String,
        /// The offending value.
        threshold: f64,
    },
    /// `build` was called outside a tokio runtime: the workers have nowhere to run.
    #[error("pool {name:?}: build() must be called inside a tokio runtime")]
    NoRuntime {
        /// The pool's name.
        name: String,
    },
    /// The runtime has no time driver, which `shutdown`'s deadline needs.
    #[error("pool {name:?}: the tokio runtime has timers disabled (use enable_time or enable_all)")]
    NoTimer {
        /// The pool's name.
        name: String,
    },
}

/// A job the pool did not accept, handed back.
#[non_exhaustive]
pub enum SubmitError<F> {
    /// The queue is full and the policy refuses ([`Policy::Reject`], or `try_submit` under
    /// [`Policy::Block`]). Counted in `perfkit_pool_tasks_total{outcome="rejected"}` and
    /// `perfkit_queue_rejected_total`.
    ///
    /// [`Policy::Reject`]: crate::queue::Policy::Reject
    /// [`Policy::Block`]: crate::queue::Policy::Block
    Rejected(F),
    /// The pool is shutting down or shut down.
    Closed(F),
    /// The lane does not exist.
    NoSuchLane {
        /// The job.
        job: F,
        /// The lane asked for.
        lane: usize,
        /// How many lanes the pool has.
        lanes: usize,
    },
}

impl<F> SubmitError<F> {
    /// The job that was not accepted.
    pub fn into_job(self) -> F {
        match self {
            SubmitError::Rejected(job)
            | SubmitError::Closed(job)
            | SubmitError::NoSuchLane { job, .. } => job,
        }
    }

    /// Whether the queue was full.
    pub fn is_rejected(&self) -> bool {
        matches!(self, SubmitError::Rejected(_))
    }

    /// Whether the pool is shut down.
    pub fn is_closed(&self) -> bool {
        matches!(self, SubmitError::Closed(_))
    }
}

impl<F> fmt::Display for SubmitError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Rejected(_) => f.write_str("pool queue is full; job rejected"),
            SubmitError::Closed(_) => f.write_str("pool is shut down; job not accepted"),
            SubmitError::NoSuchLane { lane, lanes, .. } => {
                write!(f, "no lane {lane}: the pool has lanes 0..{lanes}")
            }
        }
    }
}

impl<F> fmt::Debug for SubmitError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Rejected(_) => f.write_str("Rejected(..)"),
            SubmitError::Closed(_) => f.write_str("Closed(..)"),
            SubmitError::NoSuchLane { lane, lanes, .. } => f
                .debug_struct("NoSuchLane")
                .field("lane", lane)
                .field("lanes", lanes)
                .finish_non_exhaustive(),
        }
    }
}

impl<F> std::error::Error for SubmitError<F> {}
