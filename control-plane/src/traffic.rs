//! Throttling tiers (business plans): subscription tiers (Unlimited, Gold, Silver,
//! Bronze, ...) and application tiers, each a request rate per unit of time, an optional
//! burst limit and an optional quota per calendar day or month in a time zone. They become
//! the throttle policy's configuration in snapshots.
//! Blocking conditions are in [`blocking`]; what a subscription used of its tier, in [`usage`].

pub mod blocking;
pub mod usage;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::db::Db;
use crate::error::{ApiError, ApiResult, JsonBody};
use crate::fleet::Change;
use portico_gateway::calendar;

/// The OpenAPI paths of this module.
#[derive(OpenApi)]
#[openapi(paths(list, upsert, delete, blocking::list, blocking::create, blocking::delete))]
pub struct Doc;

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/tiers", get(list))
        .route("/api/v1/tiers/{kind}/{name}", put(upsert).delete(delete))
        .route("/api/v1/blocking-conditions", get(blocking::list).post(blocking::create))
        .route("/api/v1/blocking-conditions/{id}", axum::routing::delete(blocking::delete))
}

/// A tier.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow, PartialEq)]
pub struct Tier {
    /// Name, unique per kind.
    pub name: String,
    /// `subscription` or `application`.
    pub kind: String,
    /// What it is for.
    pub description: String,
    /// Requests allowed per `per_ms`; none means unlimited.
    pub requests: Option<i64>,
    /// The quota's window in milliseconds.
    pub per_ms: Option<i64>,
    /// Burst control: requests allowed per `burst_per_ms`.
    pub burst_requests: Option<i64>,
    /// Burst window in milliseconds.
    pub burst_per_ms: Option<i64>,
    /// Requests allowed per calendar `quota_period`.
    pub quota_requests: Option<i64>,
    /// `day` or `month`: the quota starts over at midnight in `time_zone`.
    pub quota_period: Option<String>,
    /// The IANA time zone of the quota's days and months.
    pub time_zone: String,
}

/// The columns of a [`Tier`], in its field order.
const TIER_COLUMNS: &str =
    "name, kind, description, requests, per_ms, burst_requests, burst_per_ms, quota_requests, quota_period, time_zone";

impl Tier {
    /// The most requests per millisecond its quota allows (unlimited: infinite), to order
    /// tiers from the most restrictive.
    fn rate(&self) -> f64 {
        let rate = match (self.requests, self.per_ms) {
            (Some(requests), Some(per_ms)) if per_ms > 0 => requests as f64 / per_ms as f64,
            _ => f64::INFINITY,
        };
        let quota = match (self.quota_requests, self.quota_period.as_deref()) {
            (Some(requests), Some("day")) => requests as f64 / DAY_MS,
            (Some(requests), Some(_)) => requests as f64 / (30.0 * DAY_MS),
            _ => f64::INFINITY,
        };
        rate.min(quota)
    }

    /// The throttle policy's limits for this tier (`[]` when unlimited).
    pub fn limits(&self) -> serde_json::Value {
        let mut limits = Vec::new();
        if let (Some(requests), Some(per)) = (self.burst_requests, self.burst_per_ms) {
            limits.push(serde_json::json!({"requests": requests, "per": format!("{per}ms")}));
        }
        if let (Some(requests), Some(per)) = (self.requests, self.per_ms) {
            limits.push(serde_json::json!({"requests": requests, "per": format!("{per}ms")}));
        }
        if let (Some(requests), Some(period)) = (self.quota_requests, &self.quota_period) {
            limits.push(serde_json::json!({"requests": requests, "per": period, "time_zone": self.time_zone}));
        }
        serde_json::Value::Array(limits)
    }
}

/// Every tier of a kind.
pub async fn all(db: &Db, kind: &str) -> ApiResult<Vec<Tier>> {
    Ok(sqlx::query_as::<_, Tier>(&format!("SELECT {TIER_COLUMNS} FROM tiers WHERE kind = $1 ORDER BY name"))
        .bind(kind)
        .fetch_all(&db.pool)
        .await?)
}

/// The tier of `kind` named `name`, if there is one.
pub async fn find(db: &Db, kind: &str, name: &str) -> ApiResult<Option<Tier>> {
    Ok(sqlx::query_as::<_, Tier>(&format!("SELECT {TIER_COLUMNS} FROM tiers WHERE kind = $1 AND name = $2"))
        .bind(kind)
        .bind(name)
        .fetch_optional(&db.pool)
        .await?)
}

/// Of the subscription tiers named by `among` (every one when `None`), the most
/// restrictive: the lowest quota, by name among equals.
pub async fn most_restrictive(db: &Db, among: Option<&[String]>) -> ApiResult<Option<String>> {
    let tiers = all(db, "subscription").await?;
    Ok(tiers
        .into_iter()
        .filter(|tier| among.is_none_or(|names| names.contains(&tier.name)))
        .min_by(|a, b| a.rate().total_cmp(&b.rate()).then_with(|| a.name.cmp(&b.name)))
        .map(|tier| tier.name))
}

/// Fail with a validation error on `field` unless `name` is a tier of `kind`.
pub async fn require(db: &Db, kind: &str, name: &str, field: &str) -> ApiResult<()> {
    let found: Option<String> =
        sqlx::query_scalar("SELECT name FROM tiers WHERE kind = $1 AND name = $2").bind(kind).bind(name).fetch_optional(&db.pool).await?;
    found.map(|_| ()).ok_or_else(|| ApiError::invalid(field, format!("no {kind} tier named `{name}`")))
}

/// List all tiers (any logged-in user).
#[utoipa::path(operation_id = "list_tiers", get, path = "/api/v1/tiers", tag = "traffic", responses((status = 200, body = [Tier])), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, _caller: Caller) -> ApiResult<Json<Vec<Tier>>> {
    let mut tiers = all(&state.db, "subscription").await?;
    tiers.extend(all(&state.db, "application").await?);
    Ok(Json(tiers))
}

/// A tier's limits.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TierLimits {
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Requests per `per_ms`; omit for unlimited.
    pub requests: Option<i64>,
    /// Window in milliseconds (1000 to 86400000).
    pub per_ms: Option<i64>,
    /// Burst requests per `burst_per_ms`.
    pub burst_requests: Option<i64>,
    /// Burst window in milliseconds.
    pub burst_per_ms: Option<i64>,
    /// Requests per calendar `quota_period` (a day's or a month's quota).
    pub quota_requests: Option<i64>,
    /// `day` or `month`.
    pub quota_period: Option<String>,
    /// The IANA time zone whose midnights start the quota's periods (default `UTC`).
    pub time_zone: Option<String>,
}

const DAY_MS: f64 = 86_400_000.0;

/// Check the quota's fields; the time zone (`UTC` when none is given) as gateways will read it.
fn check_quota(limits: &TierLimits) -> ApiResult<String> {
    if let Some(period) = limits.quota_period.as_deref()
        && period != "day"
        && period != "month"
    {
        return Err(ApiError::invalid("quota_period", "`day` or `month`"));
    }
    match (limits.quota_requests, &limits.quota_period) {
        (None, None) => {}
        (Some(requests), Some(_)) if requests >= 1 => {}
        (Some(_), Some(_)) => return Err(ApiError::invalid("quota_requests", "must be at least 1")),
        (Some(_), None) => return Err(ApiError::invalid("quota_period", "needed with a quota")),
        (None, Some(_)) => return Err(ApiError::invalid("quota_requests", "needed with a period")),
    }
    let zone = limits.time_zone.clone().unwrap_or_else(|| "UTC".to_owned());
    calendar::period(0, calendar::Period::Day, &zone).map_err(|reason| ApiError::invalid("time_zone", reason))?;
    Ok(zone)
}

fn check_pair(requests: Option<i64>, per: Option<i64>, field: &str, per_field: &str) -> ApiResult<()> {
    match (requests, per) {
        (None, None) => Ok(()),
        (Some(r), Some(p)) if r >= 1 && (1000..=86_400_000).contains(&p) => Ok(()),
        (Some(r), Some(_)) if r < 1 => Err(ApiError::invalid(field, "must be at least 1")),
        (Some(_), Some(_)) => Err(ApiError::invalid(per_field, "must be from 1000 (1 s) to 86400000 (1 day)")),
        (Some(_), None) => Err(ApiError::invalid(per_field, "needed with a request count")),
        (None, Some(_)) => Err(ApiError::invalid(field, "needed with a window")),
    }
}

/// Create or replace a tier (admin).
#[utoipa::path(operation_id = "put_tier", put, path = "/api/v1/tiers/{kind}/{name}", tag = "traffic", request_body = TierLimits,
    params(("kind" = String, Path, description = "subscription or application"), ("name" = String, Path)),
    responses((status = 200, body = Tier), (status = 400), (status = 403)), security(("bearer" = [])))]
pub async fn upsert(
    State(state): State<AppState>,
    caller: Caller,
    Path((kind, name)): Path<(String, String)>,
    JsonBody(limits): JsonBody<TierLimits>,
) -> ApiResult<Json<Tier>> {
    caller.require(&[Role::Admin])?;
    if kind != "subscription" && kind != "application" {
        return Err(ApiError::invalid("kind", "`subscription` or `application`"));
    }
    if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(ApiError::invalid("name", "1 to 64 letters, digits, `-`, `_`"));
    }
    check_pair(limits.requests, limits.per_ms, "requests", "per_ms")?;
    check_pair(limits.burst_requests, limits.burst_per_ms, "burst_requests", "burst_per_ms")?;
    let time_zone = check_quota(&limits)?;
    let tier = Tier {
        name,
        kind,
        description: limits.description,
        requests: limits.requests,
        per_ms: limits.per_ms,
        burst_requests: limits.burst_requests,
        burst_per_ms: limits.burst_per_ms,
        quota_requests: limits.quota_requests,
        quota_period: limits.quota_period,
        time_zone,
    };
    let mut tx = Change::begin(&state).await?;
    sqlx::query("DELETE FROM tiers WHERE kind = $1 AND name = $2").bind(&tier.kind).bind(&tier.name).execute(&mut *tx).await?;
    sqlx::query(&format!("INSERT INTO tiers ({TIER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"))
        .bind(&tier.name)
        .bind(&tier.kind)
        .bind(&tier.description)
        .bind(tier.requests)
        .bind(tier.per_ms)
        .bind(tier.burst_requests)
        .bind(tier.burst_per_ms)
        .bind(tier.quota_requests)
        .bind(&tier.quota_period)
        .bind(&tier.time_zone)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Json(tier))
}

/// Delete a tier that nothing uses (admin).
#[utoipa::path(operation_id = "delete_tier", delete, path = "/api/v1/tiers/{kind}/{name}", tag = "traffic",
    params(("kind" = String, Path), ("name" = String, Path)),
    responses((status = 204), (status = 403, description = "not an admin"), (status = 404), (status = 409, description = "in use")), security(("bearer" = [])))]
pub async fn delete(State(state): State<AppState>, caller: Caller, Path((kind, name)): Path<(String, String)>) -> ApiResult<StatusCode> {
    caller.require(&[Role::Admin])?;
    let in_use: i64 = if kind == "application" {
        sqlx::query_scalar("SELECT COUNT(*) FROM applications WHERE tier = $1").bind(&name).fetch_one(&state.db.pool).await?
    } else {
        sqlx::query_scalar("SELECT COUNT(*) FROM subscriptions WHERE tier = $1").bind(&name).fetch_one(&state.db.pool).await?
    };
    if in_use > 0 {
        return Err(ApiError::Conflict(format!(
            "tier `{name}` is used by {in_use} {}",
            if kind == "application" { "applications" } else { "subscriptions" }
        )));
    }
    if kind == "subscription" {
        let offering: Vec<(String, String)> = sqlx::query_as("SELECT name, tiers FROM apis").fetch_all(&state.db.pool).await?;
        let offered = offering.iter().filter(|(_, tiers)| serde_json::from_str::<Vec<String>>(tiers).is_ok_and(|t| t.contains(&name)));
        if let Some((api, _)) = offered.clone().next() {
            return Err(ApiError::Conflict(format!("tier `{name}` is offered by {} API(s), such as `{api}`", offered.count())));
        }
    }
    let mut change = Change::begin(&state).await?;
    let deleted = sqlx::query("DELETE FROM tiers WHERE kind = $1 AND name = $2").bind(&kind).bind(&name).execute(&mut *change).await?;
    if deleted.rows_affected() == 0 {
        return Err(ApiError::not_found("tier", &name));
    }
    change.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
