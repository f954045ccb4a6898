//! One accepted HTTP connection (HTTP/1.1 or HTTP/2, plain or TLS) served to its end, the
//! same way on every listener: the API's, the admin one and the control plane's. A request
//! head has `header_read_timeout` to arrive, and so has the first byte of a connection (the
//! protocol is told from it, and nothing else would time that wait); a connection with no
//! request in flight for `idle_timeout` is closed gracefully; shutdown lets requests in
//! flight finish.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::rt::{Read, Write};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::settings::Limits;

pub(crate) type BoxError = Box<dyn StdError + Send + Sync>;

/// The connection builder for `limits`: request heads and HTTP/2's streams, resets and
/// header lists bounded.
pub fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout.0)
        .max_buf_size((limits.max_header_bytes.0 as usize).max(8192))
        .max_headers(limits.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes.0).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .max_pending_accept_reset_streams(64)
        .max_local_error_reset_streams(256);
    builder
}

/// How long a connection may wait for its first request, and then stay idle between requests.
#[derive(Debug, Clone, Copy)]
pub struct Idle {
    /// Until the first request begins (the listener's `header_read_timeout`).
    pub first_request: Duration,
    /// After a request ends, until the next one begins.
    pub between_requests: Duration,
}

impl Idle {
    /// The idle times of `limits`.
    pub fn of(limits: &Limits) -> Self {
        Self { first_request: limits.header_read_timeout.0, between_requests: limits.idle_timeout.0 }
    }
}

/// A service that counts its requests, for [`serve`] to tell when the connection is idle.
/// A service whose response future is large counts its own instead (holding a [`Busy`] in
/// the future it builds), as the API listener does: wrapping it would move that future
/// once more per request.
pub fn counted<S>(service: S) -> impl FnOnce(Requests) -> Counted<S> {
    move |requests| Counted { service, requests }
}

/// A service whose requests are counted; see [`counted`].
pub struct Counted<S> {
    service: S,
    requests: Requests,
}

impl<S: Service<R>, R> Service<R> for Counted<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = Counting<S::Future>;

    fn call(&self, request: R) -> Self::Future {
        let busy = self.requests.begin();
        Counting { response: self.service.call(request), busy: Some(busy) }
    }
}

pin_project_lite::pin_project! {
    /// A response future that keeps its request counted until it is ready.
    pub struct Counting<F> {
        #[pin]
        response: F,
        busy: Option<Busy>,
    }
}

impl<F: Future> Future for Counting<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let output = std::task::ready!(this.response.poll(cx));
        this.busy.take();
        Poll::Ready(output)
    }
}

/// Serve `io` with the service `service` makes for the connection's [`Requests`] (which it
/// counts, from each request's start to its response) until the connection ends: closed
/// gracefully once idle past `idle`, or once `shutdown` turns true.
pub async fn serve<I, S, B>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    service: impl FnOnce(Requests) -> S,
    idle: Idle,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), BoxError>
where
    I: Read + Write + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let activity = Arc::new(Activity::new());
    let tracked = service(Requests(activity.clone()));
    let connection = builder.serve_connection(io, tracked);
    let mut connection = std::pin::pin!(connection);
    let mut closing = *shutdown.borrow();
    if closing {
        connection.as_mut().graceful_shutdown();
    }
    loop {
        // While a request is in flight, look again once it could have been idle long enough.
        let deadline = activity.idle_deadline(idle).unwrap_or_else(|| Instant::now() + idle.between_requests);
        tokio::select! {
            result = connection.as_mut() => return result,
            _ = shutdown.changed(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tokio::time::sleep_until(deadline), if !closing => {
                if activity.idle_deadline(idle).is_some_and(|deadline| deadline <= Instant::now()) {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// What a connection is doing: requests in flight, and when the last one ended.
struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds since `start` when the connection last became idle; 0 while no request
    /// has ended yet.
    idle_at_ms: AtomicU64,
    start: Instant,
}

impl Activity {
    fn new() -> Self {
        Self { in_flight: AtomicUsize::new(0), idle_at_ms: AtomicU64::new(0), start: Instant::now() }
    }

    /// When the connection is to close if it stays idle; none while a request is in flight.
    fn idle_deadline(&self, idle: Idle) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) != 0 {
            return None;
        }
        Some(match self.idle_at_ms.load(Ordering::Acquire) {
            0 => self.start + idle.first_request,
            ms => self.start + Duration::from_millis(ms) + idle.between_requests,
        })
    }
}

/// A connection's requests in flight, given to the service [`serve`] serves.
#[derive(Clone)]
pub struct Requests(Arc<Activity>);

impl Requests {
    /// A request has begun; it is in flight until the guard is dropped.
    pub fn begin(&self) -> Busy {
        self.0.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(self.0.clone())
    }
}

/// Counts a request in flight until dropped.
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let activity = &self.0;
        // Never 0, which means "no request yet".
        let now = u64::try_from(activity.start.elapsed().as_millis()).unwrap_or(u64::MAX).max(1);
        activity.idle_at_ms.store(now, Ordering::Release);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::{Empty, Full};
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    use super::*;
    use crate::contract::units;

    fn limits() -> Limits {
        Limits {
            header_read_timeout: units::Duration(Duration::from_secs(1)),
            idle_timeout: units::Duration(Duration::from_secs(2)),
            ..Limits::default()
        }
    }

    /// Serve one end of an in-memory connection with a service that answers after `work`;
    /// the task ends when the connection does.
    fn served(work: Duration) -> (tokio::io::DuplexStream, tokio::task::JoinHandle<()>, watch::Sender<bool>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(async move {
            let service = service_fn(move |_request| async move {
                tokio::time::sleep(work).await;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"done"))))
            });
            let _ = serve(&builder(&limits()), TokioIo::new(server), counted(service), Idle::of(&limits()), shutdown).await;
        });
        (client, task, stop)
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_begins_a_request_is_closed_after_the_head_time() {
        let started = Instant::now();
        let (_client, task, _stop) = served(Duration::ZERO);
        task.await.unwrap();
        assert_eq!(started.elapsed().as_secs(), 1);
    }

    /// A request longer than the idle time is not cut; the connection closes once it has
    /// been idle for the idle time after it (HTTP/2). HTTP/1.1 waits for its next request head
    /// under the head time, which hyper enforces: it closes after the shorter of the two.
    #[tokio::test(start_paused = true)]
    async fn a_connection_is_closed_once_idle_after_a_long_request() {
        let request = || Request::get("http://x/").body(Empty::<Bytes>::new()).unwrap();
        let started = Instant::now();
        let (client, task, _stop) = served(Duration::from_secs(10));
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(client)).await.unwrap();
        tokio::spawn(connection);
        assert_eq!(sender.send_request(request()).await.unwrap().status(), 200);
        assert_eq!(started.elapsed().as_secs(), 10);
        task.await.unwrap();
        assert_eq!(started.elapsed().as_secs(), 12);

        let started = Instant::now();
        let (client, task, _stop) = served(Duration::from_secs(10));
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(client)).await.unwrap();
        tokio::spawn(connection);
        assert_eq!(sender.send_request(request()).await.unwrap().status(), 200);
        task.await.unwrap();
        assert_eq!(started.elapsed().as_secs(), 11);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_lets_the_request_in_flight_finish() {
        let started = Instant::now();
        let (client, task, stop) = served(Duration::from_secs(5));
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(client)).await.unwrap();
        tokio::spawn(connection);
        let request = tokio::spawn(sender.send_request(Request::get("/").body(Empty::<Bytes>::new()).unwrap()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.send(true).unwrap();
        assert_eq!(request.await.unwrap().unwrap().status(), 200);
        task.await.unwrap();
        assert_eq!(started.elapsed().as_secs(), 5);
    }
}
