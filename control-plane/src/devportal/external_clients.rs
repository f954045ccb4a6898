//! The OAuth2 clients an application holds at outside key managers (one per key manager):
//! their tokens act for the application at the gateways, with its subscriptions and tier.
//! Mapping a client takes its secret, checked at the provider's token endpoint and never
//! kept, so that nobody maps a client that is not theirs.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use portico_gateway::check;
use portico_gateway::contract::environment::ClientApplication;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::api_keys::{REVOKED_KEYS_LISTED_FOR_MS, subscriptions_of_holders};
use super::applications::owned;
use crate::AppState;
use crate::auth::Caller;
use crate::db::{Db, now_ms};
use crate::error::{ApiError, ApiResult, JsonBody};
use crate::fleet::Change;
use crate::keymanager;

/// What `PUT /api/v1/applications/{id}/external-clients/{key_manager}` takes.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewExternalClient {
    /// The client id the outside key manager gave the application (which must be allowed
    /// the client credentials grant there: its token is the proof).
    pub client_id: String,
    /// Its secret: checked once at the provider's token endpoint, never kept.
    pub client_secret: String,
}

impl std::fmt::Debug for NewExternalClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewExternalClient").field("client_id", &self.client_id).field("client_secret", &"(hidden)").finish()
    }
}

/// A client of an application at an outside key manager.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct ExternalClient {
    /// The outside key manager.
    pub key_manager: String,
    /// The client id there.
    pub client_id: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// A mapped client with what its tokens act for.
pub struct ExternalClientHolder {
    /// The outside key manager.
    pub key_manager: String,
    /// The client id there.
    pub client_id: String,
    /// The application, its tier, owner and subscriptions.
    pub application: ClientApplication,
}

/// Every mapped client, with its application's tier, owner and subscriptions.
pub async fn external_client_holders(db: &Db) -> ApiResult<Vec<ExternalClientHolder>> {
    let rows: Vec<(String, String, String, String, String)> = sqlx::query_as(
        "SELECT e.key_manager, e.client_id, ap.id, ap.tier, u.username FROM external_clients e \
         JOIN applications ap ON ap.id = e.application_id JOIN users u ON u.id = ap.owner_id ORDER BY e.key_manager, e.client_id",
    )
    .fetch_all(&db.pool)
    .await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let by_application = subscriptions_of_holders(db, now_ms() - REVOKED_KEYS_LISTED_FOR_MS).await?;
    Ok(rows
        .into_iter()
        .map(|(key_manager, client_id, application, tier, owner)| ExternalClientHolder {
            key_manager,
            client_id,
            application: ClientApplication {
                subscriptions: by_application.get(&application).cloned().unwrap_or_else(BTreeMap::new),
                application,
                tier: Some(tier),
                user: Some(owner),
            },
        })
        .collect())
}

/// List the application's clients at outside key managers.
#[utoipa::path(get, path = "/api/v1/applications/{id}/external-clients", operation_id = "list_external_clients", tag = "devportal",
    params(("id" = String, Path)), responses((status = 200, body = [ExternalClient]), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Vec<ExternalClient>>> {
    owned(&state.db, &caller, &id).await?;
    let clients = sqlx::query_as::<_, ExternalClient>(
        "SELECT key_manager, client_id, created_at FROM external_clients WHERE application_id = $1 ORDER BY key_manager",
    )
    .bind(&id)
    .fetch_all(&state.db.pool)
    .await?;
    Ok(Json(clients))
}

/// Map the application's client at an outside key manager (replacing the one it had there):
/// the gateways of the key manager's environments then take the client's tokens as the
/// application's, with its subscriptions and tier. The proof is a client-credentials token
/// the provider grants the client for its secret.
#[utoipa::path(put, path = "/api/v1/applications/{id}/external-clients/{key_manager}", operation_id = "map_external_client", tag = "devportal",
    params(("id" = String, Path), ("key_manager" = String, Path)), request_body = NewExternalClient,
    responses((status = 200, body = ExternalClient), (status = 400, description = "the provider does not take the client id and secret"), (status = 401),
        (status = 403), (status = 404, description = "no such application or key manager"), (status = 409, description = "another application maps that client"),
        (status = 503, description = "the provider could not be asked")),
    security(("bearer" = [])))]
pub async fn map(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, key_manager)): Path<(String, String)>,
    JsonBody(body): JsonBody<NewExternalClient>,
) -> ApiResult<Json<ExternalClient>> {
    owned(&state.db, &caller, &id).await?;
    let issuer =
        keymanager::issuer_named(&state.db, &key_manager).await?.ok_or_else(|| ApiError::not_found("key manager", &key_manager))?;
    for (field, value) in [("client_id", &body.client_id), ("client_secret", &body.client_secret)] {
        if value.is_empty() || value.len() > 1000 || value.chars().any(char::is_control) {
            return Err(ApiError::invalid(field, "1 to 1000 characters, without control characters"));
        }
    }
    let taken: Option<String> = sqlx::query_scalar("SELECT application_id FROM external_clients WHERE key_manager = $1 AND client_id = $2")
        .bind(&key_manager)
        .bind(&body.client_id)
        .fetch_optional(&state.db.pool)
        .await?;
    let mapped_elsewhere = || ApiError::Conflict(format!("another application maps the client `{}` of `{key_manager}`", body.client_id));
    if taken.is_some_and(|holder| holder != id) {
        return Err(mapped_elsewhere());
    }
    match check::openid_client(&issuer, &body.client_id, &body.client_secret).await {
        Ok(true) => {}
        Ok(false) => {
            return Err(ApiError::invalid("client_secret", format!("`{key_manager}` does not take this client id and secret")));
        }
        Err(reason) => {
            tracing::warn!(%key_manager, %reason, "the outside key manager could not be asked about a client");
            return Err(ApiError::Unavailable(format!("`{key_manager}` could not be asked about the client; try again later")));
        }
    }
    let created_at = now_ms();
    let mut change = Change::begin(&state).await?;
    sqlx::query("DELETE FROM external_clients WHERE application_id = $1 AND key_manager = $2")
        .bind(&id)
        .bind(&key_manager)
        .execute(&mut *change)
        .await?;
    sqlx::query("INSERT INTO external_clients (key_manager, client_id, application_id, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&key_manager)
        .bind(&body.client_id)
        .bind(&id)
        .bind(created_at)
        .execute(&mut *change)
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(e) if e.is_unique_violation() => mapped_elsewhere(),
            other => other.into(),
        })?;
    change.commit().await?;
    tracing::info!(application = %id, %key_manager, client_id = %body.client_id, "outside client mapped");
    Ok(Json(ExternalClient { key_manager, client_id: body.client_id, created_at }))
}

/// Forget the application's client at an outside key manager: its tokens are refused.
#[utoipa::path(delete, path = "/api/v1/applications/{id}/external-clients/{key_manager}", operation_id = "unmap_external_client", tag = "devportal",
    params(("id" = String, Path), ("key_manager" = String, Path)), responses((status = 204), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
pub async fn unmap(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, key_manager)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    owned(&state.db, &caller, &id).await?;
    let mut change = Change::begin(&state).await?;
    let deleted = sqlx::query("DELETE FROM external_clients WHERE application_id = $1 AND key_manager = $2")
        .bind(&id)
        .bind(&key_manager)
        .execute(&mut *change)
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(ApiError::NotFound(format!("the application maps no client of `{key_manager}`")));
    }
    change.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
