//! Deployments: which revision of an API runs on which gateway environment (at most one
//! per API and environment), and [`deployed`], what an environment runs, for snapshots.

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use portico_gateway::check;
use portico_gateway::contract::environment::UpstreamNetworks;
use portico_gateway::traces::SpanParent;
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use super::revisions::{RevisionContent, parse_content};
use super::{checks, environments, store};
use crate::AppState;
use crate::auth::Caller;
use crate::db::{Db, new_id, now_ms};
use crate::error::{ApiError, ApiResult, JsonBody, QueryParams};
use crate::fleet::{Change, RolloutQuery, wait_for_rollout};

/// A revision of an API deployed on an environment.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Deployment {
    /// The environment.
    pub environment: String,
    /// The revision.
    pub revision_id: String,
    /// The revision's number.
    pub revision_number: i64,
    /// Milliseconds since the Unix epoch.
    pub deployed_at: i64,
}

/// The body of `POST /api/v1/apis/{id}/deployments`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    /// A revision of this API.
    pub revision_id: String,
    /// Where to deploy it; it replaces the revision deployed there, if any.
    pub environments: Vec<String>,
}

/// An API deployed on an environment, as [`deployed`] returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployedApi {
    /// The API's id.
    pub api_id: String,
    /// The API's current lifecycle status, as stored (`PUBLISHED`, `BLOCKED`, ...): a
    /// blocked or retired API stays deployed but should not be served.
    pub status: String,
    /// The deployed revision.
    pub revision_id: String,
    /// Its number.
    pub revision_number: i64,
    /// The API as that revision holds it.
    pub content: RevisionContent,
}

/// Every API deployed on `environment`, by name and version, with the deployed revision's
/// content.
pub async fn deployed(db: &Db, environment: &str) -> ApiResult<Vec<DeployedApi>> {
    let rows: Vec<(String, String, String, i64, String)> = sqlx::query_as(
        "SELECT a.id, a.status, r.id, r.number, r.content FROM deployments d \
         JOIN apis a ON a.id = d.api_id JOIN revisions r ON r.id = d.revision_id \
         WHERE d.environment = $1 ORDER BY a.name, a.version",
    )
    .bind(environment)
    .fetch_all(&db.pool)
    .await?;
    rows.into_iter()
        .map(|(api_id, status, revision_id, revision_number, content)| {
            Ok(DeployedApi { api_id, status, revision_id, revision_number, content: parse_content(&content)? })
        })
        .collect()
}

async fn of_api(conn: &mut AnyConnection, api_id: &str) -> ApiResult<Vec<Deployment>> {
    Ok(sqlx::query_as(
        "SELECT d.environment, d.revision_id, r.number AS revision_number, d.deployed_at \
         FROM deployments d JOIN revisions r ON r.id = d.revision_id WHERE d.api_id = $1 ORDER BY d.environment",
    )
    .bind(api_id)
    .fetch_all(&mut *conn)
    .await?)
}

/// List where the API is deployed.
#[utoipa::path(get, path = "/api/v1/apis/{id}/deployments", operation_id = "list_deployments", tag = "publisher", params(("id" = String, Path)),
    responses((status = 200, body = [Deployment]), (status = 401), (status = 403), (status = 404)), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Vec<Deployment>>> {
    store::visible(&state.db, &caller, &id).await?;
    let mut conn = state.db.pool.acquire().await?;
    Ok(Json(of_api(&mut conn, &id).await?))
}

/// Deploy a revision of a PUBLISHED or DEPRECATED API on environments, replacing what was
/// deployed there, all or nothing; answers every deployment of the API. With `wait_ms`,
/// answers once every healthy gateway of those environments runs it (201), or when the
/// time is up (202: recorded, still rolling out; `GET .../rollout` tells where).
#[utoipa::path(post, path = "/api/v1/apis/{id}/deployments", operation_id = "deploy_revision", tag = "publisher", params(("id" = String, Path), RolloutQuery), request_body = Deploy,
    responses((status = 201, body = [Deployment]), (status = 202, body = [Deployment], description = "recorded; not every gateway ran it within `wait_ms`"), (status = 400, description = "unknown revision or environment, or a revision that cannot run"), (status = 401), (status = 403),
        (status = 404), (status = 409, description = "the API is not PUBLISHED or DEPRECATED")),
    security(("bearer" = [])))]
pub async fn deploy(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    QueryParams(wait): QueryParams<RolloutQuery>,
    trace: Option<Extension<SpanParent>>,
    JsonBody(deploy): JsonBody<Deploy>,
) -> ApiResult<(StatusCode, Json<Vec<Deployment>>)> {
    store::visible(&state.db, &caller, &id).await?;
    if deploy.environments.is_empty() {
        return Err(ApiError::invalid("environments", "at least one environment"));
    }
    // A revision is immutable: it is checked before the transaction.
    let content: Option<String> = sqlx::query_scalar("SELECT content FROM revisions WHERE id = $1 AND api_id = $2")
        .bind(&deploy.revision_id)
        .bind(&id)
        .fetch_optional(&state.db.pool)
        .await?;
    let Some(content) = content else {
        return Err(ApiError::invalid("revision_id", format!("this API has no revision `{}`", deploy.revision_id)));
    };
    let content = parse_content(&content)?;
    check_runs(&state, &content).await.map_err(|error| match error {
        ApiError::Validation { field, message } => {
            ApiError::invalid("revision_id", format!("this revision cannot run: its `{field}`: {message}"))
        }
        other => other,
    })?;
    let mut tx = Change::begin(&state).await?.traced(trace.as_ref().map(|Extension(trace)| trace));
    lock_deployable(&mut tx, &id).await?;
    let now = now_ms();
    for (i, environment) in deploy.environments.iter().enumerate() {
        if deploy.environments[..i].contains(environment) {
            continue;
        }
        let Some(networks) = environments::upstream_networks(&mut tx, environment).await? else {
            return Err(ApiError::invalid(format!("environments[{i}]"), format!("no environment named `{environment}`")));
        };
        check_networks(&content, environment, &networks).map_err(|reason| ApiError::invalid(format!("environments[{i}]"), reason))?;
        put(&mut tx, &id, environment, &deploy.revision_id, now).await?;
    }
    let deployments = of_api(&mut tx, &id).await?;
    tx.commit().await?;
    tracing::info!(api = %id, revision = %deploy.revision_id, environments = ?deploy.environments, "revision deployed");
    if wait.wait_ms > 0 {
        // One deadline for all the environments: the wait is the caller's, not per environment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(wait.wait_ms);
        for environment in &deploy.environments {
            let left = deadline.saturating_duration_since(std::time::Instant::now()).as_millis();
            if !wait_for_rollout(&state, environment, u64::try_from(left).unwrap_or(u64::MAX)).await?.done {
                return Ok((StatusCode::ACCEPTED, Json(deployments)));
            }
        }
    }
    Ok((StatusCode::CREATED, Json(deployments)))
}

/// Check a revision's content as gateways will run it now: its policies still in the
/// registry, within today's ceilings, their configurations accepted by their `init`.
async fn check_runs(state: &AppState, content: &RevisionContent) -> ApiResult<()> {
    checks::check_policy_configs(state, &content.policies, &content.operations).await
}

/// Whether `environment`, with these upstream networks, calls every endpoint of `content`;
/// the reason names the first it refuses.
fn check_networks(content: &RevisionContent, environment: &str, networks: &UpstreamNetworks) -> Result<(), String> {
    for endpoint in &content.endpoints {
        check::upstream_allowed(networks, endpoint)
            .map_err(|reason| format!("`{environment}` refuses the endpoint `{endpoint}`: {reason}"))?;
    }
    Ok(())
}

/// Lock the API (so that the status checked is the status when the transaction commits)
/// and refuse unless it is PUBLISHED or DEPRECATED.
async fn lock_deployable(conn: &mut AnyConnection, id: &str) -> ApiResult<()> {
    store::lock(&mut *conn, id).await?;
    let status = store::row_in(&mut *conn, id).await?.status()?;
    if !status.deployable() {
        return Err(ApiError::Conflict(format!("only a PUBLISHED or DEPRECATED API can be deployed; this one is {}", status.as_str())));
    }
    Ok(())
}

/// Make `revision_id` the API's deployment on `environment` and record it in the history.
async fn put(conn: &mut AnyConnection, api_id: &str, environment: &str, revision_id: &str, now: i64) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO deployments (api_id, environment, revision_id, deployed_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (api_id, environment) DO UPDATE SET revision_id = excluded.revision_id, deployed_at = excluded.deployed_at",
    )
    .bind(api_id)
    .bind(environment)
    .bind(revision_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO deployment_history (id, api_id, environment, revision_id, deployed_at, seq) \
         SELECT $1, $2, $3, $4, $5, COALESCE(MAX(seq), 0) + 1 FROM deployment_history WHERE api_id = $2 AND environment = $3",
    )
    .bind(new_id())
    .bind(api_id)
    .bind(environment)
    .bind(revision_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Roll back: deploy again, on this environment, the revision that was deployed there
/// before the current one; answers every deployment of the API.
#[utoipa::path(post, path = "/api/v1/apis/{id}/deployments/{environment}/rollback", operation_id = "rollback_deployment", tag = "publisher",
    params(("id" = String, Path), ("environment" = String, Path)),
    responses((status = 200, body = [Deployment]), (status = 401), (status = 403), (status = 404, description = "no such API, or not deployed there"),
        (status = 409, description = "no earlier revision to go back to, or one that cannot run, or the API is not PUBLISHED or DEPRECATED")),
    security(("bearer" = [])))]
pub async fn rollback(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, environment)): Path<(String, String)>,
) -> ApiResult<Json<Vec<Deployment>>> {
    store::visible(&state.db, &caller, &id).await?;
    // The revision to go back to is checked outside the transaction (the check runs
    // policies), then found again under the lock: a deploy in between is a conflict.
    let mut conn = state.db.pool.acquire().await?;
    let (_, previous) = rollback_target(&mut conn, &id, &environment).await?;
    drop(conn);
    let content: String =
        sqlx::query_scalar("SELECT content FROM revisions WHERE id = $1").bind(&previous).fetch_one(&state.db.pool).await?;
    let content = parse_content(&content)?;
    check_runs(&state, &content).await.map_err(|error| match error {
        ApiError::Validation { field, message } => ApiError::Conflict(format!("the earlier revision cannot run: its `{field}`: {message}")),
        other => other,
    })?;
    let mut tx = Change::begin(&state).await?;
    lock_deployable(&mut tx, &id).await?;
    let (current, still) = rollback_target(&mut tx, &id, &environment).await?;
    if still != previous {
        return Err(ApiError::Conflict(format!("the deployments on `{environment}` changed meanwhile; roll back again")));
    }
    let networks = environments::upstream_networks(&mut tx, &environment).await?.unwrap_or_default();
    check_networks(&content, &environment, &networks)
        .map_err(|reason| ApiError::Conflict(format!("the earlier revision cannot run: {reason}")))?;
    put(&mut tx, &id, &environment, &previous, now_ms()).await?;
    let deployments = of_api(&mut tx, &id).await?;
    tx.commit().await?;
    tracing::info!(api = %id, environment = %environment, from = %current, to = %previous, "deployment rolled back");
    Ok(Json(deployments))
}

/// The revision deployed on `environment` now, and the one deployed there before it.
async fn rollback_target(conn: &mut AnyConnection, id: &str, environment: &str) -> ApiResult<(String, String)> {
    let current: Option<String> = sqlx::query_scalar("SELECT revision_id FROM deployments WHERE api_id = $1 AND environment = $2")
        .bind(id)
        .bind(environment)
        .fetch_optional(&mut *conn)
        .await?;
    let current = current.ok_or_else(|| ApiError::NotFound(format!("the API is not deployed on `{environment}`")))?;
    let previous: Option<String> = sqlx::query_scalar(
        "SELECT h.revision_id FROM deployment_history h JOIN revisions r ON r.id = h.revision_id \
         WHERE h.api_id = $1 AND h.environment = $2 AND h.revision_id <> $3 ORDER BY h.seq DESC LIMIT 1",
    )
    .bind(id)
    .bind(environment)
    .bind(&current)
    .fetch_optional(&mut *conn)
    .await?;
    let previous =
        previous.ok_or_else(|| ApiError::Conflict(format!("no earlier revision of this API was deployed on `{environment}`")))?;
    Ok((current, previous))
}

/// Take the API off an environment.
#[utoipa::path(delete, path = "/api/v1/apis/{id}/deployments/{environment}", operation_id = "undeploy_api", tag = "publisher",
    params(("id" = String, Path), ("environment" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404, description = "no such API, or not deployed there")),
    security(("bearer" = [])))]
pub async fn undeploy(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, environment)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    store::visible(&state.db, &caller, &id).await?;
    let mut change = Change::begin(&state).await?;
    let deleted = sqlx::query("DELETE FROM deployments WHERE api_id = $1 AND environment = $2")
        .bind(&id)
        .bind(&environment)
        .execute(&mut *change)
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(ApiError::NotFound(format!("the API is not deployed on `{environment}`")));
    }
    change.commit().await?;
    tracing::info!(api = %id, environment = %environment, "API undeployed");
    Ok(StatusCode::NO_CONTENT)
}
