//! Errors of the OAuth2 endpoints, answered in one place as RFC 6749 §5.2 JSON
//! (`{"error": ..., "error_description": ...}`) rather than as management-API problems.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// An error answered by an OAuth2 endpoint.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// A parameter is missing, repeated, malformed or not allowed with another.
    #[error("{0}")]
    InvalidRequest(String),
    /// Client authentication failed (unknown client, wrong secret, none sent).
    #[error("{0}")]
    InvalidClient(String),
    /// The grant (a refresh token) is invalid, expired, revoked, used or not the client's.
    #[error("{0}")]
    InvalidGrant(String),
    /// A grant type this server does not support (the password grant among them).
    #[error("{0}")]
    UnsupportedGrantType(String),
    /// A requested scope is malformed or exceeds what was granted.
    #[error("{0}")]
    InvalidScope(String),
    /// A management session sent as a bearer token is unknown or expired.
    #[error("{0}")]
    InvalidToken(String),
    /// A management session whose role may not do this.
    #[error("{0}")]
    InsufficientScope(String),
    /// Too many failed client authentications lately.
    #[error("{0}")]
    SlowDown(String),
    /// Our failure (the database, a key that does not parse).
    #[error(transparent)]
    Server(#[from] ApiError),
}

impl From<sqlx::Error> for OAuthError {
    fn from(error: sqlx::Error) -> Self {
        if crate::error::is_unstorable_text(&error) {
            return Self::InvalidRequest(crate::error::NO_NUL.to_owned());
        }
        Self::Server(ApiError::Database(error))
    }
}

impl OAuthError {
    /// The RFC 6749 error code.
    pub(super) fn code(&self) -> &'static str {
        self.code_and_status().0
    }

    fn code_and_status(&self) -> (&'static str, StatusCode) {
        match self {
            Self::InvalidRequest(_) => ("invalid_request", StatusCode::BAD_REQUEST),
            Self::InvalidClient(_) => ("invalid_client", StatusCode::UNAUTHORIZED),
            Self::InvalidGrant(_) => ("invalid_grant", StatusCode::BAD_REQUEST),
            Self::UnsupportedGrantType(_) => ("unsupported_grant_type", StatusCode::BAD_REQUEST),
            Self::InvalidScope(_) => ("invalid_scope", StatusCode::BAD_REQUEST),
            Self::InvalidToken(_) => ("invalid_token", StatusCode::UNAUTHORIZED),
            Self::InsufficientScope(_) => ("insufficient_scope", StatusCode::FORBIDDEN),
            Self::SlowDown(_) => ("slow_down", StatusCode::TOO_MANY_REQUESTS),
            Self::Server(_) => ("server_error", StatusCode::INTERNAL_SERVER_ERROR),
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let (code, status) = self.code_and_status();
        let description = match &self {
            Self::Server(error) => {
                tracing::error!(%error, "OAuth2 endpoint failed");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = (status, Json(serde_json::json!({"error": code, "error_description": description}))).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        match &self {
            Self::InvalidClient(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"portico\""));
            }
            Self::InvalidToken(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"portico\", error=\"invalid_token\""));
            }
            Self::SlowDown(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
            }
            _ => {}
        }
        response
    }
}

/// The result of an OAuth2 handler.
pub type OAuthResult<T> = Result<T, OAuthError>;
