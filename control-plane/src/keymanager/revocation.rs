//! Token revocation (RFC 7009): a client revokes its own access tokens (their `jti` is
//! listed until they expire, for gateways to refuse) and refresh tokens (with their family).
//! Unknown, invalid and other clients' tokens are answered 200 and left alone.

use axum::Form;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::error::{OAuthError, OAuthResult};
use super::form::{TokenForm, form, no_store, param};
use super::{access_token, client_auth, refresh_token};
use crate::AppState;
use crate::auth::Source;
use crate::db::now_ms;
use crate::fleet::Change;

/// Revoke a token (RFC 7009).
#[utoipa::path(post, path = "/oauth2/revoke", operation_id = "oauth2_revoke", tag = "keymanager",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "revoked, or not a token of this client: the answer is the same"),
        (status = 400, description = "invalid_request"),
        (status = 401, description = "invalid_client"),
        (status = 429, description = "slow_down"),
    ),
    security(("client_secret_basic" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    source: Source,
    headers: HeaderMap,
    request: Result<Form<TokenForm>, FormRejection>,
) -> OAuthResult<Response> {
    let request = form(request)?;
    let client = client_auth::authenticate(&state, source, &headers, param(&request.client_id), param(&request.client_secret)).await?;
    let token = param(&request.token).ok_or_else(|| OAuthError::InvalidRequest("`token` is missing".into()))?;
    if access_token::looks_like_jwt(token) {
        if let Some(claims) = access_token::verify(&state, token).await?.filter(|claims| claims.client_id == client.client_id) {
            let now = now_ms();
            sqlx::query("DELETE FROM revoked_tokens WHERE expires_at < $1").bind(now).execute(&state.db.pool).await?;
            let mut change = Change::begin(&state).await?;
            sqlx::query(
                "INSERT INTO revoked_tokens (jti, expires_at, revoked_at, application_id) VALUES ($1, $2, $3, $4) ON CONFLICT (jti) DO NOTHING",
            )
            .bind(&claims.jti)
            .bind(claims.exp * 1000)
            .bind(now)
            .bind(&client.application_id)
            .execute(&mut *change)
            .await?;
            access_token::bound_revocations(&mut change, &client.application_id).await?;
            tracing::info!(client_id = %client.client_id, jti = %claims.jti, "access token revoked");
            change.commit().await?;
        }
    } else if let Some(stored) = refresh_token::find(&state.db, token).await?.filter(|stored| stored.client_id == client.client_id) {
        refresh_token::revoke_family(&state, &stored.family_id).await?;
        tracing::info!(client_id = %client.client_id, family_id = %stored.family_id, "refresh token family revoked");
    }
    Ok(no_store(StatusCode::OK))
}
