//! Gateway environments: named groups of gateways that revisions are deployed to. Admins
//! create and delete them; `default` comes with the schema and stays.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::db::now_ms;
use crate::error::{ApiError, ApiResult, JsonBody};

/// The environment every installation has.
const DEFAULT: &str = "default";

/// A gateway environment.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Environment {
    /// Name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// A new environment.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEnvironment {
    /// 1 to 64 lower-case letters, digits, `-`, `_`, starting with a letter or digit.
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
}

/// List the environments (any logged-in user).
#[utoipa::path(get, path = "/api/v1/environments", operation_id = "list_environments", tag = "publisher", responses((status = 200, body = [Environment]), (status = 401)), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, _caller: Caller) -> ApiResult<Json<Vec<Environment>>> {
    let environments = sqlx::query_as::<_, Environment>("SELECT name, description, created_at FROM environments ORDER BY name")
        .fetch_all(&state.db.pool)
        .await?;
    Ok(Json(environments))
}

/// Create an environment (admin).
#[utoipa::path(post, path = "/api/v1/environments", operation_id = "create_environment", tag = "publisher", request_body = NewEnvironment,
    responses((status = 201, body = Environment), (status = 400), (status = 401), (status = 403), (status = 409, description = "name taken")),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(new): JsonBody<NewEnvironment>,
) -> ApiResult<(StatusCode, Json<Environment>)> {
    caller.require(&[Role::Admin])?;
    let name_ok = (1..=64).contains(&new.name.len())
        && new.name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && new.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !name_ok {
        return Err(ApiError::invalid("name", "1 to 64 lower-case letters, digits, `-`, `_`, starting with a letter or digit"));
    }
    if new.description.chars().count() > 1000 {
        return Err(ApiError::invalid("description", "at most 1000 characters"));
    }
    let environment = Environment { name: new.name, description: new.description, created_at: now_ms() };
    let inserted = sqlx::query("INSERT INTO environments (name, description, created_at) VALUES ($1, $2, $3)")
        .bind(&environment.name)
        .bind(&environment.description)
        .bind(environment.created_at)
        .execute(&state.db.pool)
        .await;
    match inserted {
        Ok(_) => Ok((StatusCode::CREATED, Json(environment))),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(ApiError::Conflict(format!("the environment `{}` exists", environment.name)))
        }
        Err(e) => Err(e.into()),
    }
}

/// Delete an environment nothing is deployed on (admin); `default` stays.
#[utoipa::path(delete, path = "/api/v1/environments/{name}", operation_id = "delete_environment", tag = "publisher", params(("name" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404), (status = 409, description = "in use, or the default")),
    security(("bearer" = [])))]
pub async fn delete(State(state): State<AppState>, caller: Caller, Path(name): Path<String>) -> ApiResult<StatusCode> {
    caller.require(&[Role::Admin])?;
    if name == DEFAULT {
        return Err(ApiError::Conflict("the default environment cannot be deleted".into()));
    }
    // One statement, so that no deployment slips in between check and delete.
    let deleted = sqlx::query("DELETE FROM environments WHERE name = $1 AND NOT EXISTS (SELECT 1 FROM deployments WHERE environment = $1)")
        .bind(&name)
        .execute(&state.db.pool)
        .await?;
    if deleted.rows_affected() == 1 {
        return Ok(StatusCode::NO_CONTENT);
    }
    let deployments: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM deployments WHERE environment = $1").bind(&name).fetch_one(&state.db.pool).await?;
    if deployments > 0 {
        Err(ApiError::Conflict(format!("{deployments} APIs are deployed on `{name}`; undeploy them first")))
    } else {
        Err(ApiError::not_found("environment", &name))
    }
}
