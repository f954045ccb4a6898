//! The control plane's traces, when it was started with a traces endpoint: a server span
//! per request, continuing the caller's W3C trace context. The span is in the request's
//! extensions, so that a change it makes ([`crate::fleet::Change::traced`]) carries it to
//! the gateways, which record applying the snapshot in the same trace.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::AppState;

/// Trace a request (a no-op when the control plane does not trace).
pub async fn trace_requests(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let Some(traces) = &state.traces else {
        return next.run(request).await;
    };
    let route = request.extensions().get::<MatchedPath>().map(|path| path.as_str().to_owned());
    let span = traces.server_span(&request, None, state.settings.public_url.starts_with("https:"));
    request.extensions_mut().insert(span.clone());
    let response = next.run(request).await;
    span.finish(response.status().as_u16(), || route.as_deref(), Vec::new);
    response
}
