//! The gateways of each environment as the control plane sees them: registered when they
//! connect, seen with every heartbeat, and what they acknowledged. A rollout is done when
//! every healthy gateway of the environment runs its current snapshot.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use portico_gateway::contract::fleet::{self, Ack, HEALTHY_WITHIN};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::hub;
use crate::AppState;
use crate::auth::{Caller, Role};
use crate::db::{Db, now_ms};
use crate::error::{ApiError, ApiResult, QueryParams};

/// The longest a rollout request waits.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// A gateway and what it runs.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GatewayStatus {
    /// Its id.
    pub id: String,
    /// Its environment.
    pub environment: String,
    /// The snapshot version it acknowledged running.
    pub running_version: Option<String>,
    /// Whether that is the environment's current snapshot.
    pub in_sync: bool,
    /// Seen within the last 20 s.
    pub healthy: bool,
    /// The last version it refused, and why.
    pub refused_version: Option<String>,
    /// Why it refused it.
    pub refused_reason: Option<String>,
    /// The APIs of the snapshot it runs that it could not load: each answers 503 there,
    /// while the rest of the environment is served.
    pub failed_apis: Vec<FailedApi>,
    /// Milliseconds since the Unix epoch.
    pub first_seen: i64,
    /// Milliseconds since the Unix epoch.
    pub last_seen: i64,
}

/// An API a gateway could not load.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FailedApi {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// What failed, by path in the environment the gateway was sent.
    pub problems: Vec<String>,
}

impl From<fleet::FailedApi> for FailedApi {
    fn from(failed: fleet::FailedApi) -> Self {
        Self { name: failed.name, version: failed.version, problems: failed.problems }
    }
}

/// An environment's current snapshot and its gateways.
#[derive(Debug, Serialize, ToSchema)]
pub struct Rollout {
    /// The environment.
    pub environment: String,
    /// The version of its current snapshot.
    pub version: String,
    /// Whether at least one gateway is healthy and every healthy gateway runs `version`.
    pub done: bool,
    /// Its gateways, healthy or not.
    pub gateways: Vec<GatewayStatus>,
}

/// Query of `GET /api/v1/environments/{name}/rollout`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct RolloutQuery {
    /// Wait up to this many milliseconds (at most 30000) for the rollout to be done.
    #[serde(default)]
    pub wait_ms: u64,
}

/// Record that a gateway is alive (registering it on first sight). A gateway id belongs to
/// the environment it first registered with: another environment's token cannot take it
/// over (re-home it, or speak for it).
pub async fn seen(db: &Db, id: &str, environment: &str) -> ApiResult<()> {
    let now = now_ms();
    let updated = sqlx::query(
        "INSERT INTO gateways (id, environment, first_seen, last_seen) VALUES ($1, $2, $3, $3) \
         ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen WHERE gateways.environment = excluded.environment",
    )
    .bind(id)
    .bind(environment)
    .bind(now)
    .execute(&db.pool)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(taken(id));
    }
    Ok(())
}

fn taken(id: &str) -> ApiError {
    ApiError::Conflict(format!(
        "the gateway id `{id}` belongs to another environment; start this gateway with another --id (or cache folder)"
    ))
}

/// Record a gateway's acknowledgement, and wake rollouts waiting for it.
pub async fn record(state: &AppState, id: &str, environment: &str, ack: &Ack) -> ApiResult<()> {
    let now = now_ms();
    let (refused_version, refused_reason) = match &ack.refused {
        Some(refusal) => (Some(refusal.version.as_str()), Some(refusal.reason.as_str())),
        None => (None, None),
    };
    let failed_apis = serde_json::to_string(&ack.failed_apis).map_err(|e| ApiError::Internal(e.to_string()))?;
    let recorded = sqlx::query(
        "INSERT INTO gateways (id, environment, running_version, refused_version, refused_reason, failed_apis, first_seen, last_seen) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
         ON CONFLICT (id) DO UPDATE SET running_version = excluded.running_version, \
         refused_version = excluded.refused_version, refused_reason = excluded.refused_reason, failed_apis = excluded.failed_apis, \
         last_seen = excluded.last_seen WHERE gateways.environment = excluded.environment",
    )
    .bind(id)
    .bind(environment)
    .bind(&ack.running)
    .bind(refused_version)
    .bind(refused_reason)
    .bind(failed_apis)
    .bind(now)
    .execute(&state.db.pool)
    .await?;
    if recorded.rows_affected() == 0 {
        return Err(taken(id));
    }
    match &ack.refused {
        Some(refusal) => {
            tracing::warn!(gateway = id, environment, version = %refusal.version, reason = %refusal.reason, "a gateway refused a snapshot")
        }
        None => tracing::info!(gateway = id, environment, version = ?ack.running, "gateway acknowledged"),
    }
    for failed in &ack.failed_apis {
        tracing::warn!(gateway = id, environment, api = %failed.name, version = %failed.version, problems = ?failed.problems, "a gateway could not load an API");
    }
    if let Some(latest) = state.hub.latest(environment)
        && ack.running.as_deref() == Some(latest.message.version.as_str())
        && latest.first_acknowledgement(id)
    {
        state.metrics.rollout_lag(environment, latest.built_at.elapsed());
    }
    state.acks.send_modify(|n| *n += 1);
    Ok(())
}

/// For each environment this node's gateways follow, how many healthy gateways do not run
/// its latest snapshot.
pub(crate) async fn behind(state: &AppState) -> ApiResult<Vec<(String, i64)>> {
    let mut behind = Vec::new();
    for (environment, latest) in state.hub.followed() {
        let current = HashMap::from([(environment.clone(), latest.message.version.clone())]);
        let gateways = statuses(&state.db, Some(&environment), &current).await?;
        let count = gateways.iter().filter(|g| g.healthy && !g.in_sync).count();
        behind.push((environment, count as i64));
    }
    Ok(behind)
}

type GatewayRow = (String, String, Option<String>, Option<String>, Option<String>, Option<String>, i64, i64);

async fn statuses(db: &Db, environment: Option<&str>, current: &HashMap<String, String>) -> ApiResult<Vec<GatewayStatus>> {
    let columns = "id, environment, running_version, refused_version, refused_reason, failed_apis, first_seen, last_seen";
    let rows: Vec<GatewayRow> = match environment {
        Some(environment) => {
            sqlx::query_as(&format!("SELECT {columns} FROM gateways WHERE environment = $1 ORDER BY id"))
                .bind(environment)
                .fetch_all(&db.pool)
                .await?
        }
        None => sqlx::query_as(&format!("SELECT {columns} FROM gateways ORDER BY environment, id")).fetch_all(&db.pool).await?,
    };
    let now = now_ms();
    Ok(rows
        .into_iter()
        .map(|(id, environment, running_version, refused_version, refused_reason, failed_apis, first_seen, last_seen)| GatewayStatus {
            in_sync: running_version.is_some() && current.get(&environment) == running_version.as_ref(),
            healthy: now - last_seen <= HEALTHY_WITHIN.as_millis() as i64,
            id,
            environment,
            running_version,
            refused_version,
            refused_reason,
            failed_apis: failed_apis
                .and_then(|json| serde_json::from_str::<Vec<fleet::FailedApi>>(&json).ok())
                .unwrap_or_default()
                .into_iter()
                .map(FailedApi::from)
                .collect(),
            first_seen,
            last_seen,
        })
        .collect())
}

/// List every gateway that has connected, by environment (admin or publisher).
#[utoipa::path(get, path = "/api/v1/gateways", operation_id = "list_gateways", tag = "fleet",
    responses((status = 200, body = [GatewayStatus]), (status = 401), (status = 403)), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<GatewayStatus>>> {
    caller.require(&[Role::Publisher])?;
    let environments: Vec<String> = sqlx::query_scalar("SELECT DISTINCT environment FROM gateways").fetch_all(&state.db.pool).await?;
    let mut current = HashMap::new();
    for environment in environments {
        let version = hub::publish(&state, &environment).await?.message.version;
        current.insert(environment, version);
    }
    Ok(Json(statuses(&state.db, None, &current).await?))
}

/// An environment's rollout: its current snapshot version and whether every healthy
/// gateway acknowledged running it. With `wait_ms`, answers as soon as it is done, or when
/// the time is up (admin or publisher).
#[utoipa::path(get, path = "/api/v1/environments/{name}/rollout", operation_id = "get_rollout", tag = "fleet",
    params(("name" = String, Path), RolloutQuery),
    responses((status = 200, body = Rollout), (status = 401), (status = 403), (status = 404)), security(("bearer" = [])))]
pub async fn rollout(
    State(state): State<AppState>,
    caller: Caller,
    Path(environment): Path<String>,
    QueryParams(query): QueryParams<RolloutQuery>,
) -> ApiResult<Json<Rollout>> {
    caller.require(&[Role::Publisher])?;
    let known: Option<String> =
        sqlx::query_scalar("SELECT name FROM environments WHERE name = $1").bind(&environment).fetch_optional(&state.db.pool).await?;
    if known.is_none() {
        return Err(ApiError::not_found("environment", &environment));
    }
    Ok(Json(wait_for_rollout(&state, &environment, query.wait_ms).await?))
}

/// The rollout of `environment` once every healthy gateway runs its current snapshot, or
/// as it stands after `wait_ms` (at most 30 s).
pub async fn wait_for_rollout(state: &AppState, environment: &str, wait_ms: u64) -> ApiResult<Rollout> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms).min(MAX_WAIT);
    let mut acks = state.acks.subscribe();
    // The current version is built from the database once, and again only after a change
    // (made on this node or announced by another); polls read the acknowledgements only.
    let mut changes = state.changes.subscribe();
    let mut version = hub::publish(state, environment).await?.message.version;
    loop {
        if changes.has_changed().unwrap_or(false) {
            changes.borrow_and_update();
            version = hub::publish(state, environment).await?.message.version;
        }
        let current = HashMap::from([(environment.to_owned(), version.clone())]);
        let gateways = statuses(&state.db, Some(environment), &current).await?;
        let healthy: Vec<&GatewayStatus> = gateways.iter().filter(|g| g.healthy).collect();
        let done = !healthy.is_empty() && healthy.iter().all(|g| g.in_sync);
        if done || tokio::time::Instant::now() >= deadline {
            return Ok(Rollout { environment: environment.to_owned(), version, done, gateways });
        }
        // Acknowledgements recorded by this node wake us at once; those recorded by
        // another node are seen on the next poll.
        let _ = tokio::time::timeout_at(deadline.min(tokio::time::Instant::now() + Duration::from_millis(50)), acks.changed()).await;
    }
}
