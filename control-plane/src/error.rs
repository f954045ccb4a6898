//! Errors of the management API, mapped to `application/problem+json` (RFC 9457) in one
//! place: validation names the field, constraint violations become conflicts, and
//! database or internal failures are logged and answered without their details.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An error answered by a management endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field of the request is missing or wrong.
    #[error("{field}: {message}")]
    Validation {
        /// Dotted path of the field, e.g. `operations[2].path`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// No valid credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// Credentials valid, but the role does not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// The thing does not exist (or the caller may not see it).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (a duplicate, a disallowed transition).
    #[error("{0}")]
    Conflict(String),
    /// Too many attempts.
    #[error("{0}")]
    TooManyRequests(String),
    /// A store the answer needs did not answer.
    #[error("{0}")]
    Unavailable(String),
    /// A database failure.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Anything else that is our fault.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A validation error on `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation { field: field.into(), message: message.into() }
    }

    /// A not-found error for a kind of thing and its id.
    pub fn not_found(kind: &str, id: &str) -> Self {
        Self::NotFound(format!("{kind} `{id}` not found"))
    }

    /// The HTTP status it is answered with.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::Validation { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Database(e) if is_constraint_violation(e) => StatusCode::CONFLICT,
            Self::Database(e) if is_unstorable_text(e) => StatusCode::BAD_REQUEST,
            Self::Database(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Unique, foreign-key and check violations are the client's conflict, not our failure.
fn is_constraint_violation(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => {
            matches!(
                db.kind(),
                sqlx::error::ErrorKind::UniqueViolation
                    | sqlx::error::ErrorKind::ForeignKeyViolation
                    | sqlx::error::ErrorKind::CheckViolation
            ) || db.code().is_some_and(|c| c.starts_with("23"))
        }
        _ => false,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = self.detail();
        let mut body = serde_json::json!({
            "type": "about:blank",
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": detail,
        });
        if let Self::Validation { field, .. } = &self {
            body["field"] = field.clone().into();
        }
        let mut response = (status, Json(body)).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"portico\""));
        }
        response
    }
}

impl ApiError {
    /// What the caller is told: the message, except for our own failures (logged here,
    /// answered without their details).
    pub(crate) fn detail(&self) -> String {
        let status = self.status();
        match self {
            Self::Database(e) if status == StatusCode::CONFLICT => {
                tracing::debug!(error = %e, "constraint violation");
                "the request conflicts with existing data (a duplicate name, or a reference to something missing)".to_owned()
            }
            Self::Database(_) if status == StatusCode::BAD_REQUEST => NO_NUL.to_owned(),
            Self::Database(e) => {
                tracing::error!(error = %e, "database error");
                "internal error".to_owned()
            }
            Self::Internal(e) => {
                tracing::error!(error = %e, "internal error");
                "internal error".to_owned()
            }
            other => other.to_string(),
        }
    }
}

/// The result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

/// A JSON request body whose errors are answered as problems naming the field.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json") || v.contains("+json"));
        if !is_json {
            return Err(ApiError::invalid("(body)", "send a JSON body with `content-type: application/json`"));
        }
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|e| ApiError::invalid("(body)", format!("cannot read the body: {e}")))?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| ApiError::invalid("(body)", format!("not JSON: {e}")))?;
        if !value.is_object() {
            return Err(ApiError::invalid("(body)", "a JSON object"));
        }
        if let Some(field) = holding_nul(&value, String::new()) {
            return Err(ApiError::invalid(field, NO_NUL));
        }
        serde_path_to_error::deserialize(value).map(JsonBody).map_err(|e| naming_the_field(e, "(body)"))
    }
}

/// A deserialisation error as a problem naming the field it is in (`whole` when it is the
/// input as a whole).
fn naming_the_field<E: std::fmt::Display>(error: serde_path_to_error::Error<E>, whole: &str) -> ApiError {
    let path = error.path().to_string();
    let field = if path == "." { whole.to_owned() } else { path };
    ApiError::invalid(field, error.into_inner().to_string())
}

/// Texts never hold the NUL character (PostgreSQL cannot store it): refused where they come in.
pub(crate) const NO_NUL: &str = "a text may not hold the NUL character (\\u0000)";

/// The path of the first string in `value` (a key or a value) that holds a NUL character.
pub(crate) fn holding_nul(value: &serde_json::Value, at: String) -> Option<String> {
    use serde_json::Value;
    match value {
        Value::String(text) if text.contains('\0') => Some(if at.is_empty() { "(body)".to_owned() } else { at }),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| holding_nul(item, format!("{at}[{i}]"))),
        Value::Object(object) => object.iter().find_map(|(key, item)| {
            let field = if at.is_empty() { key.clone() } else { format!("{at}.{key}") };
            if key.contains('\0') { Some(field) } else { holding_nul(item, field) }
        }),
        _ => None,
    }
}

/// Refuse a request whose path or query holds an escaped NUL character (`%00`), before any
/// handler reads it.
pub async fn refuse_nul_in_uri(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let nul = |text: &str| text.as_bytes().windows(3).any(|w| w == b"%00");
    if nul(request.uri().path()) {
        return ApiError::invalid("(path)", NO_NUL).into_response();
    }
    if request.uri().query().is_some_and(nul) {
        return ApiError::invalid("(query)", NO_NUL).into_response();
    }
    next.run(request).await
}

/// Whether a database refused a text for a character it cannot store (PostgreSQL and NUL).
pub(crate) fn is_unstorable_text(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("22021"))
}

/// Query parameters whose errors are answered as problems naming the parameter.
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for QueryParams<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer).map(QueryParams).map_err(|e| naming_the_field(e, "(query)"))
    }
}
