//! The `deadpool` adapter: any `deadpool::managed::Pool` (deadpool-postgres,
//! deadpool-sqlite, deadpool-redis, ...).

use deadpool::managed::{Manager, Object, Pool, PoolError};

use super::{AcquireFailure, Resource, Source, Status};

struct Deadpool<M: Manager, W: From<Object<M>>>(Pool<M, W>);

impl<M, W> Source for Deadpool<M, W>
where
    M: Manager + 'static,
    W: From<Object<M>> + 'static,
    Pool<M, W>: Send + Sync,
{
    fn status(&self) -> Status {
        let s = self.0.status();
        Status::new(s.size, s.available, s.max_size).with_waiters(s.waiting)
    }

    fn kind(&self) -> &'static str {
        "deadpool"
    }

    fn wait_timeout(&self) -> Option<std::time::Duration> {
        self.0.timeouts().wait
    }
}

impl<E> AcquireFailure for PoolError<E> {
    fn is_timeout(&self) -> bool {
        matches!(self, PoolError::Timeout(_))
    }
}

impl Resource {
    /// A resource reading a deadpool pool's own status (size, available, max size and
    /// waiting futures) at scrape time. Acquire through it with
    /// `resource.acquire(pool.get()).await`: `PoolError::Timeout` counts as a timeout,
    /// every other error as an error.
    ///
    /// ```ignore
    /// let db = perfkit::resource::Resource::deadpool("db", &pool);
    /// let client = db.acquire(pool.get()).await?;
    /// client.query("SELECT 1", &[]).await?;
    /// ```
    #[track_caller]
    pub fn deadpool<M, W>(name: impl Into<String>, pool: &Pool<M, W>) -> Resource
    where
        M: Manager + 'static,
        W: From<Object<M>> + 'static,
        Pool<M, W>: Send + Sync,
    {
        Resource::new(name, Deadpool(pool.clone()))
    }
}
