//! Applications: what a subscriber subscribes to APIs and holds credentials for. Each has
//! an owner and an application tier; subscribers see only their own, admins all.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::db::{Db, new_id, now_ms};
use crate::error::{ApiError, ApiResult, JsonBody};
use crate::fleet::Change;
use crate::{keymanager, traffic};

/// Longest description, in characters.
const MAX_DESCRIPTION: usize = 1_000;

/// An application.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Application {
    /// Id.
    pub id: String,
    /// Name, unique per owner.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Application tier: a limit on the application's requests across all its subscriptions.
    pub tier: String,
    /// User name of the owner.
    pub owner: String,
    /// Id of the owner.
    #[serde(skip)]
    pub owner_id: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// What `POST` and `PUT /api/v1/applications…` take; `PUT` replaces all three.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplicationFields {
    /// Name, unique among the owner's applications: 1 to 100 characters.
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// An application tier; `Unlimited` when left out.
    #[serde(default = "unlimited")]
    pub tier: String,
}

fn unlimited() -> String {
    "Unlimited".to_owned()
}

const COLUMNS: &str = "a.id, a.name, a.description, a.tier, u.username AS owner, a.owner_id, a.created_at";

/// The application `id` if the caller may use it: subscribers their own, admins all.
/// Others' applications are answered as not found, so that their ids reveal nothing.
pub(crate) async fn owned(db: &Db, caller: &Caller, id: &str) -> ApiResult<Application> {
    caller.require(&[Role::Subscriber])?;
    let application: Option<Application> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM applications a JOIN users u ON u.id = a.owner_id WHERE a.id = $1"))
            .bind(id)
            .fetch_optional(&db.pool)
            .await?;
    match application {
        Some(application) if caller.role == Role::Admin || application.owner_id == caller.user_id => Ok(application),
        _ => Err(ApiError::not_found("application", id)),
    }
}

/// Check the fields, and that the tier exists.
async fn check(db: &Db, fields: &ApplicationFields) -> ApiResult<()> {
    let length = fields.name.chars().count();
    if !(1..=100).contains(&length) || fields.name.trim() != fields.name || fields.name.chars().any(char::is_control) {
        return Err(ApiError::invalid("name", "1 to 100 characters, without control characters or surrounding spaces"));
    }
    if fields.description.chars().count() > MAX_DESCRIPTION {
        return Err(ApiError::invalid("description", format!("at most {MAX_DESCRIPTION} characters")));
    }
    traffic::require(db, "application", &fields.tier, "tier").await
}

/// A taken name is a conflict with a message saying so.
fn name_taken(error: sqlx::Error, name: &str) -> ApiError {
    match error {
        sqlx::Error::Database(e) if e.is_unique_violation() => {
            ApiError::Conflict(format!("you already have an application named `{name}`"))
        }
        other => other.into(),
    }
}

/// List the caller's applications (all of them for admins), by name.
#[utoipa::path(get, path = "/api/v1/applications", operation_id = "list_applications", tag = "devportal",
    responses((status = 200, body = [Application]), (status = 401), (status = 403)), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<Application>>> {
    caller.require(&[Role::Subscriber])?;
    let base = format!("SELECT {COLUMNS} FROM applications a JOIN users u ON u.id = a.owner_id");
    let applications = if caller.role == Role::Admin {
        sqlx::query_as(&format!("{base} ORDER BY u.username, a.name")).fetch_all(&state.db.pool).await?
    } else {
        sqlx::query_as(&format!("{base} WHERE a.owner_id = $1 ORDER BY a.name")).bind(&caller.user_id).fetch_all(&state.db.pool).await?
    };
    Ok(Json(applications))
}

/// Create an application owned by the caller (subscriber).
#[utoipa::path(post, path = "/api/v1/applications", operation_id = "create_application", tag = "devportal", request_body = ApplicationFields,
    responses((status = 201, body = Application), (status = 400, description = "invalid field"), (status = 401), (status = 403),
        (status = 409, description = "the caller has an application of that name")),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(fields): JsonBody<ApplicationFields>,
) -> ApiResult<(StatusCode, Json<Application>)> {
    caller.require(&[Role::Subscriber])?;
    check(&state.db, &fields).await?;
    let id = new_id();
    sqlx::query("INSERT INTO applications (id, owner_id, name, description, tier, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(&id)
        .bind(&caller.user_id)
        .bind(&fields.name)
        .bind(&fields.description)
        .bind(&fields.tier)
        .bind(now_ms())
        .execute(&state.db.pool)
        .await
        .map_err(|e| name_taken(e, &fields.name))?;
    tracing::info!(application = %id, owner = %caller.username, "application created");
    Ok((StatusCode::CREATED, Json(owned(&state.db, &caller, &id).await?)))
}

/// Read an application.
#[utoipa::path(get, path = "/api/v1/applications/{id}", operation_id = "get_application", tag = "devportal", params(("id" = String, Path)),
    responses((status = 200, body = Application), (status = 401), (status = 403), (status = 404)), security(("bearer" = [])))]
pub async fn get(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Application>> {
    Ok(Json(owned(&state.db, &caller, &id).await?))
}

/// Replace an application's name, description and tier.
#[utoipa::path(put, path = "/api/v1/applications/{id}", operation_id = "replace_application", tag = "devportal", params(("id" = String, Path)), request_body = ApplicationFields,
    responses((status = 200, body = Application), (status = 400, description = "invalid field"), (status = 401), (status = 403), (status = 404),
        (status = 409, description = "the owner has another application of that name")),
    security(("bearer" = [])))]
pub async fn replace(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(fields): JsonBody<ApplicationFields>,
) -> ApiResult<Json<Application>> {
    let current = owned(&state.db, &caller, &id).await?;
    check(&state.db, &fields).await?;
    let mut change = Change::begin(&state).await?;
    // Its access tokens claim its name and tier: a change refuses the ones issued before.
    if current.tier != fields.tier || current.name != fields.name {
        keymanager::cut_off(&mut change, &id).await?;
    }
    let updated = sqlx::query("UPDATE applications SET name = $1, description = $2, tier = $3 WHERE id = $4")
        .bind(&fields.name)
        .bind(&fields.description)
        .bind(&fields.tier)
        .bind(&id)
        .execute(&mut *change)
        .await
        .map_err(|e| name_taken(e, &fields.name))?;
    if updated.rows_affected() == 0 {
        return Err(ApiError::not_found("application", &id));
    }
    // The name and tier travel with the application's keys to the gateways.
    change.commit().await?;
    Ok(Json(owned(&state.db, &caller, &id).await?))
}

/// Delete an application with its subscriptions and credentials.
#[utoipa::path(delete, path = "/api/v1/applications/{id}", operation_id = "delete_application", tag = "devportal", params(("id" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404)), security(("bearer" = [])))]
pub async fn delete(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    owned(&state.db, &caller, &id).await?;
    // Subscriptions, the OAuth2 client (with its refresh tokens), API keys and client
    // certificates cascade.
    let mut change = Change::begin(&state).await?;
    keymanager::cut_off(&mut change, &id).await?;
    let deleted = sqlx::query("DELETE FROM applications WHERE id = $1").bind(&id).execute(&mut *change).await?;
    if deleted.rows_affected() == 0 {
        return Err(ApiError::not_found("application", &id));
    }
    tracing::info!(application = %id, by = %caller.username, "application deleted");
    change.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
