//! Accepting connections: plain HTTP (HTTP/1.1 and h2c) or TLS (HTTP/1.1 and HTTP/2 by
//! ALPN, configured by [`crate::tls`]), the limits that apply before a request reaches the
//! pipeline (connections at once, idle connections, request heads), and graceful shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::Gateway;
use crate::pipeline::{self, Peer};
use crate::settings::Limits;
use crate::tls::ServedTls;

/// How long in-flight requests may take to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve API traffic on `listener` until `shutdown` turns true, then drain. At most
/// `limits.max_connections` connections are open at once (more are closed as soon as they
/// are accepted), and one idle for `limits.idle_timeout` is closed gracefully, whatever its
/// protocol.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    tls: Option<Arc<ServedTls>>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
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
    let builder = Arc::new(builder);
    // A permit per open connection: the cap, and what the drain waits for.
    let max_connections = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    let connections = Arc::new(Semaphore::new(max_connections as usize));
    let idle_timeout = limits.idle_timeout.0;

    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            gateway.metrics.connections_refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(client = %addr, max_connections, "connection refused: too many open");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let service = {
            let (gateway, activity) = (gateway.clone(), activity.clone());
            move |peer: Peer| {
                service_fn(move |request| {
                    let gateway = gateway.clone();
                    let peer = peer.clone();
                    let busy = activity.begin();
                    async move {
                        let response = pipeline::handle(&gateway, request, peer).await;
                        drop(busy);
                        Ok::<_, Infallible>(response)
                    }
                })
            }
        };
        let acceptor = tls.as_ref().map(|tls| tls.acceptor());
        let (builder, shutdown) = (builder.clone(), shutdown.clone());
        let handshake_timeout = limits.header_read_timeout.0;
        tokio::spawn(async move {
            let _permit = permit;
            let result = match acceptor {
                None => {
                    let service = service(Peer::new(addr, false, None));
                    drive(builder.serve_connection(TokioIo::new(stream), service), &activity, idle_timeout, shutdown).await
                }
                Some(acceptor) => {
                    let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(error)) => return tracing::debug!(client = %addr, error = %error, "TLS handshake failed"),
                        Err(_) => return,
                    };
                    // The listener's verifier has checked the chain to `client_ca`: the
                    // leaf is what an application registers.
                    let certificate = tls.get_ref().1.peer_certificates().and_then(|chain| chain.first());
                    let service = service(Peer::new(addr, true, certificate.map(|der| der.as_ref())));
                    drive(builder.serve_connection(TokioIo::new(tls), service), &activity, idle_timeout, shutdown).await
                }
            };
            if let Err(error) = result {
                tracing::debug!(client = %addr, error = %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, connections.acquire_many(max_connections)).await.is_err() {
        tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing them");
    }
}

/// Serve one connection until it ends; it is closed gracefully (requests in flight finish,
/// no new one is read) once idle for `idle_timeout`, or when `shutdown` turns true.
async fn drive<C>(connection: C, activity: &Activity, idle_timeout: Duration, mut shutdown: watch::Receiver<bool>) -> Result<(), C::Error>
where
    C: GracefulConnection,
{
    let mut connection = std::pin::pin!(connection);
    let mut closing = *shutdown.borrow();
    if closing {
        connection.as_mut().graceful_shutdown();
    }
    loop {
        let idle_since = activity.idle_since();
        tokio::select! {
            result = connection.as_mut() => return result,
            _ = shutdown.changed(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tokio::time::sleep_until(idle_since.unwrap_or_else(Instant::now) + idle_timeout), if !closing => {
                if activity.idle_since().is_some_and(|since| since.elapsed() >= idle_timeout) {
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
    /// Milliseconds since `start` when the connection last became idle.
    idle_at_ms: AtomicU64,
    start: Instant,
}

impl Activity {
    fn new() -> Self {
        Self { in_flight: AtomicUsize::new(0), idle_at_ms: AtomicU64::new(0), start: Instant::now() }
    }

    fn begin(self: &Arc<Self>) -> BusyGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        BusyGuard(self.clone())
    }

    /// Since when the connection has had no request in flight, if it has none.
    fn idle_since(&self) -> Option<Instant> {
        (self.in_flight.load(Ordering::Acquire) == 0).then(|| self.start + Duration::from_millis(self.idle_at_ms.load(Ordering::Acquire)))
    }
}

/// Counts a request in flight until dropped.
struct BusyGuard(Arc<Activity>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let activity = &self.0;
        let now = u64::try_from(activity.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        activity.idle_at_ms.store(now, Ordering::Release);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Bind a listener address; the error names it.
pub async fn bind(address: &str) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(address).await.map_err(|e| anyhow::anyhow!("cannot listen on {address}: {e}"))?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}
