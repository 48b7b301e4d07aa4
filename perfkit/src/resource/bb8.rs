//! The `bb8` adapter.

use bb8::{ManageConnection, Pool, RunError};

use super::{AcquireFailure, Resource, Source, Status};

struct Bb8<M: ManageConnection> {
    pool: Pool<M>,
    max: usize,
}

// bb8 does not expose its connection timeout either: the inventory leaves it out.

impl<M: ManageConnection> Source for Bb8<M> {
    fn status(&self) -> Status {
        let s = self.pool.state();
        Status::new(
            s.connections as usize,
            s.idle_connections as usize,
            self.max,
        )
    }

    fn kind(&self) -> &'static str {
        "bb8"
    }
}

impl<E> AcquireFailure for RunError<E> {
    fn is_timeout(&self) -> bool {
        matches!(self, RunError::TimedOut)
    }
}

impl Resource {
    /// A resource reading a bb8 pool's connections and idle connections at scrape time.
    /// bb8 does not expose its `max_size` nor count its waiters: pass the `max_size` the
    /// pool was built with; `perfkit_resource_waiters` is absent for it. Acquire through it
    /// with `resource.acquire(pool.get()).await`: `RunError::TimedOut` counts as a
    /// timeout, `RunError::User` as an error.
    #[track_caller]
    pub fn bb8<M: ManageConnection>(
        name: impl Into<String>,
        pool: &Pool<M>,
        max_size: u32,
    ) -> Resource {
        Resource::new(
            name,
            Bb8 {
                pool: pool.clone(),
                max: max_size as usize,
            },
        )
    }
}
