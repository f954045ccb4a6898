//! The endpoints gateways call (the protocol of `docs/fleet.md`): the event stream of
//! their environment, modules by digest, and acknowledgements.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::Frame;
use portico_gateway::contract::fleet::{Ack, KEEPALIVE};
use tokio::sync::mpsc;

use super::tokens::GatewayCaller;
use super::{gateways, hub};
use crate::AppState;
use crate::error::{ApiError, ApiResult, JsonBody};
use crate::registry;

/// `GET /fleet/v1/stream`: the environment's snapshot now and after every change, with a
/// keep-alive comment every few seconds. The gateway is registered (or seen again) here.
pub async fn stream(State(state): State<AppState>, gateway: GatewayCaller) -> ApiResult<Response> {
    gateways::seen(&state.db, &gateway.id, &gateway.environment).await?;
    tracing::info!(gateway = %gateway.id, environment = %gateway.environment, "gateway connected");
    let mut snapshots = state.hub.follow(&state, &gateway.environment);
    snapshots.mark_changed();
    let (sender, receiver) = mpsc::channel::<Bytes>(4);
    let connected = state.metrics.gateway_connected(&gateway.environment);
    tokio::spawn(async move {
        let _connected = connected;
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        keepalive.tick().await;
        // The version this gateway was last sent: a snapshot that only adds revocations to
        // it goes as those revocations.
        let mut sent: Option<String> = None;
        loop {
            let chunk = tokio::select! {
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let Some(published) = snapshots.borrow_and_update().clone() else { continue };
                    let chunk = match &published.revocations {
                        Some((base, revocations)) if sent.as_ref() == Some(base) => revocations.clone(),
                        _ => published.event.clone(),
                    };
                    sent = Some(published.message.version.clone());
                    chunk
                }
                _ = keepalive.tick() => {
                    match gateway.still_allowed(&state).await {
                        Ok(false) => {
                            tracing::warn!(gateway = %gateway.id, "gateway token deleted; closing its stream");
                            break;
                        }
                        Ok(true) => {}
                        Err(error) => tracing::warn!(error = %error, "cannot check a gateway token"),
                    }
                    if let Err(error) = gateways::seen(&state.db, &gateway.id, &gateway.environment).await {
                        tracing::warn!(error = %error, "cannot record a gateway's heartbeat");
                    }
                    Bytes::from_static(b": keep-alive\n\n")
                }
            };
            if sender.send(chunk).await.is_err() {
                break;
            }
        }
        tracing::info!(gateway = %gateway.id, environment = %gateway.environment, "gateway disconnected");
    });
    let mut response = axum::body::Body::new(EventBody { receiver }).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// A response body fed by a channel; it ends when the sender goes.
struct EventBody {
    receiver: mpsc::Receiver<Bytes>,
}

impl http_body::Body for EventBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.receiver.poll_recv(cx).map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// `GET /fleet/v1/modules/{sha256}`: a policy component by digest.
pub async fn module(State(state): State<AppState>, gateway: GatewayCaller, Path(digest): Path<String>) -> ApiResult<Response> {
    // A gateway gets only what its environment runs: another environment's policies (or
    // any upload at all) are not its business.
    let published = hub::publish(&state, &gateway.environment).await?;
    let attached = published.message.content.modules.values().any(|module| module.sha256.as_deref() == Some(digest.as_str()));
    if !attached {
        return Err(ApiError::not_found("module", &digest));
    }
    let bytes = registry::component(&state.db, &digest).await?.ok_or_else(|| ApiError::not_found("module", &digest))?;
    Ok(registry::wasm_response(&digest, bytes))
}

/// `POST /fleet/v1/acks`: what a gateway runs now, and what it refused.
pub async fn ack(State(state): State<AppState>, gateway: GatewayCaller, JsonBody(ack): JsonBody<Ack>) -> ApiResult<StatusCode> {
    gateways::record(&state, &gateway.id, &gateway.environment, &ack).await?;
    Ok(StatusCode::NO_CONTENT)
}
