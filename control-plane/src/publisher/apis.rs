//! The API endpoints: create, list, read, replace and delete.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;

use super::definition::{Api, ApiSummary, ApiUpdate, NewApi};
use super::status::ApiStatus;
use super::{checks, store};
use crate::AppState;
use crate::auth::{Caller, Role};
use crate::db::now_ms;
use crate::error::{ApiError, ApiResult, JsonBody, QueryParams};

/// The search of `GET /api/v1/apis`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ApiSearch {
    /// Part of a name or a tag, case-insensitive.
    pub q: Option<String>,
}

#[derive(Debug, sqlx::FromRow)]
struct SummaryRow {
    id: String,
    name: String,
    version: String,
    context: String,
    description: String,
    tags: String,
    status: String,
    owner: String,
    updated_at: i64,
}

/// List the APIs the caller manages (all of them for admins), by name and version.
#[utoipa::path(get, path = "/api/v1/apis", operation_id = "list_apis", tag = "publisher", params(ApiSearch),
    responses((status = 200, body = [ApiSummary]), (status = 401), (status = 403)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(search): QueryParams<ApiSearch>,
) -> ApiResult<Json<Vec<ApiSummary>>> {
    caller.require(&[Role::Publisher])?;
    let mut sql = "SELECT a.id, a.name, a.version, a.context, a.description, a.tags, a.status, u.username AS owner, a.updated_at \
                   FROM apis a JOIN users u ON u.id = a.owner_id WHERE 1 = 1"
        .to_owned();
    let mut binds = Vec::new();
    if caller.role != Role::Admin {
        binds.push(caller.user_id.clone());
        sql.push_str(&format!(" AND a.owner_id = ${}", binds.len()));
    }
    if let Some(q) = search.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        let escaped = q.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        binds.push(format!("%{escaped}%"));
        let n = binds.len();
        // Tags are a JSON array in TEXT: a substring of it is a substring of some tag.
        sql.push_str(&format!(" AND (LOWER(a.name) LIKE ${n} ESCAPE '\\' OR LOWER(a.tags) LIKE ${n} ESCAPE '\\')"));
    }
    sql.push_str(" ORDER BY a.name, a.version");
    let mut query = sqlx::query_as::<_, SummaryRow>(&sql);
    for bind in &binds {
        query = query.bind(bind);
    }
    let rows = query.fetch_all(&state.db.pool).await?;
    let summaries = rows
        .into_iter()
        .map(|row| {
            Ok(ApiSummary {
                status: ApiStatus::parse(&row.status)
                    .ok_or_else(|| ApiError::Internal(format!("API {} has the unknown status {}", row.id, row.status)))?,
                tags: store::from_stored("tags", &row.tags)?,
                id: row.id,
                name: row.name,
                version: row.version,
                context: row.context,
                description: row.description,
                owner: row.owner,
                updated_at: row.updated_at,
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(summaries))
}

/// Create an API (publisher); it starts in status CREATED.
#[utoipa::path(post, path = "/api/v1/apis", operation_id = "create_api", tag = "publisher", request_body = NewApi,
    responses((status = 201, body = Api), (status = 400, description = "invalid field"), (status = 401), (status = 403),
        (status = 409, description = "name and version, or context and version, or a scope name, taken")),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(mut api): JsonBody<NewApi>,
) -> ApiResult<(StatusCode, Json<Api>)> {
    caller.require(&[Role::Publisher])?;
    checks::check_name("name", &api.name)?;
    checks::check_version("version", &api.version)?;
    checks::check_context("context", &api.context)?;
    checks::check_texts("description", &api.description, &api.documentation)?;
    checks::check_tags("tags", &api.tags)?;
    checks::check_endpoints("endpoints", &api.endpoints)?;
    checks::check_endpoint_ca("endpoint_ca", api.endpoint_ca.as_deref())?;
    checks::check_endpoint_client_certificate("endpoint_client_certificate", api.endpoint_client_certificate.as_ref())?;
    checks::check_tiers(&state.db, "tiers", &mut api.tiers).await?;
    checks::check_operations(&mut api.operations, |i| format!("operations[{i}]"))?;
    checks::check_attachments("policies", &api.policies)?;
    checks::check_scopes(&api.scopes, &api.policies, &api.operations)?;
    checks::check_policy_configs(&state, &api.policies, &api.operations).await?;
    let id = store::insert(&state.db, &caller.user_id, &api).await?;
    tracing::info!(api = %id, name = %api.name, version = %api.version, "API created");
    Ok((StatusCode::CREATED, Json(store::load(&state.db, &id).await?)))
}

/// Read an API.
#[utoipa::path(get, path = "/api/v1/apis/{id}", operation_id = "get_api", tag = "publisher", params(("id" = String, Path)),
    responses((status = 200, body = Api), (status = 401), (status = 403), (status = 404)), security(("bearer" = [])))]
pub async fn get(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Api>> {
    let row = store::visible(&state.db, &caller, &id).await?;
    let mut conn = state.db.pool.acquire().await?;
    Ok(Json(store::with_operations(&mut conn, row).await?))
}

/// Replace an API's updatable fields and its set of operations. Deployed revisions are
/// not affected: make a new revision and deploy it.
#[utoipa::path(put, path = "/api/v1/apis/{id}", operation_id = "replace_api", tag = "publisher", params(("id" = String, Path)), request_body = ApiUpdate,
    responses((status = 200, body = Api), (status = 400, description = "invalid field"), (status = 401), (status = 403), (status = 404),
        (status = 409, description = "a scope name another API defines")),
    security(("bearer" = [])))]
pub async fn replace(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(mut update): JsonBody<ApiUpdate>,
) -> ApiResult<Json<Api>> {
    let row = store::visible(&state.db, &caller, &id).await?;
    for (field, given, current) in
        [("name", &update.name, &row.name), ("version", &update.version, &row.version), ("context", &update.context, &row.context)]
    {
        if given.as_ref().is_some_and(|given| given != current) {
            return Err(ApiError::invalid(field, format!("cannot be changed (it is `{current}`); create a new API version instead")));
        }
    }
    checks::check_texts("description", &update.description, &update.documentation)?;
    checks::check_tags("tags", &update.tags)?;
    checks::check_endpoints("endpoints", &update.endpoints)?;
    checks::check_endpoint_ca("endpoint_ca", update.endpoint_ca.as_deref())?;
    checks::check_endpoint_client_certificate(
        "endpoint_client_certificate",
        update.endpoint_client_certificate.as_ref().and_then(Option::as_ref),
    )?;
    checks::check_tiers(&state.db, "tiers", &mut update.tiers).await?;
    checks::check_operations(&mut update.operations, |i| format!("operations[{i}]"))?;
    checks::check_attachments("policies", &update.policies)?;
    checks::check_scopes(&update.scopes, &update.policies, &update.operations)?;
    checks::check_policy_configs(&state, &update.policies, &update.operations).await?;
    let mut tx = state.db.pool.begin().await?;
    let updated = sqlx::query(
        "UPDATE apis SET description = $1, tags = $2, documentation = $3, endpoints = $4, endpoint_ca = $5, policies = $6, tiers = $7, \
         updated_at = $8 WHERE id = $9",
    )
    .bind(&update.description)
    .bind(store::to_stored(&update.tags)?)
    .bind(&update.documentation)
    .bind(store::to_stored(&update.endpoints)?)
    .bind(&update.endpoint_ca)
    .bind(store::to_stored(&update.policies)?)
    .bind(store::to_stored(&update.tiers)?)
    .bind(now_ms())
    .bind(&id)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(ApiError::not_found("API", &id));
    }
    if let Some(certificate) = &update.endpoint_client_certificate {
        sqlx::query("UPDATE apis SET endpoint_client_certificate = $1, endpoint_client_key = $2 WHERE id = $3")
            .bind(certificate.as_ref().map(|c| c.certificate.clone()))
            .bind(certificate.as_ref().map(|c| store::seal_client_key(&state.db, &id, &c.key)))
            .bind(&id)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("DELETE FROM operations WHERE api_id = $1").bind(&id).execute(&mut *tx).await?;
    store::insert_operations(&mut tx, &id, &update.operations).await?;
    store::replace_scopes(&mut tx, &id, &update.scopes).await?;
    let row = store::row_in(&mut tx, &id).await?;
    let api = store::with_operations(&mut tx, row).await?;
    tx.commit().await?;
    Ok(Json(api))
}

/// Delete an API that is CREATED or RETIRED and deployed nowhere, with its revisions.
#[utoipa::path(delete, path = "/api/v1/apis/{id}", operation_id = "delete_api", tag = "publisher", params(("id" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404), (status = 409, description = "deployed, or not CREATED or RETIRED")),
    security(("bearer" = [])))]
pub async fn delete(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    store::visible(&state.db, &caller, &id).await?;
    // One statement, so that no deployment or status change slips in between check and delete.
    let deleted = sqlx::query(
        "DELETE FROM apis WHERE id = $1 AND status IN ('CREATED', 'RETIRED') AND NOT EXISTS (SELECT 1 FROM deployments WHERE api_id = $1)",
    )
    .bind(&id)
    .execute(&state.db.pool)
    .await?;
    if deleted.rows_affected() == 1 {
        tracing::info!(api = %id, "API deleted");
        return Ok(StatusCode::NO_CONTENT);
    }
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM apis WHERE id = $1").bind(&id).fetch_optional(&state.db.pool).await?;
    let Some(status) = status else {
        return Err(ApiError::not_found("API", &id));
    };
    let environments: Vec<String> = sqlx::query_scalar("SELECT environment FROM deployments WHERE api_id = $1 ORDER BY environment")
        .bind(&id)
        .fetch_all(&state.db.pool)
        .await?;
    if !environments.is_empty() {
        return Err(ApiError::Conflict(format!("the API is deployed on {}; undeploy it first", environments.join(", "))));
    }
    Err(ApiError::Conflict(format!("only a CREATED or RETIRED API can be deleted; this one is {status} (retire it first)")))
}
