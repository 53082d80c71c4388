//! What one connection is doing, as its clock sees it: waiting for a request head, idle
//! between requests, or busy with one. The socket wrapper notices the first byte of a new
//! request; the service notices a request start and its response body end.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use hyper::body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// Waiting for a whole request head (a new connection starts here).
const HEAD: u8 = 0;
/// A keep-alive connection between requests.
const IDLE: u8 = 1;
/// A request in flight: no clock runs here.
const BUSY: u8 = 2;

/// Why the server closed a connection, as the metric labels it.
pub(crate) const HEADER_TIMEOUT: &str = "header_timeout";
pub(crate) const IDLE_TIMEOUT: &str = "idle_timeout";
pub(crate) const SHED: &str = "shed";
pub(crate) const OVER_CAPACITY: &str = "over_capacity";

/// Microseconds since the first call in this process, rounded up (so a deadline from it
/// is never early); cheap to store in an atomic.
pub(crate) fn now_us() -> u64 {
    epoch().elapsed().as_micros() as u64 + 1
}

fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(Instant::now)
}

/// The clock limits of one listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    pub header: Duration,
    pub idle: Duration,
}

/// Connections with a request in flight, by listener (index), for the gauge.
pub(crate) static WITH_REQUEST: [AtomicI64; 2] = [AtomicI64::new(0), AtomicI64::new(0)];

/// One connection's phase, shared by its socket, its service and the listener's table.
pub(crate) struct Entry {
    phase: AtomicU8,
    /// When the current phase began (`now_us`); for a new connection, its accept.
    since: AtomicU64,
    in_flight: AtomicU32,
    /// Its listener's index in `WITH_REQUEST`.
    listener: usize,
    /// Chosen to make room at the cap: close as soon as no request is in flight.
    shed: AtomicBool,
    /// Woken when the deadline may have moved or a shed was asked for.
    pub wake: Notify,
}

impl Entry {
    pub fn new(listener: usize) -> Arc<Entry> {
        Arc::new(Entry {
            listener,
            phase: AtomicU8::new(HEAD),
            since: AtomicU64::new(now_us()),
            in_flight: AtomicU32::new(0),
            shed: AtomicBool::new(false),
            wake: Notify::new(),
        })
    }

    pub fn busy(&self) -> bool {
        self.phase.load(Ordering::Acquire) == BUSY
    }

    pub fn shed_requested(&self) -> bool {
        self.shed.load(Ordering::Acquire)
    }

    /// Since when this connection has been waiting without a request in flight; `None`
    /// while busy or already chosen.
    pub fn waiting_since(&self) -> Option<u64> {
        (!self.busy() && !self.shed_requested()).then(|| self.since.load(Ordering::Acquire))
    }

    /// Ask the connection to close as soon as it has no request in flight.
    pub fn request_shed(&self) {
        self.shed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// When the current wait runs out (`None` while a request is in flight).
    pub fn deadline(&self, c: Clock) -> Option<Instant> {
        let limit = match self.phase.load(Ordering::Acquire) {
            HEAD => c.header,
            IDLE => c.idle,
            _ => return None,
        };
        Some(epoch() + Duration::from_micros(self.since.load(Ordering::Acquire)) + limit)
    }

    /// Why this connection must close now, if it must.
    pub fn verdict(&self, c: Clock) -> Option<&'static str> {
        if self.busy() {
            return None;
        }
        if self.shed_requested() {
            return Some(SHED);
        }
        let expired = self.deadline(c).is_some_and(|d| Instant::now() >= d);
        match self.phase.load(Ordering::Acquire) {
            HEAD if expired => Some(HEADER_TIMEOUT),
            IDLE if expired => Some(IDLE_TIMEOUT),
            _ => None,
        }
    }

    /// Bytes arrived: between requests they start the next head's clock.
    fn on_read(&self) {
        if self.phase.load(Ordering::Acquire) == IDLE {
            self.since.store(now_us(), Ordering::Release);
            self.phase.store(HEAD, Ordering::Release);
            self.wake.notify_one();
        }
    }

    /// A request head was read; the returned guard ends the request when dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            WITH_REQUEST[self.listener].fetch_add(1, Ordering::Relaxed);
        }
        self.phase.store(BUSY, Ordering::Release);
        InFlight(self.clone())
    }
}

/// A request in flight, until its response body is written (or dropped).
pub(crate) struct InFlight(Arc<Entry>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let e = &self.0;
        if e.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            WITH_REQUEST[e.listener].fetch_sub(1, Ordering::Relaxed);
            e.since.store(now_us(), Ordering::Release);
            e.phase.store(IDLE, Ordering::Release);
            e.wake.notify_one();
        }
    }
}

/// The socket, telling its entry when bytes arrive.
pub(crate) struct Tracked<S> {
    pub inner: S,
    pub entry: Arc<Entry>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.entry.on_read();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A response body that keeps its request in flight until hyper has written (or dropped) it.
pub(crate) struct GuardedBody {
    pub inner: Body,
    pub _request: InFlight,
}

impl hyper::body::Body for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLOCK: Clock = Clock {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(60),
    };

    #[test]
    fn a_request_stops_the_clock_and_its_end_starts_the_idle_one() {
        // `since` is rounded up by a microsecond.
        let soon = || Instant::now() + CLOCK.header + Duration::from_millis(1);
        let e = Entry::new(1);
        assert!(e.deadline(CLOCK).unwrap() <= soon());
        let req = e.begin();
        assert_eq!(e.deadline(CLOCK), None);
        assert_eq!(e.waiting_since(), None);
        drop(req);
        let idle_deadline = e.deadline(CLOCK).unwrap();
        assert!(idle_deadline > Instant::now() + CLOCK.header);
        assert_eq!(e.verdict(CLOCK), None);
        e.on_read();
        assert!(e.deadline(CLOCK).unwrap() <= soon());
    }

    #[test]
    fn a_shed_waits_for_the_request_in_flight() {
        let e = Entry::new(1);
        let req = e.begin();
        e.request_shed();
        assert_eq!(e.verdict(CLOCK), None);
        drop(req);
        assert_eq!(e.verdict(CLOCK), Some(SHED));
    }

    #[test]
    fn an_expired_head_is_a_header_timeout() {
        let e = Entry::new(1);
        let short = Clock {
            header: Duration::ZERO,
            idle: Duration::from_secs(60),
        };
        assert_eq!(e.verdict(short), Some(HEADER_TIMEOUT));
        drop(e.begin());
        assert_eq!(e.verdict(short), None);
    }
}
