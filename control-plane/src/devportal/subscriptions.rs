//! Subscriptions of applications to published APIs, each with a subscription tier. When
//! the `subscription_approval` setting is on, new subscriptions wait ON_HOLD until the
//! API's publisher (or an admin) approves or rejects them.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use portico_gateway::contract::counters::CountersConfig;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::applications::owned;
use crate::AppState;
use crate::auth::{Caller, Role};
use crate::db::{Db, new_id, now_ms};
use crate::error::{ApiError, ApiResult, JsonBody, QueryParams};
use crate::fleet::Change;
use crate::{keymanager, traffic};

/// The key in `settings` that, set to `true`, makes new subscriptions wait for approval.
const APPROVAL_SETTING: &str = "subscription_approval";

/// Where a subscription stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SubscriptionStatus {
    /// Waiting for approval; gateways do not accept it yet.
    OnHold,
    /// In force.
    Active,
    /// Suspended.
    Blocked,
    /// Refused by an approver.
    Rejected,
}

impl SubscriptionStatus {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OnHold => "ON_HOLD",
            Self::Active => "ACTIVE",
            Self::Blocked => "BLOCKED",
            Self::Rejected => "REJECTED",
        }
    }

    /// From its stored form.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ON_HOLD" => Some(Self::OnHold),
            "ACTIVE" => Some(Self::Active),
            "BLOCKED" => Some(Self::Blocked),
            "REJECTED" => Some(Self::Rejected),
            _ => None,
        }
    }
}

/// A subscription, with the names of what it links.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Subscription {
    /// Id.
    pub id: String,
    /// The subscribing application.
    pub application_id: String,
    /// Its name.
    pub application_name: String,
    /// User name of the application's owner.
    pub owner: String,
    /// The API.
    pub api_id: String,
    /// Its name.
    pub api_name: String,
    /// Its version.
    pub api_version: String,
    /// Its lifecycle status.
    pub api_status: String,
    /// Subscription tier.
    pub tier: String,
    /// Where the subscription stands.
    pub status: SubscriptionStatus,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

#[derive(Debug, sqlx::FromRow)]
struct Row {
    id: String,
    application_id: String,
    application_name: String,
    owner: String,
    api_id: String,
    api_name: String,
    api_version: String,
    api_status: String,
    api_owner_id: String,
    tier: String,
    status: String,
    created_at: i64,
}

impl Row {
    fn status(&self) -> ApiResult<SubscriptionStatus> {
        SubscriptionStatus::parse(&self.status)
            .ok_or_else(|| ApiError::Internal(format!("subscription {} has the unknown status {}", self.id, self.status)))
    }

    fn into_subscription(self) -> ApiResult<Subscription> {
        Ok(Subscription {
            status: self.status()?,
            id: self.id,
            application_id: self.application_id,
            application_name: self.application_name,
            owner: self.owner,
            api_id: self.api_id,
            api_name: self.api_name,
            api_version: self.api_version,
            api_status: self.api_status,
            tier: self.tier,
            created_at: self.created_at,
        })
    }
}

const SELECT: &str = "SELECT s.id, s.application_id, ap.name AS application_name, u.username AS owner, s.api_id, a.name AS api_name, \
     a.version AS api_version, a.status AS api_status, a.owner_id AS api_owner_id, s.tier, s.status, s.created_at \
     FROM subscriptions s JOIN applications ap ON ap.id = s.application_id JOIN users u ON u.id = ap.owner_id JOIN apis a ON a.id = s.api_id";

async fn row(db: &Db, id: &str) -> ApiResult<Option<Row>> {
    Ok(sqlx::query_as(&format!("{SELECT} WHERE s.id = $1")).bind(id).fetch_optional(&db.pool).await?)
}

fn into_subscriptions(rows: Vec<Row>) -> ApiResult<Vec<Subscription>> {
    rows.into_iter().map(Row::into_subscription).collect()
}

/// Whether new subscriptions wait for approval.
async fn approval_required(db: &Db) -> ApiResult<bool> {
    let value: Option<String> =
        sqlx::query_scalar("SELECT value FROM settings WHERE key = $1").bind(APPROVAL_SETTING).fetch_optional(&db.pool).await?;
    Ok(value.as_deref() == Some("true"))
}

/// A subscription to make.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSubscription {
    /// The API, from the catalogue; it must be PUBLISHED.
    pub api_id: String,
    /// One of the subscription tiers the API offers; the most restrictive of them when
    /// left out.
    #[serde(default)]
    pub tier: Option<String>,
}

/// List an application's subscriptions, oldest first.
#[utoipa::path(get, path = "/api/v1/applications/{id}/subscriptions", operation_id = "list_application_subscriptions", tag = "devportal", params(("id" = String, Path)),
    responses((status = 200, body = [Subscription]), (status = 401), (status = 403), (status = 404)), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Vec<Subscription>>> {
    owned(&state.db, &caller, &id).await?;
    let rows: Vec<Row> = sqlx::query_as(&format!("{SELECT} WHERE s.application_id = $1 ORDER BY s.created_at, a.name, a.version"))
        .bind(&id)
        .fetch_all(&state.db.pool)
        .await?;
    Ok(Json(into_subscriptions(rows)?))
}

/// Subscribe an application to a PUBLISHED API. The subscription is ACTIVE at once, or
/// ON_HOLD until approved when approval is required.
#[utoipa::path(post, path = "/api/v1/applications/{id}/subscriptions", operation_id = "subscribe", tag = "devportal", params(("id" = String, Path)), request_body = NewSubscription,
    responses((status = 201, body = Subscription), (status = 400, description = "invalid field"), (status = 401), (status = 403), (status = 404),
        (status = 409, description = "already subscribed, or the API is not PUBLISHED")),
    security(("bearer" = [])))]
pub async fn subscribe(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(new): JsonBody<NewSubscription>,
) -> ApiResult<(StatusCode, Json<Subscription>)> {
    owned(&state.db, &caller, &id).await?;
    let api: Option<(String, String)> =
        sqlx::query_as("SELECT status, tiers FROM apis WHERE id = $1").bind(&new.api_id).fetch_optional(&state.db.pool).await?;
    let offered = match api {
        None => return Err(ApiError::invalid("api_id", format!("no API with the id `{}`", new.api_id))),
        Some((status, _)) if status != "PUBLISHED" => {
            return Err(ApiError::Conflict(format!("the API is {status}; only PUBLISHED APIs take new subscriptions")));
        }
        Some((_, tiers)) => serde_json::from_str::<Vec<String>>(&tiers).map_err(|e| ApiError::Internal(format!("stored tiers: {e}")))?,
    };
    // The publisher's choice; an API saved before tiers were offered offers the most restrictive.
    let offered = if offered.is_empty() { traffic::most_restrictive(&state.db, None).await?.into_iter().collect() } else { offered };
    let tier = match new.tier {
        Some(tier) if offered.contains(&tier) => tier,
        Some(tier) => return Err(ApiError::invalid("tier", format!("this API does not offer `{tier}`; it offers {}", offered.join(", ")))),
        None => traffic::most_restrictive(&state.db, Some(&offered))
            .await?
            .ok_or_else(|| ApiError::Conflict("the API offers no subscription tier that still exists".into()))?,
    };
    let status = if approval_required(&state.db).await? { SubscriptionStatus::OnHold } else { SubscriptionStatus::Active };
    let subscription_id = new_id();
    // One statement, so that a lifecycle change between the check above and here is seen.
    let mut change = Change::begin(&state).await?;
    let inserted = sqlx::query(
        "INSERT INTO subscriptions (id, application_id, api_id, tier, status, created_at) \
         SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM apis WHERE id = $3 AND status = 'PUBLISHED')",
    )
    .bind(&subscription_id)
    .bind(&id)
    .bind(&new.api_id)
    .bind(&tier)
    .bind(status.as_str())
    .bind(now_ms())
    .execute(&mut *change)
    .await
    .map_err(|e| match e {
        sqlx::Error::Database(e) if e.is_unique_violation() => {
            ApiError::Conflict("the application is already subscribed to this API".into())
        }
        other => other.into(),
    })?;
    if inserted.rows_affected() == 0 {
        return Err(ApiError::Conflict("the API is no longer PUBLISHED".into()));
    }
    tracing::info!(subscription = %subscription_id, application = %id, api = %new.api_id, status = status.as_str(), "subscribed");
    change.commit().await?;
    let row = row(&state.db, &subscription_id).await?.ok_or_else(|| ApiError::not_found("subscription", &subscription_id))?;
    Ok((StatusCode::CREATED, Json(row.into_subscription()?)))
}

/// Remove a subscription of an application.
#[utoipa::path(delete, path = "/api/v1/applications/{id}/subscriptions/{sub_id}", operation_id = "unsubscribe", tag = "devportal",
    params(("id" = String, Path), ("sub_id" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404)), security(("bearer" = [])))]
pub async fn unsubscribe(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, sub_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    owned(&state.db, &caller, &id).await?;
    let mut change = Change::begin(&state).await?;
    keymanager::cut_off(&mut change, &id).await?;
    let deleted = sqlx::query("DELETE FROM subscriptions WHERE id = $1 AND application_id = $2")
        .bind(&sub_id)
        .bind(&id)
        .execute(&mut *change)
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(ApiError::not_found("subscription", &sub_id));
    }
    tracing::info!(subscription = %sub_id, application = %id, "unsubscribed");
    change.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Which environment's counters to read.
#[derive(Debug, Deserialize, IntoParams)]
pub struct UsageQuery {
    /// The environment whose gateways counted the requests; `default` when left out.
    pub environment: Option<String>,
}

/// What a subscription has used of its tier's limits on one environment.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionUsage {
    /// The subscription.
    pub subscription_id: String,
    /// Its tier.
    pub tier: String,
    /// The environment whose counters were read.
    pub environment: String,
    /// Each limit of the tier (burst, rate, calendar quota) with what is left of it; none
    /// for an unlimited tier.
    pub limits: Vec<traffic::usage::LimitUsage>,
}

/// What a subscription has used of its tier's limits on an environment, read from the
/// store its gateways share (the application's owner, or an admin): 409 when the
/// environment's gateways count each in its own process, 503 when the store does not answer.
#[utoipa::path(get, path = "/api/v1/applications/{id}/subscriptions/{sub_id}/usage", operation_id = "subscription_usage", tag = "devportal",
    params(("id" = String, Path), ("sub_id" = String, Path), UsageQuery),
    responses((status = 200, body = SubscriptionUsage), (status = 400, description = "no such environment"), (status = 401), (status = 403),
        (status = 404), (status = 409, description = "the environment's counters are not shared"), (status = 503, description = "the counters' store did not answer")),
    security(("bearer" = [])))]
pub async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, sub_id)): Path<(String, String)>,
    QueryParams(query): QueryParams<UsageQuery>,
) -> ApiResult<Json<SubscriptionUsage>> {
    owned(&state.db, &caller, &id).await?;
    let subscription = row(&state.db, &sub_id).await?.filter(|row| row.application_id == id);
    let subscription = subscription.ok_or_else(|| ApiError::not_found("subscription", &sub_id))?;
    let environment = query.environment.unwrap_or_else(|| "default".to_owned());
    let redis = match crate::publisher::counters(&state.db, &environment).await? {
        Some(CountersConfig { redis: Some(redis) }) => redis,
        missing_or_local => {
            state.counter_readers.forget(&environment);
            return Err(match missing_or_local {
                None => ApiError::invalid("environment", format!("no environment named `{environment}`")),
                Some(_) => ApiError::Conflict(format!(
                    "the gateways of `{environment}` count each in its own process; usage is known once they share a store \
                     (PUT /api/v1/environments/{environment}/counters)"
                )),
            });
        }
    };
    let limits = match traffic::find(&state.db, "subscription", &subscription.tier).await? {
        None => Vec::new(),
        Some(tier) => {
            let subscribed = traffic::usage::Subscribed {
                tier: &tier,
                api_name: &subscription.api_name,
                api_version: &subscription.api_version,
                application_id: &subscription.application_id,
            };
            traffic::usage::usage(&state.counter_readers, &environment, &redis, &subscribed, now_ms() as u64).await?
        }
    };
    Ok(Json(SubscriptionUsage { subscription_id: subscription.id, tier: subscription.tier, environment, limits }))
}

/// The filter of `GET /api/v1/subscriptions`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct SubscriptionFilter {
    /// Only subscriptions in this status: `ON_HOLD`, `ACTIVE`, `BLOCKED` or `REJECTED`.
    pub status: Option<String>,
    /// Only subscriptions to this API.
    pub api_id: Option<String>,
}

/// List the subscriptions to the caller's APIs (to all APIs for admins), oldest first:
/// with `?status=ON_HOLD`, the ones waiting for approval (publisher).
#[utoipa::path(get, path = "/api/v1/subscriptions", operation_id = "list_subscriptions", tag = "devportal", params(SubscriptionFilter),
    responses((status = 200, body = [Subscription]), (status = 400, description = "unknown status"), (status = 401), (status = 403)),
    security(("bearer" = [])))]
pub async fn queue(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(filter): QueryParams<SubscriptionFilter>,
) -> ApiResult<Json<Vec<Subscription>>> {
    caller.require(&[Role::Publisher])?;
    let status = match filter.status.as_deref() {
        None | Some("") => None,
        Some(text) => {
            Some(SubscriptionStatus::parse(text).ok_or_else(|| ApiError::invalid("status", "one of ON_HOLD, ACTIVE, BLOCKED, REJECTED"))?)
        }
    };
    let mut sql = format!("{SELECT} WHERE 1 = 1");
    let mut binds = Vec::new();
    if caller.role != Role::Admin {
        binds.push(caller.user_id.clone());
        sql.push_str(&format!(" AND a.owner_id = ${}", binds.len()));
    }
    if let Some(status) = status {
        binds.push(status.as_str().to_owned());
        sql.push_str(&format!(" AND s.status = ${}", binds.len()));
    }
    if let Some(api_id) = filter.api_id.filter(|id| !id.is_empty()) {
        binds.push(api_id);
        sql.push_str(&format!(" AND s.api_id = ${}", binds.len()));
    }
    sql.push_str(" ORDER BY s.created_at, s.id");
    let mut query = sqlx::query_as::<_, Row>(&sql);
    for bind in &binds {
        query = query.bind(bind);
    }
    Ok(Json(into_subscriptions(query.fetch_all(&state.db.pool).await?)?))
}

/// Move an ON_HOLD subscription to `to`, if the caller publishes its API (or is an admin).
async fn decide(state: &AppState, caller: &Caller, sub_id: &str, to: SubscriptionStatus) -> ApiResult<Subscription> {
    caller.require(&[Role::Publisher])?;
    let current = row(&state.db, sub_id).await?.filter(|row| caller.role == Role::Admin || row.api_owner_id == caller.user_id);
    let Some(current) = current else {
        return Err(ApiError::not_found("subscription", sub_id));
    };
    let mut change = Change::begin(state).await?;
    let updated = sqlx::query("UPDATE subscriptions SET status = $1 WHERE id = $2 AND status = $3")
        .bind(to.as_str())
        .bind(sub_id)
        .bind(SubscriptionStatus::OnHold.as_str())
        .execute(&mut *change)
        .await?;
    if updated.rows_affected() == 0 {
        let now = row(&state.db, sub_id).await?.map(|row| row.status).unwrap_or(current.status);
        return Err(ApiError::Conflict(format!("the subscription is {now}; only ON_HOLD subscriptions can be approved or rejected")));
    }
    change.commit().await?;
    tracing::info!(subscription = %sub_id, status = to.as_str(), by = %caller.username, "subscription decided");
    let decided = row(&state.db, sub_id).await?.ok_or_else(|| ApiError::not_found("subscription", sub_id))?;
    decided.into_subscription()
}

/// Approve an ON_HOLD subscription: it becomes ACTIVE (publisher of the API, or admin).
#[utoipa::path(post, path = "/api/v1/subscriptions/{sub_id}/approve", operation_id = "approve_subscription", tag = "devportal", params(("sub_id" = String, Path)),
    responses((status = 200, body = Subscription), (status = 401), (status = 403), (status = 404), (status = 409, description = "not ON_HOLD")),
    security(("bearer" = [])))]
pub async fn approve(State(state): State<AppState>, caller: Caller, Path(sub_id): Path<String>) -> ApiResult<Json<Subscription>> {
    Ok(Json(decide(&state, &caller, &sub_id, SubscriptionStatus::Active).await?))
}

/// Reject an ON_HOLD subscription: it becomes REJECTED (publisher of the API, or admin).
#[utoipa::path(post, path = "/api/v1/subscriptions/{sub_id}/reject", operation_id = "reject_subscription", tag = "devportal", params(("sub_id" = String, Path)),
    responses((status = 200, body = Subscription), (status = 401), (status = 403), (status = 404), (status = 409, description = "not ON_HOLD")),
    security(("bearer" = [])))]
pub async fn reject(State(state): State<AppState>, caller: Caller, Path(sub_id): Path<String>) -> ApiResult<Json<Subscription>> {
    Ok(Json(decide(&state, &caller, &sub_id, SubscriptionStatus::Rejected).await?))
}

/// Whether new subscriptions wait for approval.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalSetting {
    /// `true`: new subscriptions start ON_HOLD.
    pub enabled: bool,
}

/// Whether new subscriptions wait for approval (any logged-in user).
#[utoipa::path(get, path = "/api/v1/settings/subscription_approval", operation_id = "get_subscription_approval", tag = "devportal",
    responses((status = 200, body = ApprovalSetting), (status = 401)), security(("bearer" = [])))]
pub async fn get_approval(State(state): State<AppState>, _caller: Caller) -> ApiResult<Json<ApprovalSetting>> {
    Ok(Json(ApprovalSetting { enabled: approval_required(&state.db).await? }))
}

/// Turn subscription approval on or off (admin). Subscriptions already ON_HOLD stay so.
#[utoipa::path(put, path = "/api/v1/settings/subscription_approval", operation_id = "set_subscription_approval", tag = "devportal", request_body = ApprovalSetting,
    responses((status = 200, body = ApprovalSetting), (status = 400), (status = 401), (status = 403)), security(("bearer" = [])))]
pub async fn set_approval(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(setting): JsonBody<ApprovalSetting>,
) -> ApiResult<Json<ApprovalSetting>> {
    caller.require(&[Role::Admin])?;
    sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
        .bind(APPROVAL_SETTING)
        .bind(if setting.enabled { "true" } else { "false" })
        .execute(&state.db.pool)
        .await?;
    tracing::info!(enabled = setting.enabled, by = %caller.username, "subscription approval set");
    Ok(Json(setting))
}
