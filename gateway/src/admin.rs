//! The admin listener: `/healthz` (the process is up), `/readyz` (a snapshot is live and
//! the process is not shutting down) and `/metrics` (Prometheus). Kept off the API
//! listeners so no API can shadow it.

use std::convert::Infallible;
use std::sync::Arc;

use http::{Method, Response, StatusCode, header};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::Gateway;
use crate::body::Body;
use crate::connection::{self, Idle};
use crate::settings::Limits;

/// Serve admin requests until `shutdown` turns true, with the API listeners' request-head
/// and idle limits.
pub async fn serve(gateway: Arc<Gateway>, listener: TcpListener, limits: Limits, mut shutdown: watch::Receiver<bool>) {
    let builder = Arc::new(connection::builder(&limits));
    let idle = Idle::of(&limits);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let (gateway, builder, shutdown) = (gateway.clone(), builder.clone(), shutdown.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let response = answer(&gateway, request.method(), request.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = connection::serve(&builder, TokioIo::new(stream), connection::counted(service), idle, shutdown).await;
        });
    }
}

fn answer(gateway: &Gateway, method: &Method, path: &str) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" if gateway.is_shutting_down() => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into()),
        "/readyz" => match gateway.snapshot() {
            Some(snapshot) => text(StatusCode::OK, format!("ready {}\n", snapshot.version)),
            None => text(StatusCode::SERVICE_UNAVAILABLE, "no configuration applied yet\n".into()),
        },
        "/metrics" => {
            let mut response = text(StatusCode::OK, gateway.render_metrics());
            response.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static(crate::metrics::CONTENT_TYPE));
            response
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Body::bytes(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, "text/plain; charset=utf-8".parse().expect("static"));
    response
}
