//! An application's OAuth2 client (one at most) for the client-credentials grant of the key
//! manager. The secret is shown once, when made; only its Argon2id hash is kept.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::applications::owned;
use crate::AppState;
use crate::auth::{Caller, hash, random_token};
use crate::db::now_ms;
use crate::error::{ApiError, ApiResult};

/// An application's OAuth2 client, without its secret.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OAuthClient {
    /// Client id.
    pub client_id: String,
    /// Where to get tokens.
    pub token_endpoint: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// An OAuth2 client with its secret, as answered once when the secret is made.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OAuthClientSecret {
    /// Client id.
    pub client_id: String,
    /// Client secret: shown this once, never again.
    pub client_secret: String,
    /// Where to get tokens.
    pub token_endpoint: String,
}

fn token_endpoint(state: &AppState) -> String {
    format!("{}/oauth2/token", state.settings.issuer)
}

/// Show an application's OAuth2 client (without its secret).
#[utoipa::path(get, path = "/api/v1/applications/{id}/oauth-client", operation_id = "get_oauth_client", tag = "devportal", params(("id" = String, Path)),
    responses((status = 200, body = OAuthClient), (status = 401), (status = 403), (status = 404, description = "no such application, or no client yet")),
    security(("bearer" = [])))]
pub async fn get(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<OAuthClient>> {
    owned(&state.db, &caller, &id).await?;
    let client: Option<(String, i64)> = sqlx::query_as("SELECT client_id, created_at FROM oauth_clients WHERE application_id = $1")
        .bind(&id)
        .fetch_optional(&state.db.pool)
        .await?;
    let (client_id, created_at) = client.ok_or_else(|| ApiError::NotFound("the application has no OAuth2 client; create one".into()))?;
    Ok(Json(OAuthClient { client_id, token_endpoint: token_endpoint(&state), created_at }))
}

/// Create the application's OAuth2 client; the answer holds the secret, shown this once.
#[utoipa::path(post, path = "/api/v1/applications/{id}/oauth-client", operation_id = "create_oauth_client", tag = "devportal", params(("id" = String, Path)),
    responses((status = 201, body = OAuthClientSecret), (status = 401), (status = 403), (status = 404), (status = 429),
        (status = 409, description = "the application has a client already")),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<OAuthClientSecret>)> {
    owned(&state.db, &caller, &id).await?;
    let client_id = uuid::Uuid::new_v4().simple().to_string();
    let client_secret = random_token();
    sqlx::query("INSERT INTO oauth_clients (client_id, application_id, secret_hash, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&client_id)
        .bind(&id)
        .bind(hash(&client_secret).await?)
        .bind(now_ms())
        .execute(&state.db.pool)
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(e) if e.is_unique_violation() => {
                ApiError::Conflict("the application has an OAuth2 client already; regenerate its secret instead".into())
            }
            other => other.into(),
        })?;
    tracing::info!(application = %id, client_id = %client_id, "OAuth2 client created");
    Ok((StatusCode::CREATED, Json(OAuthClientSecret { client_id, client_secret, token_endpoint: token_endpoint(&state) })))
}

/// Replace the client's secret; the old one stops working. The answer holds the new
/// secret, shown this once.
#[utoipa::path(post, path = "/api/v1/applications/{id}/oauth-client/regenerate-secret", operation_id = "regenerate_oauth_client_secret", tag = "devportal", params(("id" = String, Path)),
    responses((status = 200, body = OAuthClientSecret), (status = 401), (status = 403), (status = 404, description = "no such application, or no client yet"), (status = 429)),
    security(("bearer" = [])))]
pub async fn regenerate_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<OAuthClientSecret>> {
    owned(&state.db, &caller, &id).await?;
    let client_id: Option<String> = sqlx::query_scalar("SELECT client_id FROM oauth_clients WHERE application_id = $1")
        .bind(&id)
        .fetch_optional(&state.db.pool)
        .await?;
    let client_id = client_id.ok_or_else(|| ApiError::NotFound("the application has no OAuth2 client; create one".into()))?;
    let client_secret = random_token();
    let updated = sqlx::query("UPDATE oauth_clients SET secret_hash = $1 WHERE client_id = $2")
        .bind(hash(&client_secret).await?)
        .bind(&client_id)
        .execute(&state.db.pool)
        .await?;
    if updated.rows_affected() == 0 {
        return Err(ApiError::NotFound("the application has no OAuth2 client; create one".into()));
    }
    tracing::info!(application = %id, client_id = %client_id, "OAuth2 client secret regenerated");
    Ok(Json(OAuthClientSecret { client_id, client_secret, token_endpoint: token_endpoint(&state) }))
}
