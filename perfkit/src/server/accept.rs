//! Accepting connections, and keeping the server answerable when clients are hostile or the
//! process runs out of file descriptors.
//!
//! * **The cap.** At most `max_connections` connections are open at once. A connection that
//!   arrives at the cap takes the place of the oldest open connection that is not running a
//!   request: one still sending its head, or an idle keep-alive connection. Only when every
//!   open connection is inside a handler does the newcomer get a `503`. So clients that
//!   trickle their heads (or open connections and say nothing) can hold every slot only until
//!   someone with a whole request arrives: the newcomer is the youngest connection, its head
//!   is read as soon as it lands, and from then on it cannot be evicted.
//! * **Heads have a deadline.** hyper's header read timer (`header_read_timeout`) closes a
//!   connection whose head is not complete in time; it also runs while a keep-alive
//!   connection waits for its next request, so idle connections close too.
//! * **Out of file descriptors.** The server holds one spare descriptor. When `accept` fails
//!   with `EMFILE`/`ENFILE` it lets the spare go, accepts the waiting connection with it,
//!   answers `503 out of file descriptors`, closes it and takes the spare back. The
//!   condition is logged at most once per 10 s, with a count. As soon as descriptors are
//!   available again, connections are served as usual.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::AbortHandle;

use super::reply::State;
use super::router::handle;

/// Connections past the cap being answered with a 503 at any one time.
const REJECTING_MAX: usize = 16;
/// How often a recurring accept problem is logged at most.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// Accepts in a row before the loop lets the connections it accepted run: a burst of
/// arrivals must not evict a newcomer whose request is already on the wire.
const ACCEPT_BURST: u32 = 8;

/// Accepts connections until `stop` turns true, then lets open connections finish (1 s).
pub(crate) async fn serve(listener: TcpListener, state: Arc<State>, mut stop: watch::Receiver<bool>) {
    let table = Arc::new(Table::new(state.max_connections));
    let rejecting = Arc::new(Semaphore::new(REJECTING_MAX));
    let mut reserve = Reserve::new();
    let mut burst = 0u32;
    loop {
        let accepted = tokio::select! {
            _ = stopped(&mut stop) => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) if is_out_of_fds(&e) => {
                reserve.out_of_fds(&listener).await;
                continue;
            }
            Err(e) => {
                reserve.failed(&e);
                // Whatever it is, do not spin on it.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        reserve.refill();
        match table.admit() {
            Some((id, busy)) => {
                let _ = stream.set_nodelay(true);
                let task = tokio::spawn(connection(
                    stream,
                    Arc::clone(&state),
                    stop.clone(),
                    Leave { table: Arc::clone(&table), id },
                    busy,
                ));
                table.started(id, task.abort_handle());
            }
            None => {
                if let Ok(p) = Arc::clone(&rejecting).try_acquire_owned() {
                    tokio::spawn(reject_busy(stream, state.max_connections, p));
                } // else: closed unanswered, the cheapest thing under a connection flood
            }
        }
        burst += 1;
        if burst >= ACCEPT_BURST {
            burst = 0;
            tokio::task::yield_now().await;
        }
    }
    drop(listener);
    let deadline = Instant::now() + Duration::from_secs(1);
    while table.open() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Resolves once the stop flag is set (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it here.
    let _ = stop.wait_for(|s| *s).await;
}

/// Serves one connection with hyper; `busy` counts the requests inside a handler, which
/// makes the connection ineligible for eviction.
async fn connection(
    stream: TcpStream,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
    _leave: Leave,
    busy: Arc<AtomicUsize>,
) {
    let svc_state = Arc::clone(&state);
    let service = service_fn(move |req| {
        let state = Arc::clone(&svc_state);
        let busy = Busy::enter(Arc::clone(&busy));
        async move {
            let response = handle(state, req).await;
            drop(busy);
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(state.header_read_timeout)
        .max_buf_size(16 * 1024);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Marks a connection as running a request for as long as it lives.
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn enter(count: Arc<AtomicUsize>) -> Busy {
        count.fetch_add(1, Ordering::Relaxed);
        Busy(count)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The open connections, oldest first.
///
/// Everything here runs on the server's single thread; the mutex only satisfies `Send`.
struct Table {
    cap: usize,
    inner: Mutex<Open>,
}

struct Open {
    next_id: u64,
    /// Connection id (in accept order) to its task and its count of running requests. The
    /// task is `None` between admission and spawning.
    conns: BTreeMap<u64, (Option<AbortHandle>, Arc<AtomicUsize>)>,
}

impl Table {
    fn new(cap: usize) -> Table {
        Table {
            cap,
            inner: Mutex::new(Open {
                next_id: 0,
                conns: BTreeMap::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Open> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a new connection: a free one, or the one of the oldest connection not
    /// running a request, which is closed. Returns the connection's id and its count of
    /// running requests; `None` when every open connection is running one.
    fn admit(&self) -> Option<(u64, Arc<AtomicUsize>)> {
        let mut open = self.lock();
        if open.conns.len() >= self.cap {
            let victim = open
                .conns
                .iter()
                .find(|(_, (_, busy))| busy.load(Ordering::Relaxed) == 0)
                .map(|(&id, _)| id)?;
            if let Some((Some(task), _)) = open.conns.remove(&victim) {
                task.abort();
            }
        }
        let id = open.next_id;
        open.next_id += 1;
        let busy = Arc::new(AtomicUsize::new(0));
        open.conns.insert(id, (None, Arc::clone(&busy)));
        Some((id, busy))
    }

    /// Records the task serving connection `id` (unless it already ended).
    fn started(&self, id: u64, task: AbortHandle) {
        if let Some(entry) = self.lock().conns.get_mut(&id) {
            entry.0 = Some(task);
        }
    }

    fn open(&self) -> usize {
        self.lock().conns.len()
    }
}

/// Takes a connection off the table when its task ends, however it ends.
struct Leave {
    table: Arc<Table>,
    id: u64,
}

impl Drop for Leave {
    fn drop(&mut self) {
        self.table.lock().conns.remove(&self.id);
    }
}

fn is_out_of_fds(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// The spare file descriptor, and the rate-limited log of accept problems.
struct Reserve {
    spare: Option<std::fs::File>,
    /// When a problem was last logged, and how many occurrences since.
    logged_at: Option<Instant>,
    unlogged: u64,
}

impl Reserve {
    fn new() -> Reserve {
        let mut r = Reserve {
            spare: None,
            logged_at: None,
            unlogged: 0,
        };
        r.refill();
        r
    }

    /// Takes the spare descriptor back if it was let go.
    fn refill(&mut self) {
        if self.spare.is_none() {
            self.spare = std::fs::File::open("/dev/null").ok();
        }
    }

    /// Counts one occurrence of a problem and logs the count at most once per 10 s.
    fn note(&mut self, what: &dyn Fn(u64)) {
        self.unlogged += 1;
        let due = self.logged_at.is_none_or(|at| at.elapsed() >= LOG_EVERY);
        if due {
            what(self.unlogged);
            self.unlogged = 0;
            self.logged_at = Some(Instant::now());
        }
    }

    fn failed(&mut self, e: &io::Error) {
        self.note(&|count| {
            tracing::warn!(error = %e, count, "perfkit debug server: accept failed (count since the last such line)");
        });
    }

    /// `accept` failed for lack of descriptors: answer the waiting connection with the spare.
    ///
    /// Linux takes the new descriptor before it looks at the queue, so `accept` also fails
    /// with `EMFILE` when no connection is waiting. The accept with the spare's number is
    /// therefore tried once, without waiting: waiting would answer a connection that arrives
    /// after descriptors came back with a 503. Its `WouldBlock` also clears the listener's
    /// readiness, so the loop then sleeps until a connection arrives instead of spinning.
    async fn out_of_fds(&mut self, listener: &TcpListener) {
        if self.spare.take().is_none() {
            // No spare to use: wait, then try to take it back.
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.refill();
            return;
        }
        // The spare is closed: its number is free for the waiting connection, if any.
        let waiting = std::future::poll_fn(|cx| Poll::Ready(listener.poll_accept(cx))).await;
        if let Poll::Ready(Ok((stream, _))) = waiting {
            self.note(&|count| {
                tracing::warn!(
                    count,
                    "perfkit debug server: the process is out of file descriptors; answering connections with 503 (count since the last such line)"
                );
            });
            answer_and_close(
                stream,
                "503 Service Unavailable",
                "the process is out of file descriptors\n",
                Duration::from_millis(100),
            )
            .await;
        }
        self.refill();
    }
}

/// Answers a connection past the cap with a 503 and closes it.
async fn reject_busy(stream: TcpStream, cap: usize, _permit: tokio::sync::OwnedSemaphorePermit) {
    let body = format!("too many debug server connections running requests (cap {cap})\n");
    answer_and_close(stream, "503 Service Unavailable", &body, Duration::from_secs(1)).await;
}

/// Writes a one-line answer without reading the request, then waits (up to `linger`) for
/// the client to close first: closing with its request unread would make the kernel reset
/// the connection, possibly before the client has read the answer.
async fn answer_and_close(mut stream: TcpStream, status: &str, body: &str, linger: Duration) {
    let resp = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\ncache-control: no-store\r\nx-content-type-options: nosniff\r\nx-go-pprof: 1\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(linger, async {
        stream.write_all(resp.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, io::Error>(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_oldest_idle_connection_makes_room() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let table = Arc::new(Table::new(3));
            let mut conns = Vec::new();
            for _ in 0..3 {
                let (id, busy) = table.admit().unwrap();
                let leave = Leave { table: Arc::clone(&table), id };
                let task = tokio::spawn(async move {
                    let _leave = leave;
                    std::future::pending::<()>().await;
                });
                table.started(id, task.abort_handle());
                conns.push((task, busy));
            }
            // The oldest is running a request: the second oldest makes room.
            conns[0].1.store(1, Ordering::Relaxed);
            let (id, newest) = table.admit().unwrap();
            assert_eq!(id, 3);
            assert_eq!(table.open(), 3);
            let (second, _) = conns.remove(1);
            assert!(second.await.unwrap_err().is_cancelled());
            // Every connection running a request: no room.
            newest.store(1, Ordering::Relaxed);
            conns[1].1.store(1, Ordering::Relaxed);
            assert!(table.admit().is_none());
            // A connection that ends frees its slot.
            let (oldest, _) = conns.remove(0);
            oldest.abort();
            assert!(oldest.await.unwrap_err().is_cancelled());
            assert_eq!(table.open(), 2);
            assert_eq!(table.admit().map(|(id, _)| id), Some(4));
        });
    }

    #[test]
    fn problems_are_logged_at_most_once_per_period_with_a_count() {
        let mut r = Reserve::new();
        let logged = std::cell::RefCell::new(Vec::new());
        for _ in 0..5 {
            r.note(&|n| logged.borrow_mut().push(n));
        }
        assert_eq!(*logged.borrow(), vec![1]);
        r.logged_at = Some(Instant::now() - LOG_EVERY);
        r.note(&|n| logged.borrow_mut().push(n));
        assert_eq!(*logged.borrow(), vec![1, 5]);
    }
}
