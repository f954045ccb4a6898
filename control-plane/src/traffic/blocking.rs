//! Blocking conditions (admin): a client IP or network, an application, a user or an API,
//! refused with 403 by every gateway within a second of being added (each change pushes
//! a new snapshot).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use portico_gateway::check;
use portico_gateway::contract::environment::Blocked;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::db::{Db, new_id, now_ms};
use crate::error::{ApiError, ApiResult, JsonBody};
use crate::fleet::Change;

/// A blocking condition.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct BlockingCondition {
    /// Its id.
    pub id: String,
    /// `ip` (an address or a network), `application` (an application id), `user` (a user
    /// name) or `api` (an API id).
    pub kind: String,
    /// What is blocked.
    pub value: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// The body of `POST /api/v1/blocking-conditions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBlockingCondition {
    /// `ip`, `application`, `user` or `api`.
    pub kind: String,
    /// `192.0.2.7`, `198.51.100.0/24`, an application id, a user name or an API id.
    pub value: String,
}

/// List the blocking conditions (admin).
#[utoipa::path(get, path = "/api/v1/blocking-conditions", operation_id = "list_blocking_conditions", tag = "traffic",
    responses((status = 200, body = [BlockingCondition]), (status = 401), (status = 403)), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<BlockingCondition>>> {
    caller.require(&[Role::Admin])?;
    Ok(Json(
        sqlx::query_as("SELECT id, kind, value, created_at FROM blocking_conditions ORDER BY created_at").fetch_all(&state.db.pool).await?,
    ))
}

/// Add a blocking condition (admin).
#[utoipa::path(post, path = "/api/v1/blocking-conditions", operation_id = "create_blocking_condition", tag = "traffic", request_body = NewBlockingCondition,
    responses((status = 201, body = BlockingCondition), (status = 400), (status = 401), (status = 403), (status = 409, description = "already blocked")),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(new): JsonBody<NewBlockingCondition>,
) -> ApiResult<(StatusCode, Json<BlockingCondition>)> {
    caller.require(&[Role::Admin])?;
    let value = new.value.trim().to_owned();
    let exists = |sql: &'static str| {
        let value = value.clone();
        let db = state.db.clone();
        async move { ApiResult::Ok(sqlx::query_scalar::<_, String>(sql).bind(value).fetch_optional(&db.pool).await?.is_some()) }
    };
    match new.kind.as_str() {
        "ip" => {
            check::network(&value).map_err(|reason| ApiError::invalid("value", reason))?;
        }
        "application" => {
            if !exists("SELECT id FROM applications WHERE id = $1").await? {
                return Err(ApiError::invalid("value", format!("no application `{value}`")));
            }
        }
        "api" => {
            if !exists("SELECT id FROM apis WHERE id = $1").await? {
                return Err(ApiError::invalid("value", format!("no API `{value}`")));
            }
        }
        "user" => {
            if value.is_empty() || value.len() > 256 {
                return Err(ApiError::invalid("value", "a user name of 1 to 256 characters"));
            }
        }
        other => return Err(ApiError::invalid("kind", format!("`{other}`: one of ip, application, user, api"))),
    }
    let condition = BlockingCondition { id: new_id(), kind: new.kind, value, created_at: now_ms() };
    let mut change = Change::begin(&state).await?;
    sqlx::query("INSERT INTO blocking_conditions (id, kind, value, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&condition.id)
        .bind(&condition.kind)
        .bind(&condition.value)
        .bind(condition.created_at)
        .execute(&mut *change)
        .await?;
    tracing::info!(kind = %condition.kind, value = %condition.value, by = %caller.username, "blocking condition added");
    change.commit().await?;
    Ok((StatusCode::CREATED, Json(condition)))
}

/// Remove a blocking condition (admin).
#[utoipa::path(delete, path = "/api/v1/blocking-conditions/{id}", operation_id = "delete_blocking_condition", tag = "traffic",
    params(("id" = String, Path)), responses((status = 204), (status = 401), (status = 403), (status = 404)), security(("bearer" = [])))]
pub async fn delete(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    caller.require(&[Role::Admin])?;
    let mut change = Change::begin(&state).await?;
    let deleted = sqlx::query("DELETE FROM blocking_conditions WHERE id = $1").bind(&id).execute(&mut *change).await?;
    if deleted.rows_affected() == 0 {
        return Err(ApiError::not_found("blocking condition", &id));
    }
    change.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The conditions as a gateway configuration says them (APIs by the context they are
/// served on).
pub async fn for_gateways(db: &Db) -> ApiResult<Blocked> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT kind, value FROM blocking_conditions ORDER BY kind, value").fetch_all(&db.pool).await?;
    let mut blocked = Blocked::default();
    for (kind, value) in rows {
        match kind.as_str() {
            "ip" => blocked.ips.push(value),
            "application" => blocked.applications.push(value),
            "user" => blocked.users.push(value),
            "api" => {
                let served: Option<(String, String)> =
                    sqlx::query_as("SELECT context, version FROM apis WHERE id = $1").bind(&value).fetch_optional(&db.pool).await?;
                if let Some((context, version)) = served {
                    blocked.apis.push(format!("{}/{version}", context.trim_end_matches('/')));
                }
            }
            _ => {}
        }
    }
    Ok(blocked)
}
