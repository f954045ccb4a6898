//! Token introspection (RFC 7662) for authenticated clients and admin sessions: whether an
//! access or refresh token is active, and what it says. A client is told about its own
//! tokens only (another client's are answered inactive, as RFC 7662 §4 allows, so that
//! one application cannot read another's); an admin's session about any.

use axum::Form;
use axum::Json;
use axum::extract::rejection::FormRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::Response;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{OAuthError, OAuthResult};
use super::form::{TokenForm, form, no_store, param};
use super::{access_token, client_auth, refresh_token};
use crate::AppState;
use crate::auth::{Caller, Role, Source};
use crate::error::ApiError;

/// What introspection says about a token; only `active` when it is not.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Introspection {
    /// Whether the token is valid now.
    pub active: bool,
    /// Space-separated scopes; absent when there are none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The client it was issued to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Its subject: the end user's id with the authorization code grant, else the client id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Issued at, seconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Access tokens: their unique id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Access tokens: their audience.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// The issuer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Access tokens: `Bearer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
}

/// Introspect a token (RFC 7662). The caller is an OAuth2 client (HTTP Basic or form
/// credentials), told about its own tokens only, or an admin's management session
/// (`Authorization: Bearer`), told about any.
#[utoipa::path(post, path = "/oauth2/introspect", operation_id = "oauth2_introspect", tag = "keymanager",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, body = Introspection),
        (status = 400, description = "invalid_request"),
        (status = 401, description = "invalid_client, or invalid_token for a management session"),
        (status = 403, description = "a management session without the admin role"),
        (status = 429, description = "slow_down"),
    ),
    security(("client_secret_basic" = []), ("bearer" = [])))]
pub async fn introspect(
    State(state): State<AppState>,
    mut parts: Parts,
    request: Result<Form<TokenForm>, FormRejection>,
) -> OAuthResult<Response> {
    let request = form(request)?;
    let asker = authorize(&state, &mut parts, &request).await?;
    let token = param(&request.token).ok_or_else(|| OAuthError::InvalidRequest("`token` is missing".into()))?;
    let introspection = inspect(&state, token).await?;
    let told = match &asker {
        Asker::Admin => true,
        Asker::Client(client_id) => introspection.client_id.as_deref() == Some(client_id.as_str()),
    };
    Ok(no_store(Json(if told { introspection } else { Introspection::default() })))
}

/// Who asks.
enum Asker {
    /// An admin's management session.
    Admin,
    /// An OAuth2 client, by id.
    Client(String),
}

/// Let in a client, or an admin's management session.
async fn authorize(state: &AppState, parts: &mut Parts, request: &TokenForm) -> OAuthResult<Asker> {
    if is_bearer(&parts.headers) {
        let caller = Caller::from_request_parts(parts, state).await.map_err(|e| match e {
            ApiError::Unauthorized(message) => OAuthError::InvalidToken(message),
            other => OAuthError::Server(other),
        })?;
        caller.require(&[Role::Admin]).map_err(|e| OAuthError::InsufficientScope(e.to_string()))?;
        return Ok(Asker::Admin);
    }
    client_auth::authenticate(state, Source::of(parts), &parts.headers, param(&request.client_id), param(&request.client_secret))
        .await
        .map(|client| Asker::Client(client.client_id))
}

fn is_bearer(headers: &HeaderMap) -> bool {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("Bearer "))
}

async fn inspect(state: &AppState, token: &str) -> OAuthResult<Introspection> {
    if access_token::looks_like_jwt(token) {
        let Some(claims) = access_token::verify(state, token).await? else {
            return Ok(Introspection::default());
        };
        if access_token::is_revoked(&state.db, &claims.jti).await? || access_token::is_cut_off(&state.db, &claims.azp, claims.iat).await? {
            return Ok(Introspection::default());
        }
        return Ok(Introspection {
            active: true,
            scope: Some(claims.scope).filter(|scope| !scope.is_empty()),
            client_id: Some(claims.client_id),
            sub: Some(claims.sub),
            exp: Some(claims.exp),
            iat: Some(claims.iat),
            jti: Some(claims.jti),
            aud: Some(claims.aud),
            iss: Some(claims.iss),
            token_type: Some("Bearer".to_owned()),
        });
    }
    match refresh_token::find(&state.db, token).await? {
        Some(stored) if stored.is_usable() => Ok(Introspection {
            active: true,
            scope: Some(stored.scope).filter(|scope| !scope.is_empty()),
            sub: Some(stored.user_id.unwrap_or_else(|| stored.client_id.clone())),
            client_id: Some(stored.client_id),
            exp: Some(stored.expires_at / 1000),
            iat: Some(stored.created_at / 1000),
            iss: Some(state.settings.issuer.clone()),
            ..Introspection::default()
        }),
        _ => Ok(Introspection::default()),
    }
}
