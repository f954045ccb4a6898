//! An application's OAuth2 client (one at most) for the key manager's grants: client
//! credentials, and the authorization code grant for end users at the redirect URIs it
//! registered. The secret is shown once, when made; only its Argon2id hash is kept.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::applications::owned;
use crate::AppState;
use crate::auth::{Caller, hash, random_token};
use crate::db::now_ms;
use crate::error::{ApiError, ApiResult, JsonBody};

/// Most redirect URIs a client registers, and the longest.
const MAX_REDIRECT_URIS: usize = 10;
const MAX_REDIRECT_URI: usize = 2000;

/// An application's OAuth2 client, without its secret.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OAuthClient {
    /// Client id.
    pub client_id: String,
    /// Where to get tokens.
    pub token_endpoint: String,
    /// Where end users allow the application (the authorization code grant).
    pub authorization_endpoint: String,
    /// Where the authorization endpoint may send end users back, compared exactly.
    pub redirect_uris: Vec<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// What `PUT /api/v1/applications/{id}/oauth-client/redirect-uris` takes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedirectUris {
    /// Absolute `https` URIs without a fragment, or `http` ones on 127.0.0.1 or [::1]
    /// (RFC 8252 §7.3); at most 10. They replace those registered before.
    #[schema(max_items = 10)]
    pub redirect_uris: Vec<String>,
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
    Ok(Json(read(&state, &id).await?))
}

async fn read(state: &AppState, application_id: &str) -> ApiResult<OAuthClient> {
    let client: Option<(String, String, i64)> =
        sqlx::query_as("SELECT client_id, redirect_uris, created_at FROM oauth_clients WHERE application_id = $1")
            .bind(application_id)
            .fetch_optional(&state.db.pool)
            .await?;
    let (client_id, redirect_uris, created_at) =
        client.ok_or_else(|| ApiError::NotFound("the application has no OAuth2 client; create one".into()))?;
    Ok(OAuthClient {
        client_id,
        token_endpoint: token_endpoint(state),
        authorization_endpoint: format!("{}/oauth2/authorize", state.settings.issuer),
        redirect_uris: serde_json::from_str(&redirect_uris).unwrap_or_default(),
        created_at,
    })
}

/// Register the client's redirect URIs, replacing those it had: the authorization
/// endpoint sends end users back to these only.
#[utoipa::path(put, path = "/api/v1/applications/{id}/oauth-client/redirect-uris", operation_id = "set_oauth_client_redirect_uris", tag = "devportal", params(("id" = String, Path)),
    request_body = RedirectUris,
    responses((status = 200, body = OAuthClient), (status = 400, description = "a redirect URI that is not allowed, named by its index"), (status = 401), (status = 403),
        (status = 404, description = "no such application, or no client yet")),
    security(("bearer" = [])))]
pub async fn set_redirect_uris(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RedirectUris>,
) -> ApiResult<Json<OAuthClient>> {
    owned(&state.db, &caller, &id).await?;
    if body.redirect_uris.len() > MAX_REDIRECT_URIS {
        return Err(ApiError::invalid("redirect_uris", format!("at most {MAX_REDIRECT_URIS} redirect URIs")));
    }
    for (i, uri) in body.redirect_uris.iter().enumerate() {
        check_redirect_uri(uri).map_err(|reason| ApiError::invalid(format!("redirect_uris[{i}]"), reason))?;
    }
    let mut uris: Vec<String> = Vec::with_capacity(body.redirect_uris.len());
    for uri in body.redirect_uris {
        if !uris.contains(&uri) {
            uris.push(uri);
        }
    }
    let stored = serde_json::to_string(&uris).map_err(|e| ApiError::Internal(e.to_string()))?;
    let updated = sqlx::query("UPDATE oauth_clients SET redirect_uris = $1 WHERE application_id = $2")
        .bind(stored)
        .bind(&id)
        .execute(&state.db.pool)
        .await?;
    if updated.rows_affected() == 0 {
        return Err(ApiError::NotFound("the application has no OAuth2 client; create one".into()));
    }
    tracing::info!(application = %id, count = uris.len(), "OAuth2 client redirect URIs set");
    Ok(Json(read(&state, &id).await?))
}

/// Why `uri` cannot be a redirect URI, if it cannot: it must be absolute, without a
/// fragment (RFC 6749 §3.1.2), `https`, or `http` on a loopback address (RFC 8252 §7.3),
/// since the code travels in it.
fn check_redirect_uri(uri: &str) -> Result<(), String> {
    if uri.len() > MAX_REDIRECT_URI {
        return Err(format!("longer than {MAX_REDIRECT_URI} characters"));
    }
    if uri.contains('#') {
        return Err("a redirect URI has no fragment (`#`)".into());
    }
    let parsed: Uri = uri.parse().map_err(|_| "not a URI".to_owned())?;
    let (Some(scheme), Some(authority)) = (parsed.scheme_str(), parsed.authority()) else {
        return Err("not an absolute URI: give its scheme and host, e.g. `https://app.example/callback`".into());
    };
    if authority.as_str().contains('@') {
        return Err("a redirect URI has no user information (`user@`)".into());
    }
    // Loopback by address only: `localhost` may resolve elsewhere (RFC 8252 §8.3).
    let loopback = matches!(authority.host(), "127.0.0.1" | "[::1]");
    match scheme {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err("`http` is allowed on a loopback address only (127.0.0.1 or [::1], not `localhost`): use `https`".into()),
        other => Err(format!("scheme `{other}` is not allowed: use `https` (or `http` on a loopback address)")),
    }
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
    // A new client registers no redirect URI: it can use the client credentials grant only.
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
