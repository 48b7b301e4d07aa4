//! `perfkit::resource`: real deadpool and bb8 pools (over in-memory "connections") report
//! size, idle, bound and waiters as the pools count them; acquisitions through the wrapper
//! are timed and counted by outcome; the snapshot has the saturation a gate reads.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::entry;
use perfkit::resource::{Resource, Status};

fn value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

/// Connections numbered from 1; creating one takes `delay`, and fails when `fail` is set.
#[derive(Debug, Default)]
struct Numbers {
    next: AtomicU32,
    fail: std::sync::atomic::AtomicBool,
}

impl deadpool::managed::Manager for Numbers {
    type Type = u32;
    type Error = std::io::Error;

    async fn create(&self) -> Result<u32, std::io::Error> {
        if self.fail.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("the database is down"));
        }
        Ok(self.next.fetch_add(1, Ordering::Relaxed) + 1)
    }

    async fn recycle(
        &self,
        _: &mut u32,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<std::io::Error> {
        Ok(())
    }
}

impl bb8::ManageConnection for Numbers {
    type Connection = u32;
    type Error = std::io::Error;

    async fn connect(&self) -> Result<u32, std::io::Error> {
        Ok(self.next.fetch_add(1, Ordering::Relaxed) + 1)
    }

    async fn is_valid(&self, _: &mut u32) -> Result<(), std::io::Error> {
        Ok(())
    }

    fn has_broken(&self, _: &mut u32) -> bool {
        false
    }
}

#[test]
fn a_deadpool_pool_at_its_bound_shows_saturation_waiters_and_timeouts() {
    let registry = perfkit::metrics::registry();
    common::runtime(2).block_on(async {
        let pool = deadpool::managed::Pool::<Numbers>::builder(Numbers::default())
            .max_size(2)
            .wait_timeout(Some(Duration::from_millis(50)))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .unwrap();
        let db = Resource::deadpool("db", &pool);
        registry.tick();
        let a = db.acquire(pool.get()).await.unwrap();
        let b = db.acquire(pool.get()).await.unwrap();
        assert_eq!(**a + **b, 3, "two connections, numbered 1 and 2");
        assert_eq!(db.status(), Status::new(2, 0, 2).with_waiters(0));

        // A waiter is counted by the pool while it waits.
        let pool2 = pool.clone();
        let db2 = db.clone();
        let waiter = tokio::spawn(async move { db2.acquire(pool2.get()).await.map(|l| **l) });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let text = registry.render();
        assert_eq!(
            value(&text, "perfkit_resource_waiters{resource=\"db\"}"),
            Some(1.0),
            "{text}"
        );
        assert!(waiter.await.unwrap().is_err(), "timed out");

        let text = registry.render();
        assert_eq!(
            value(&text, "perfkit_resource_size{resource=\"db\"}"),
            Some(2.0)
        );
        assert_eq!(
            value(&text, "perfkit_resource_in_use{resource=\"db\"}"),
            Some(2.0)
        );
        assert_eq!(
            value(&text, "perfkit_resource_idle{resource=\"db\"}"),
            Some(0.0)
        );
        assert_eq!(
            value(&text, "perfkit_resource_max{resource=\"db\"}"),
            Some(2.0)
        );
        assert_eq!(
            value(&text, "perfkit_resource_waiters{resource=\"db\"}"),
            Some(0.0)
        );
        assert_eq!(
            value(&text, "perfkit_resource_in_use_max_10s{resource=\"db\"}"),
            Some(2.0)
        );
        assert_eq!(
            value(
                &text,
                "perfkit_resource_acquisitions_total{resource=\"db\"}"
            ),
            Some(2.0)
        );
        assert_eq!(
            value(&text, "perfkit_resource_timeouts_total{resource=\"db\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "perfkit_resource_errors_total{resource=\"db\"}"),
            Some(0.0)
        );
        // Two quick acquisitions and one that waited the 50 ms timeout.
        assert_eq!(
            value(
                &text,
                "perfkit_resource_acquire_seconds_count{resource=\"db\"}"
            ),
            Some(3.0)
        );

        let snap = registry.snapshot_window(10);
        let e = entry(&snap, "resources", "db");
        assert_eq!(e["kind"], "deadpool");
        assert_eq!(e["saturation"], 1.0);
        assert_eq!(e["leased"], 2);
        assert_eq!(e["window"]["saturation_max"], 1.0);
        assert_eq!(e["window"]["waiters_max"], 1);
        assert_eq!(e["window"]["timeouts"], 1);
        assert!(
            e["window"]["acquire_seconds"]["max"].as_f64().unwrap() >= 0.045,
            "{e}"
        );

        drop((a, b));
        let st = db.status();
        assert_eq!((st.size, st.idle, st.in_use()), (2, 2, 0));
        let inv = entry(&registry.inventory(), "resources", "db");
        assert_eq!(inv["max"], 2);
        assert_eq!(inv["counts_waiters"], true);
        assert_eq!(inv["wait_timeout_seconds"], 0.05);
        assert!(
            inv["source"]
                .as_str()
                .unwrap()
                .contains("resource_pools.rs"),
            "{inv}"
        );
    });
}

#[test]
fn the_deadpool_adapter_reads_the_pool_and_tells_errors_from_timeouts() {
    common::runtime(2).block_on(async {
        let pool = deadpool::managed::Pool::<Numbers>::builder(Numbers::default())
            .max_size(3)
            .runtime(deadpool::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_millis(20)))
            .build()
            .unwrap();
        let db = Resource::deadpool("adapted_db", &pool);
        let one = db.acquire(pool.get()).await.unwrap();
        assert_eq!(db.status(), Status::new(1, 0, 3).with_waiters(0));
        pool.manager().fail.store(true, Ordering::Relaxed);
        let err = db.acquire(pool.get()).await.unwrap_err();
        assert!(
            matches!(err, deadpool::managed::PoolError::Backend(_)),
            "{err:?}"
        );
        drop(one);
        let snap = perfkit::metrics::registry().snapshot();
        let e = entry(&snap, "resources", "adapted_db");
        assert_eq!(e["kind"], "deadpool");
        assert_eq!(
            (
                e["acquisitions"].as_u64(),
                e["errors"].as_u64(),
                e["timeouts"].as_u64()
            ),
            (Some(1), Some(1), Some(0))
        );
    });
}

#[test]
fn a_bb8_pool_reports_what_bb8_knows_and_no_waiters() {
    common::runtime(2).block_on(async {
        let pool = bb8::Pool::builder()
            .max_size(2)
            .connection_timeout(Duration::from_millis(50))
            .build(Numbers::default())
            .await
            .unwrap();
        let db = Resource::bb8("bb8_db", &pool, 2);
        let a = db.acquire(pool.get()).await.unwrap();
        let b = db.acquire(pool.get()).await.unwrap();
        let err = db.acquire(pool.get()).await.unwrap_err();
        assert!(matches!(err, bb8::RunError::TimedOut), "{err:?}");
        let st = db.status();
        assert_eq!((st.size, st.in_use(), st.max, st.waiters), (2, 2, 2, None));
        let text = perfkit::metrics::render();
        assert_eq!(
            value(&text, "perfkit_resource_in_use{resource=\"bb8_db\"}"),
            Some(2.0)
        );
        assert_eq!(
            value(
                &text,
                "perfkit_resource_timeouts_total{resource=\"bb8_db\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "perfkit_resource_waiters{resource=\"bb8_db\"}"),
            None,
            "bb8 does not count waiters, so there is no series"
        );
        let snap = perfkit::metrics::registry().snapshot();
        let e = entry(&snap, "resources", "bb8_db");
        assert_eq!(e["kind"], "bb8");
        assert!(e["waiters"].is_null());
        drop((a, b));
    });
}

#[test]
fn any_pool_through_a_closure_and_a_cancelled_acquisition_counts_nothing() {
    let registry = common::own_registry();
    common::runtime(2).block_on(async {
        let permits = Arc::new(tokio::sync::Semaphore::new(1));
        let p = Arc::clone(&permits);
        let res = Resource::new_in(
            "custom",
            move || Status::new(1, p.available_permits(), 1),
            registry,
        );
        let held = res
            .acquire_with(Arc::clone(&permits).acquire_owned(), |_| false)
            .await
            .unwrap();
        // A caller that gives up while waiting: neither an acquisition nor an error.
        let gave_up = tokio::time::timeout(
            Duration::from_millis(20),
            res.acquire_with(Arc::clone(&permits).acquire_owned(), |_| false),
        )
        .await;
        assert!(gave_up.is_err());
        let snap = registry.snapshot();
        let e = entry(&snap, "resources", "custom");
        assert_eq!(e["kind"], "custom");
        assert_eq!(
            (
                e["acquisitions"].as_u64(),
                e["errors"].as_u64(),
                e["acquiring"].as_u64()
            ),
            (Some(1), Some(0), Some(0))
        );
        assert_eq!(e["in_use"], 1);
        // A closed "pool": an error, not a timeout.
        permits.close();
        drop(held);
        assert!(
            res.acquire_with(Arc::clone(&permits).acquire_owned(), |_| false)
                .await
                .is_err()
        );
        let text = registry.render();
        assert_eq!(
            value(&text, "perfkit_resource_errors_total{resource=\"custom\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "perfkit_resource_waiters{resource=\"custom\"}"),
            None
        );
    });
}

#[test]
#[ignore = "needs PostgreSQL (Debian postgresql); scripts/test.sh installs it and runs ignored tests"]
fn an_sqlx_pool_on_a_real_postgres_reports_size_idle_max_and_timeouts() {
    let pg = common::postgres::Postgres::start("sqlx");
    common::runtime(2).block_on(async {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_millis(200))
            .connect(&pg.url)
            .await
            .unwrap();
        let db = Resource::sqlx("sqlx_db", &pool);
        let mut a = db.acquire(pool.acquire()).await.unwrap();
        let one: (i32,) = sqlx::query_as("SELECT 1")
            .fetch_one(&mut **a)
            .await
            .unwrap();
        assert_eq!(one.0, 1);
        let b = db.acquire(pool.acquire()).await.unwrap();
        let st = db.status();
        assert_eq!((st.size, st.idle, st.max, st.waiters), (2, 0, 2, None));
        let err = db.acquire(pool.acquire()).await.unwrap_err();
        assert!(matches!(err, sqlx::Error::PoolTimedOut), "{err:?}");
        let text = perfkit::metrics::render();
        assert_eq!(
            value(&text, "perfkit_resource_in_use{resource=\"sqlx_db\"}"),
            Some(2.0)
        );
        assert_eq!(
            value(&text, "perfkit_resource_max{resource=\"sqlx_db\"}"),
            Some(2.0)
        );
        assert_eq!(
            value(
                &text,
                "perfkit_resource_timeouts_total{resource=\"sqlx_db\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "perfkit_resource_waiters{resource=\"sqlx_db\"}"),
            None,
            "sqlx does not count waiters, so there is no series"
        );
        let snap = perfkit::metrics::registry().snapshot();
        let e = entry(&snap, "resources", "sqlx_db");
        assert_eq!(e["kind"], "sqlx");
        assert_eq!(e["saturation"], 1.0);
        assert!(e["acquire_seconds"]["max"].as_f64().unwrap() >= 0.19, "{e}");
        drop((a, b));
        // Returned connections are idle again (sqlx returns them from a task of its own).
        let mut idle = 0;
        for _ in 0..100 {
            idle = db.status().idle;
            if idle == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(idle, 2);
        pool.close().await;
    });
}
