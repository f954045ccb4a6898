//! Revisions: immutable, numbered snapshots of an API (what gateways run), made on
//! request, at most [`MAX_REVISIONS`] per API.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use portico_gateway::contract::environment::Attachment;
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use super::definition::{Operation, Scope};
use super::store::{self, from_stored, to_stored};
use crate::AppState;
use crate::auth::Caller;
use crate::db::{Db, new_id, now_ms};
use crate::error::{ApiError, ApiResult};

/// Revisions kept per API.
pub const MAX_REVISIONS: i64 = 20;

/// What a revision holds: the API as it was, in the shapes of the gateway's `ApiConfig`
/// (endpoints → `upstream.endpoints`, operations → `OperationConfig`, policies →
/// `Attachment`). The documentation is left out: gateways do not serve it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct RevisionContent {
    /// Name.
    pub name: String,
    /// Version label.
    pub version: String,
    /// Path prefix; gateways serve the API at `{context}/{version}`.
    pub context: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Labels.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Upstream base URLs.
    pub endpoints: Vec<String>,
    /// PEM CA certificates the `https://` endpoints are verified against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_ca: Option<String>,
    /// The client certificate gateways present to `https://` endpoints (the key is kept
    /// apart, sealed, and never shown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_client_certificate: Option<String>,
    /// The operations.
    pub operations: Vec<Operation>,
    /// Policies for every operation.
    #[schema(value_type = Vec<Object>)]
    pub policies: Vec<Attachment>,
    /// The scopes it defines.
    #[serde(default)]
    pub scopes: Vec<Scope>,
}

/// A revision of an API.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Revision {
    /// Id.
    pub id: String,
    /// The API.
    pub api_id: String,
    /// 1, 2, ... per API.
    pub number: i64,
    /// The API as it was.
    pub content: RevisionContent,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// The environments it is deployed on.
    pub environments: Vec<String>,
}

#[derive(Debug, sqlx::FromRow)]
struct RevisionRow {
    id: String,
    api_id: String,
    number: i64,
    content: String,
    created_at: i64,
}

/// Parse a stored revision's content.
pub(super) fn parse_content(text: &str) -> ApiResult<RevisionContent> {
    from_stored("revision contents", text)
}

async fn with_environments(conn: &mut AnyConnection, row: RevisionRow) -> ApiResult<Revision> {
    let environments: Vec<String> = sqlx::query_scalar("SELECT environment FROM deployments WHERE revision_id = $1 ORDER BY environment")
        .bind(&row.id)
        .fetch_all(&mut *conn)
        .await?;
    Ok(Revision {
        content: parse_content(&row.content)?,
        id: row.id,
        api_id: row.api_id,
        number: row.number,
        created_at: row.created_at,
        environments,
    })
}

/// Snapshot the API as it is now into a new revision.
#[utoipa::path(post, path = "/api/v1/apis/{id}/revisions", operation_id = "create_revision", tag = "publisher", params(("id" = String, Path)),
    responses((status = 201, body = Revision), (status = 401), (status = 403), (status = 404), (status = 409, description = "too many revisions")),
    security(("bearer" = [])))]
pub async fn create(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<(StatusCode, Json<Revision>)> {
    store::visible(&state.db, &caller, &id).await?;
    let mut tx = state.db.pool.begin().await?;
    store::lock(&mut tx, &id).await?;
    let (count, last): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COALESCE(MAX(number), 0) FROM revisions WHERE api_id = $1").bind(&id).fetch_one(&mut *tx).await?;
    if count >= MAX_REVISIONS {
        return Err(ApiError::Conflict(format!("an API keeps at most {MAX_REVISIONS} revisions; delete an undeployed one first")));
    }
    let row = store::row_in(&mut tx, &id).await?;
    let api = store::with_operations(&mut tx, row).await?;
    let content = RevisionContent {
        name: api.name,
        version: api.version,
        context: api.context,
        description: api.description,
        tags: api.tags,
        endpoints: api.endpoints,
        endpoint_ca: api.endpoint_ca,
        endpoint_client_certificate: api.endpoint_client_certificate,
        operations: api.operations,
        policies: api.policies,
        scopes: api.scopes,
    };
    let revision = Revision { id: new_id(), api_id: id, number: last + 1, content, created_at: now_ms(), environments: Vec::new() };
    // The sealed key goes along as it is: it is sealed for the API, whose revision this is.
    sqlx::query(
        "INSERT INTO revisions (id, api_id, number, content, created_at, endpoint_client_key) \
         VALUES ($1, $2, $3, $4, $5, (SELECT endpoint_client_key FROM apis WHERE id = $2))",
    )
    .bind(&revision.id)
    .bind(&revision.api_id)
    .bind(revision.number)
    .bind(to_stored(&revision.content)?)
    .bind(revision.created_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(api = %revision.api_id, revision = revision.number, "revision created");
    Ok((StatusCode::CREATED, Json(revision)))
}

/// List an API's revisions, by number.
#[utoipa::path(get, path = "/api/v1/apis/{id}/revisions", operation_id = "list_revisions", tag = "publisher", params(("id" = String, Path)),
    responses((status = 200, body = [Revision]), (status = 401), (status = 403), (status = 404)), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Vec<Revision>>> {
    store::visible(&state.db, &caller, &id).await?;
    let mut conn = state.db.pool.acquire().await?;
    let rows: Vec<RevisionRow> =
        sqlx::query_as("SELECT id, api_id, number, content, created_at FROM revisions WHERE api_id = $1 ORDER BY number")
            .bind(&id)
            .fetch_all(&mut *conn)
            .await?;
    let mut revisions = Vec::with_capacity(rows.len());
    for row in rows {
        revisions.push(with_environments(&mut conn, row).await?);
    }
    Ok(Json(revisions))
}

/// Read a revision.
#[utoipa::path(get, path = "/api/v1/apis/{id}/revisions/{revision_id}", operation_id = "get_revision", tag = "publisher",
    params(("id" = String, Path), ("revision_id" = String, Path)),
    responses((status = 200, body = Revision), (status = 401), (status = 403), (status = 404)), security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, revision_id)): Path<(String, String)>,
) -> ApiResult<Json<Revision>> {
    store::visible(&state.db, &caller, &id).await?;
    let mut conn = state.db.pool.acquire().await?;
    let row: Option<RevisionRow> =
        sqlx::query_as("SELECT id, api_id, number, content, created_at FROM revisions WHERE id = $1 AND api_id = $2")
            .bind(&revision_id)
            .bind(&id)
            .fetch_optional(&mut *conn)
            .await?;
    let row = row.ok_or_else(|| ApiError::not_found("revision", &revision_id))?;
    Ok(Json(with_environments(&mut conn, row).await?))
}

/// Delete a revision that is deployed nowhere.
#[utoipa::path(delete, path = "/api/v1/apis/{id}/revisions/{revision_id}", operation_id = "delete_revision", tag = "publisher",
    params(("id" = String, Path), ("revision_id" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404), (status = 409, description = "deployed")), security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, revision_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    store::visible(&state.db, &caller, &id).await?;
    let deleted = sqlx::query(
        "DELETE FROM revisions WHERE id = $1 AND api_id = $2 AND NOT EXISTS (SELECT 1 FROM deployments WHERE revision_id = $1)",
    )
    .bind(&revision_id)
    .bind(&id)
    .execute(&state.db.pool)
    .await?;
    if deleted.rows_affected() == 1 {
        return Ok(StatusCode::NO_CONTENT);
    }
    let environments: Vec<String> = sqlx::query_scalar(
        "SELECT d.environment FROM deployments d JOIN revisions r ON r.id = d.revision_id WHERE r.id = $1 AND r.api_id = $2 ORDER BY d.environment",
    )
    .bind(&revision_id)
    .bind(&id)
    .fetch_all(&state.db.pool)
    .await?;
    if environments.is_empty() {
        Err(ApiError::not_found("revision", &revision_id))
    } else {
        Err(ApiError::Conflict(format!(
            "the revision is deployed on {}; undeploy it or deploy another revision first",
            environments.join(", ")
        )))
    }
}

/// The upstream client key `revision_id` of `api_id` was made with, opened; none when it
/// has none.
pub async fn client_key(db: &Db, api_id: &str, revision_id: &str) -> ApiResult<Option<String>> {
    let sealed: Option<Option<String>> = sqlx::query_scalar("SELECT endpoint_client_key FROM revisions WHERE id = $1 AND api_id = $2")
        .bind(revision_id)
        .bind(api_id)
        .fetch_optional(&db.pool)
        .await?;
    sealed.flatten().map(|sealed| store::open_client_key(db, api_id, &sealed)).transpose()
}
