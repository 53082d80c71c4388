//! Bounded connections: the accept loop of both listeners (public and metrics).
//!
//! `axum::serve` keeps a connection for as long as the client likes. Here every connection
//! runs on a clock (`[server]` keys):
//!
//! - `header_read_timeout_seconds`: a whole request head must arrive within this long,
//!   counted from the accept for a connection's first request (so a socket that sends
//!   nothing is closed too) and from the first byte of each later request;
//! - `idle_timeout_seconds`: how long a keep-alive connection may wait between requests;
//! - a request in flight is never cut here: the request deadline in `limits` bounds it.
//!
//! hyper's own `header_read_timeout` is not used: it starts whenever hyper begins reading
//! a head, which on a keep-alive connection is right after the previous response, so it
//! would close idle keep-alives at the header timeout rather than the idle timeout.
//!
//! `max_connections` caps the open connections of a listener without ever refusing a
//! client that could be served: at the cap a new connection is still accepted, and the
//! connection with no request in flight that has waited longest in its phase (an idle
//! keep-alive or an unfinished head) is closed to make room (`shed`). Only when every open
//! connection has a request in flight is the new one closed at once (`over_capacity`). The
//! accept loop never waits for room, so the kernel's backlog never fills behind it.
//!
//! A connection reaches hyper only once its first request head has arrived whole (looked
//! at with `MSG_PEEK`, left in the kernel's buffer), so a silent socket or a half-sent head
//! costs a task and a file descriptor, not hyper's 16 KiB of buffers.
//!
//! Counted in `/metrics`: `deckhand_http_connections_closed_total{listener,reason}` (reasons
//! above) and the gauges `deckhand_http_connections_open{listener}` and
//! `deckhand_http_connections_busy{listener}` (those with a request in flight).
//!
//! On shutdown the listener closes first; connections without a request in flight close at
//! once; a request in flight finishes and its connection then closes, for at most the
//! request timeout plus a little.

mod track;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

use crate::config::ServerConfig;
use crate::support::metrics::{Gauge, connections_closed};
use crate::support::runner::CancelToken;
use track::{Clock, Entry, GuardedBody, Tracked};

/// Which listener a connection came in on (a metric label).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Listener {
    Public,
    Metrics,
}

impl Listener {
    fn name(self) -> &'static str {
        match self {
            Listener::Public => "public",
            Listener::Metrics => "metrics",
        }
    }
}

/// Open connections by listener, for the gauge.
static OPEN: [AtomicI64; 2] = [AtomicI64::new(0), AtomicI64::new(0)];

/// `deckhand_http_connections_open` and `…_busy` (a request in flight), per listener.
pub(crate) fn open_gauges(with_metrics_listener: bool) -> Vec<Gauge<'static>> {
    let mut which = vec![Listener::Public];
    if with_metrics_listener {
        which.push(Listener::Metrics);
    }
    let series = |name, help, counts: &'static [AtomicI64; 2]| {
        which.iter().map(move |l| {
            (
                name,
                help,
                vec![("listener", l.name().to_owned())],
                counts[*l as usize].load(Ordering::Relaxed) as f64,
            )
        })
    };
    series(
        "deckhand_http_connections_open",
        "Open HTTP connections, by listener.",
        &OPEN,
    )
    .chain(series(
        "deckhand_http_connections_busy",
        "Open HTTP connections with a request in flight, by listener.",
        &track::WITH_REQUEST,
    ))
    .collect()
}

/// The limits of one listener, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    clock: Clock,
    max: usize,
    /// How long shutdown waits for requests in flight.
    grace: Duration,
}

impl Bounds {
    pub fn new(s: &ServerConfig) -> Bounds {
        Bounds {
            clock: Clock {
                header: Duration::from_secs(s.header_read_timeout_seconds),
                idle: Duration::from_secs(s.idle_timeout_seconds),
            },
            max: s.max_connections,
            grace: Duration::from_secs(s.request_timeout_seconds + 2),
        }
    }
}

/// Raise this process's soft open-files limit towards `need` (up to the hard limit), and
/// warn when even the hard limit is short: at that point accepts fail with EMFILE instead
/// of the cap shedding idle connections.
pub(crate) fn ensure_fd_limit(need: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    if lim.rlim_cur >= need {
        return;
    }
    let want = need.min(lim.rlim_max);
    let raised = libc::rlimit {
        rlim_cur: want,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: as above.
    if want > lim.rlim_cur && unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        lim.rlim_cur = want;
    }
    if lim.rlim_cur < need {
        tracing::warn!(
            open_files = lim.rlim_cur,
            need,
            "the open-files limit is below [server] max_connections plus headroom; raise it (ulimit -n) or lower max_connections"
        );
    }
}

/// The open connections of one listener.
#[derive(Default)]
struct Table {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    conns: HashMap<u64, Arc<Entry>>,
    next: u64,
    /// Connections asked to close to make room that have not closed yet.
    shedding: usize,
    warned: Option<Instant>,
}

impl Table {
    /// Room for one more connection, shedding the longest-waiting one at the cap; `None`
    /// when every open connection has a request in flight.
    fn admit(&self, max: usize, which: Listener) -> Option<(u64, Arc<Entry>)> {
        let mut t = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if t.conns.len() - t.shedding >= max {
            // Longest in its wait first; among equals, the oldest connection.
            let victim = t
                .conns
                .iter()
                .filter_map(|(id, e)| e.waiting_since().map(|s| ((s, *id), e)))
                .min_by_key(|(k, _)| *k)
                .map(|(_, e)| e.clone())?;
            victim.request_shed();
            t.shedding += 1;
            if t.warned
                .is_none_or(|w| w.elapsed() > Duration::from_secs(60))
            {
                t.warned = Some(Instant::now());
                tracing::warn!(
                    listener = which.name(),
                    max_connections = max,
                    "connection cap reached: closing the longest-waiting idle connections to make room"
                );
            }
        }
        let id = t.next;
        t.next += 1;
        let e = Entry::new(which as usize);
        t.conns.insert(id, e.clone());
        OPEN[which as usize].fetch_add(1, Ordering::Relaxed);
        Some((id, e))
    }

    fn remove(&self, id: u64, which: Listener) {
        let mut t = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = t.conns.remove(&id) {
            if e.shed_requested() {
                t.shedding -= 1;
            }
            OPEN[which as usize].fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A connection's place in its table, given back when its task ends however it ends.
struct Slot {
    table: Arc<Table>,
    id: u64,
    which: Listener,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.table.remove(self.id, self.which);
    }
}

/// Serve `router` on `listener` until `stop`, then drain (see the module doc).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    bounds: Bounds,
    which: Listener,
    stop: CancelToken,
) {
    use track::{HEADER_TIMEOUT, IDLE_TIMEOUT, OVER_CAPACITY, SHED};
    for reason in [HEADER_TIMEOUT, IDLE_TIMEOUT, SHED, OVER_CAPACITY] {
        connections_closed(which.name(), reason, 0);
    }
    let table = Arc::new(Table::default());
    let tasks = TaskTracker::new();
    let force = CancelToken::new();
    let service = TowerToHyperService::new(router);
    let mut accept_warned = None;
    loop {
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors, or a client gone before its accept: back off
                    // a moment rather than spin, and say so at most every 10 s.
                    if accept_warned.is_none_or(|w: Instant| w.elapsed() > Duration::from_secs(10)) {
                        accept_warned = Some(Instant::now());
                        tracing::warn!(listener = which.name(), error = %e, "cannot accept a connection");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(20)) => continue,
                        _ = stop.cancelled() => break,
                    }
                }
            },
            _ = stop.cancelled() => break,
        };
        let Some((id, entry)) = table.admit(bounds.max, which) else {
            connections_closed(which.name(), OVER_CAPACITY, 1);
            drop(stream);
            continue;
        };
        let slot = Slot {
            table: table.clone(),
            id,
            which,
        };
        let conn = Connection {
            entry,
            bounds,
            which,
            service: service.clone(),
            addr,
        };
        tasks.spawn(conn.run(stream, slot, stop.clone(), force.clone()));
    }
    drop(listener);
    tasks.close();
    if tokio::time::timeout(bounds.grace, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = which.name(),
            "requests still in flight after the shutdown grace: closing their connections"
        );
        force.cancel();
        tasks.wait().await;
    }
}

/// hyper's connection future for one client, nameable so it can be kept between polls.
type Hyper = http1::Connection<TokioIo<Tracked<TcpStream>>, Handler>;

/// Where a connection is: waiting for its first request head (hyper not yet involved;
/// how many bytes of it were seen), served by hyper, or over.
enum Stage {
    Waiting(TcpStream, usize),
    Serving(Pin<Box<Hyper>>),
    Over,
}

/// What woke a connection's task.
enum Step {
    Readable,
    Done,
    Tick,
    Stop,
}

impl Stage {
    async fn progress(&mut self) -> Step {
        match self {
            Stage::Waiting(s, seen) => loop {
                if s.readable().await.is_err() {
                    return Step::Done;
                }
                match s.try_io(Interest::READABLE, || peek_head(s, seen)) {
                    Ok(()) => return Step::Readable,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return Step::Done,
                }
            },
            Stage::Serving(c) => {
                if let Err(e) = c.as_mut().await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                Step::Done
            }
            Stage::Over => Step::Done,
        }
    }
}

struct Connection {
    entry: Arc<Entry>,
    bounds: Bounds,
    which: Listener,
    service: TowerToHyperService<Router>,
    addr: SocketAddr,
}

impl Connection {
    async fn run(self, stream: TcpStream, _slot: Slot, stop: CancelToken, force: CancelToken) {
        let mut stage = Stage::Waiting(stream, 0);
        let mut stopping = false;
        let mut closing = false;
        loop {
            if stopping && !self.entry.busy() {
                return;
            }
            if let Some(reason) = self.entry.verdict(self.bounds.clock) {
                connections_closed(self.which.name(), reason, 1);
                tracing::debug!(peer = %self.addr, reason, "closing a connection");
                return;
            }
            // Shed while busy, or shutting down: finish the request, then close.
            if (stopping || self.entry.shed_requested())
                && !closing
                && let Stage::Serving(c) = &mut stage
            {
                c.as_mut().graceful_shutdown();
                closing = true;
            }
            let deadline = self.entry.deadline(self.bounds.clock);
            let step = tokio::select! {
                s = stage.progress() => s,
                _ = sleep_until(deadline) => Step::Tick,
                _ = self.entry.wake.notified() => Step::Tick,
                _ = stop.cancelled(), if !stopping => Step::Stop,
                _ = force.cancelled() => return,
            };
            match step {
                Step::Readable => {
                    if let Stage::Waiting(s, _) = std::mem::replace(&mut stage, Stage::Over) {
                        stage = Stage::Serving(Box::pin(self.hyper(s)));
                    }
                }
                Step::Done => return,
                Step::Tick => {}
                Step::Stop => stopping = true,
            }
        }
    }

    fn hyper(&self, stream: TcpStream) -> Hyper {
        let io = TokioIo::new(Tracked {
            inner: stream,
            entry: self.entry.clone(),
        });
        let handler = Handler {
            service: self.service.clone(),
            entry: self.entry.clone(),
            addr: self.addr,
        };
        http1::Builder::new()
            .keep_alive(true)
            // Our clock replaces it (see the module doc).
            .header_read_timeout(None)
            .serve_connection(io, handler)
    }
}

/// How much of a first request head is looked at before hyper takes over anyway (hyper's
/// own header size limit then applies).
const PEEK: usize = 16 * 1024;

/// Look at what has arrived without taking it: `Ok` once a whole head is there (or the
/// peer closed, or `PEEK` bytes came), `WouldBlock` (which clears the socket's readiness
/// until more arrives) while the head is unfinished. So a half-sent head waits in the
/// kernel's socket buffer, not in a buffer of ours.
fn peek_head(s: &TcpStream, seen: &mut usize) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; PEEK];
    // SAFETY: recv writes at most `buf.len()` bytes into `buf`; the fd is open while `s` is.
    let n = unsafe {
        libc::recv(
            s.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let n = n as usize;
    let from = seen.saturating_sub(3);
    let head_ends =
        |b: &[u8]| b.windows(4).any(|w| w == b"\r\n\r\n") || b.windows(2).any(|w| w == b"\n\n");
    if n == 0 || n == PEEK || head_ends(&buf[from..n]) {
        return Ok(());
    }
    *seen = n;
    Err(std::io::ErrorKind::WouldBlock.into())
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// The router as hyper calls it, with the peer address for `ConnectInfo<SocketAddr>` and
/// the request counted as in flight until its response body is written.
#[derive(Clone)]
struct Handler {
    service: TowerToHyperService<Router>,
    entry: Arc<Entry>,
    addr: SocketAddr,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Handler {
    type Response = Response<GuardedBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<GuardedBody>, Infallible>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let request = self.entry.begin();
        req.extensions_mut().insert(ConnectInfo(self.addr));
        let fut = self.service.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            Ok(resp.map(|inner| GuardedBody {
                inner,
                _request: request,
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_longest_waiting_idle_connection_makes_room() {
        let t = Table::default();
        let conns: Vec<_> = (0..3)
            .map(|_| t.admit(3, Listener::Public).unwrap())
            .collect();
        // The oldest is busy: the next-oldest goes instead.
        let _req = conns[0].1.begin();
        let (_, fourth) = t.admit(3, Listener::Public).unwrap();
        assert!(!conns[0].1.shed_requested());
        assert!(conns[1].1.shed_requested());
        assert!(!conns[2].1.shed_requested());
        // The one leaving no longer counts: with room for 4, nobody else goes.
        assert!(t.admit(4, Listener::Public).is_some());
        assert!(!conns[2].1.shed_requested() && !fourth.shed_requested());
        t.remove(conns[1].0, Listener::Public);
        let inner = t.inner.lock().unwrap();
        assert_eq!((inner.conns.len(), inner.shedding), (4, 0));
    }

    #[test]
    fn when_every_connection_is_busy_the_new_one_is_refused() {
        let t = Table::default();
        let a = t.admit(2, Listener::Metrics).unwrap();
        let b = t.admit(2, Listener::Metrics).unwrap();
        let _ra = a.1.begin();
        let _rb = b.1.begin();
        assert!(t.admit(2, Listener::Metrics).is_none());
        drop(_rb);
        assert!(t.admit(2, Listener::Metrics).is_some());
        assert!(b.1.shed_requested() && !a.1.shed_requested());
    }
}
