//! Accepting API connections: plain HTTP (HTTP/1.1 and h2c) or TLS (HTTP/1.1 and HTTP/2
//! by ALPN, configured by [`crate::tls`]), at most `max_connections` at once, each served
//! by [`crate::connection`]; and the drain at shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::Gateway;
use crate::connection::{self, Idle, Requests};
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
    access_log: bool,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = Arc::new(connection::builder(&limits));
    // A permit per open connection: the cap, and what the drain waits for.
    let max_connections = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    let connections = Arc::new(Semaphore::new(max_connections as usize));
    let idle = Idle::of(&limits);

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
            gateway.metrics.connections_refused.inc();
            tracing::debug!(client = %addr, max_connections, "connection refused: too many open");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = {
            let gateway = gateway.clone();
            move |peer: Peer| {
                move |requests: Requests| {
                    service_fn(move |request| {
                        let gateway = gateway.clone();
                        let peer = peer.clone();
                        let busy = requests.begin();
                        async move {
                            let response = pipeline::handle(&gateway, request, peer).await;
                            drop(busy);
                            Ok::<_, Infallible>(response)
                        }
                    })
                }
            }
        };
        let (builder, shutdown) = (builder.clone(), shutdown.clone());
        // One task per kind of connection: a task holds its future's largest state, and a
        // plain connection's would otherwise make room for a TLS session it never has.
        match tls.as_ref().map(|tls| tls.acceptor()) {
            None => {
                tokio::spawn(async move {
                    let _permit = permit;
                    let service = service(Peer::new(addr, false, None, access_log));
                    let result = connection::serve(&builder, TokioIo::new(stream), service, idle, shutdown).await;
                    log_end(addr, result);
                });
            }
            Some(acceptor) => {
                let handshake_timeout = limits.header_read_timeout.0;
                tokio::spawn(async move {
                    let _permit = permit;
                    let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(error)) => return tracing::debug!(client = %addr, error = %error, "TLS handshake failed"),
                        Err(_) => return,
                    };
                    // The listener's verifier has checked the chain to `client_ca`: the
                    // leaf is what an application registers.
                    let certificate = tls.get_ref().1.peer_certificates().and_then(|chain| chain.first());
                    let service = service(Peer::new(addr, true, certificate.map(|der| der.as_ref()), access_log));
                    let result = connection::serve(&builder, TokioIo::new(tls), service, idle, shutdown).await;
                    log_end(addr, result);
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, connections.acquire_many(max_connections)).await.is_err() {
        tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing them");
    }
}

fn log_end(client: SocketAddr, result: Result<(), connection::BoxError>) {
    if let Err(error) = result {
        tracing::debug!(client = %client, error = %error, "connection ended with an error");
    }
}

/// Bind a listener address; the error names it.
pub async fn bind(address: &str) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(address).await.map_err(|e| anyhow::anyhow!("cannot listen on {address}: {e}"))?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}
