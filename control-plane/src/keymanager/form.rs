//! What the OAuth2 endpoints (token, introspection, revocation) share: reading their
//! form bodies and answering with responses no cache keeps.

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{OAuthError, OAuthResult};

/// The form of `POST /oauth2/introspect` and `POST /oauth2/revoke`.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct TokenForm {
    /// The token.
    pub token: Option<String>,
    /// `access_token` or `refresh_token`; a hint only, the token's shape decides.
    pub token_type_hint: Option<String>,
    /// Client id, when not sent with HTTP Basic.
    pub client_id: Option<String>,
    /// Client secret, when not sent with HTTP Basic.
    pub client_secret: Option<String>,
}

/// A form parameter, `None` when absent or empty.
pub(crate) fn param(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

/// The form of an OAuth2 request, any problem with it being `invalid_request`.
pub(crate) fn form<T: Serialize>(form: Result<Form<T>, FormRejection>) -> OAuthResult<T> {
    let form = form.map(|Form(form)| form).map_err(|e| {
        OAuthError::InvalidRequest(format!("send an application/x-www-form-urlencoded body without repeated parameters: {e}"))
    })?;
    let fields = serde_json::to_value(&form).map_err(|e| OAuthError::InvalidRequest(e.to_string()))?;
    match crate::error::holding_nul(&fields, String::new()) {
        Some(field) => Err(OAuthError::InvalidRequest(format!("`{field}`: {}", crate::error::NO_NUL))),
        None => Ok(form),
    }
}

/// `response` with `Cache-Control: no-store` and `Pragma: no-cache` (RFC 6749 §5.1).
pub(crate) fn no_store(response: impl IntoResponse) -> Response {
    ([(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")], response).into_response()
}
