//! Every way the gateway itself can fail a request, classified by where it came from,
//! and mapped to a status and an `application/problem+json` body in this one place. A
//! policy that denies a request is a decision, not an error: it never comes here.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::body::Body;
use crate::router::PathError;

/// A request the gateway could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    // Downstream: the client's request is at fault.
    /// The path could not be normalised safely.
    #[error("invalid path: {0}")]
    BadPath(#[from] PathError),
    /// The request is malformed in another way.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// No API matches the host and path.
    #[error("no API matches this request")]
    NotFound,
    /// The API has no operation for this method.
    #[error("method not allowed")]
    MethodNotAllowed {
        /// The methods that would match.
        allow: String,
    },
    /// The body is over the configured limit.
    #[error("request body too large")]
    PayloadTooLarge,
    /// The body a policy needs did not arrive within `limits.body_read_timeout`.
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    /// A blocking condition matches the client, the API, the application or the user.
    #[error("blocked by a blocking condition")]
    Blocked,

    // Upstream: the service behind the API failed.
    /// No endpoint accepted a connection.
    #[error("upstream unavailable: {0}")]
    UpstreamUnavailable(String),
    /// The response head did not come in time.
    #[error("upstream timed out")]
    UpstreamTimeout,
    /// The exchange with the upstream broke.
    #[error("upstream failed: {0}")]
    UpstreamFailed(String),
    /// The upstream's response body was over the limit a buffering policy allows.
    #[error("upstream response too large to process")]
    UpstreamTooLarge,

    // Internal: the gateway or one of its policies.
    /// A policy failed (trap, deadline, memory) and its attachment fails closed.
    #[error("policy `{policy}` failed: {reason}")]
    PolicyFailed {
        /// The policy's name.
        policy: String,
        /// What happened.
        reason: String,
    },
    /// No snapshot is live yet.
    #[error("gateway not ready")]
    NotReady,
    /// The API's configuration could not be loaded on this gateway (the reason is reported
    /// to the control plane, not to clients).
    #[error("this API is unavailable on this gateway: its configuration could not be loaded")]
    ApiUnavailable,
    /// A bug or an unexpected state.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ProxyError {
    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadPath(_) | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Blocked => StatusCode::FORBIDDEN,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::UpstreamUnavailable(_) | Self::UpstreamFailed(_) | Self::UpstreamTooLarge => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::PolicyFailed { .. } | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::NotReady | Self::ApiUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The text a client may see. Upstream and internal details stay in the log.
    fn detail(&self) -> String {
        match self {
            Self::UpstreamUnavailable(_) => "the upstream service could not be reached".to_owned(),
            Self::UpstreamFailed(_) => "the upstream service failed to answer".to_owned(),
            Self::PolicyFailed { policy, .. } => format!("policy `{policy}` failed; the request was not forwarded"),
            Self::Internal(_) => "internal error".to_owned(),
            other => other.to_string(),
        }
    }

    /// The response head and body for this error.
    pub fn into_parts(self) -> (http::response::Parts, Bytes) {
        let (mut head, body) = problem(self.status(), &self.detail());
        if let Self::MethodNotAllowed { allow } = &self
            && let Ok(value) = HeaderValue::from_str(allow)
        {
            head.headers.insert(header::ALLOW, value);
        }
        (head, body)
    }

    /// The response for this error.
    pub fn into_response(self) -> Response<Body> {
        let (head, body) = self.into_parts();
        Response::from_parts(head, Body::bytes(body))
    }
}

/// An `application/problem+json` response (RFC 9457).
pub fn problem(status: StatusCode, detail: &str) -> (http::response::Parts, Bytes) {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    let (mut head, ()) = Response::new(()).into_parts();
    head.status = status;
    head.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    (head, Bytes::from(body.to_string()))
}

/// An error with its causes (`client error (Connect): invalid peer certificate: UnknownIssuer`):
/// a client's own error often says only which step failed.
pub fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}
