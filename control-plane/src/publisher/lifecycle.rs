//! The API lifecycle: the actions that move an API between its [`ApiStatus`]es, and the
//! one endpoint that applies an action.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::definition::Api;
use super::status::ApiStatus;
use super::store;
use crate::AppState;
use crate::auth::Caller;
use crate::db::now_ms;
use crate::error::{ApiError, ApiResult, JsonBody};
use crate::fleet::Change;

/// A lifecycle action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LifecycleAction {
    /// CREATED → PUBLISHED (needs an endpoint and an operation).
    Publish,
    /// PUBLISHED → DEPRECATED.
    Deprecate,
    /// PUBLISHED or DEPRECATED → RETIRED.
    Retire,
    /// PUBLISHED or DEPRECATED → BLOCKED.
    Block,
    /// BLOCKED → PUBLISHED.
    Unblock,
    /// PUBLISHED → CREATED (only without active subscriptions).
    Demote,
}

impl LifecycleAction {
    /// As sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Deprecate => "deprecate",
            Self::Retire => "retire",
            Self::Block => "block",
            Self::Unblock => "unblock",
            Self::Demote => "demote",
        }
    }
}

/// Every allowed transition: from, action, to.
const TRANSITIONS: &[(ApiStatus, LifecycleAction, ApiStatus)] = &[
    (ApiStatus::Created, LifecycleAction::Publish, ApiStatus::Published),
    (ApiStatus::Published, LifecycleAction::Deprecate, ApiStatus::Deprecated),
    (ApiStatus::Published, LifecycleAction::Retire, ApiStatus::Retired),
    (ApiStatus::Deprecated, LifecycleAction::Retire, ApiStatus::Retired),
    (ApiStatus::Published, LifecycleAction::Block, ApiStatus::Blocked),
    (ApiStatus::Deprecated, LifecycleAction::Block, ApiStatus::Blocked),
    (ApiStatus::Blocked, LifecycleAction::Unblock, ApiStatus::Published),
    (ApiStatus::Published, LifecycleAction::Demote, ApiStatus::Created),
];

/// The actions allowed from `from`.
pub fn allowed(from: ApiStatus) -> impl Iterator<Item = LifecycleAction> {
    TRANSITIONS.iter().filter(move |(f, _, _)| *f == from).map(|(_, action, _)| *action)
}

/// The status `action` leads to from `from`, or a conflict naming the allowed actions.
fn next(from: ApiStatus, action: LifecycleAction) -> ApiResult<ApiStatus> {
    if let Some((_, _, to)) = TRANSITIONS.iter().find(|(f, a, _)| *f == from && *a == action) {
        return Ok(*to);
    }
    let allowed: Vec<&str> = allowed(from).map(LifecycleAction::as_str).collect();
    let allowed = if allowed.is_empty() { "none".to_owned() } else { allowed.join(", ") };
    Err(ApiError::Conflict(format!("cannot {} an API that is {}; allowed actions: {allowed}", action.as_str(), from.as_str())))
}

/// The body of `POST /api/v1/apis/{id}/lifecycle`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LifecycleChange {
    /// What to do.
    pub action: LifecycleAction,
}

/// Apply a lifecycle action; answers the API in its new status.
#[utoipa::path(post, path = "/api/v1/apis/{id}/lifecycle", operation_id = "change_api_lifecycle", tag = "publisher", params(("id" = String, Path)), request_body = LifecycleChange,
    responses((status = 200, body = Api), (status = 400, description = "unknown action"), (status = 401), (status = 403), (status = 404),
        (status = 409, description = "not allowed from the current status, or its precondition fails")),
    security(("bearer" = [])))]
pub async fn change(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(change): JsonBody<LifecycleChange>,
) -> ApiResult<Json<Api>> {
    let row = store::visible(&state.db, &caller, &id).await?;
    let from = row.status()?;
    let to = next(from, change.action)?;
    match change.action {
        LifecycleAction::Publish => {
            let operations: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM operations WHERE api_id = $1").bind(&id).fetch_one(&state.db.pool).await?;
            if row.endpoints()?.is_empty() || operations == 0 {
                return Err(ApiError::Conflict("publishing needs at least one endpoint and one operation".into()));
            }
        }
        LifecycleAction::Demote => {
            // ON_HOLD counts: it becomes ACTIVE when approved.
            let subscriptions: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM subscriptions WHERE api_id = $1 AND status IN ('ACTIVE', 'ON_HOLD')")
                    .bind(&id)
                    .fetch_one(&state.db.pool)
                    .await?;
            if subscriptions > 0 {
                return Err(ApiError::Conflict(format!("the API has {subscriptions} active subscriptions; it cannot go back to CREATED")));
            }
        }
        _ => {}
    }
    // Compare and set: a concurrent change of status makes this one fail rather than be lost.
    let mut change = Change::begin(&state).await?;
    let updated = sqlx::query("UPDATE apis SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4")
        .bind(to.as_str())
        .bind(now_ms())
        .bind(&id)
        .bind(from.as_str())
        .execute(&mut *change)
        .await?;
    if updated.rows_affected() == 0 {
        return Err(ApiError::Conflict("the API changed meanwhile; read it again and retry".into()));
    }
    change.commit().await?;
    tracing::info!(api = %id, from = from.as_str(), to = to.as_str(), "API lifecycle changed");
    Ok(Json(store::load(&state.db, &id).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_names_its_allowed_actions() {
        let error = next(ApiStatus::Retired, LifecycleAction::Publish).unwrap_err().to_string();
        assert!(error.contains("RETIRED") && error.contains("none"), "{error}");
        let error = next(ApiStatus::Published, LifecycleAction::Publish).unwrap_err().to_string();
        assert!(error.contains("deprecate, retire, block, demote"), "{error}");
        assert_eq!(next(ApiStatus::Blocked, LifecycleAction::Unblock).unwrap(), ApiStatus::Published);
    }
}
