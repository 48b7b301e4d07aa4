//! The `sqlx` adapter.

use sqlx::{Database, Pool};

use super::{AcquireFailure, Resource, Source, Status};

struct Sqlx<DB: Database>(Pool<DB>);

impl<DB: Database> Source for Sqlx<DB> {
    fn status(&self) -> Status {
        let p = &self.0;
        Status::new(
            p.size() as usize,
            p.num_idle(),
            p.options().get_max_connections() as usize,
        )
    }

    fn kind(&self) -> &'static str {
        "sqlx"
    }

    fn wait_timeout(&self) -> Option<std::time::Duration> {
        Some(self.0.options().get_acquire_timeout())
    }
}

impl AcquireFailure for sqlx::Error {
    fn is_timeout(&self) -> bool {
        matches!(self, sqlx::Error::PoolTimedOut)
    }
}

impl Resource {
    /// A resource reading an sqlx pool's size, idle connections and `max_connections` at
    /// scrape time. sqlx does not count its waiters: `perfkit_resource_waiters` is absent
    /// for it. Acquire through it with `resource.acquire(pool.acquire()).await`:
    /// `Error::PoolTimedOut` counts as a timeout, every other error as an error. Queries
    /// run on `&pool` directly take a connection perfkit does not see being acquired; the
    /// pool's own size and idle figures still count it.
    #[track_caller]
    pub fn sqlx<DB: Database>(name: impl Into<String>, pool: &Pool<DB>) -> Resource {
        Resource::new(name, Sqlx(pool.clone()))
    }
}
