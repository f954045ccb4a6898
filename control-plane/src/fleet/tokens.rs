//! Gateway tokens: the credential a gateway presents, one or more per environment, made by
//! an admin and shown once (the database keeps their sha256). A request from a gateway
//! is a [`GatewayCaller`]: its token, id, environment and protocol version all checked.

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use portico_gateway::contract::fleet::{ENVIRONMENT_HEADER, GATEWAY_HEADER, PROTOCOL_HEADER, PROTOCOL_VERSION};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{Caller, Role, random_token, token_hash};
use crate::db::{new_id, now_ms};
use crate::error::{ApiError, ApiResult, JsonBody};

/// A gateway token, without its secret.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct GatewayToken {
    /// Its id.
    pub id: String,
    /// The environment it opens.
    pub environment: String,
    /// What it is for.
    pub description: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// The body of `POST /api/v1/environments/{name}/gateway-tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGatewayToken {
    /// What it is for (e.g. the gateways that use it).
    #[serde(default)]
    pub description: String,
}

/// A token just made: `token` is shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedGatewayToken {
    /// The token's record.
    #[serde(flatten)]
    pub record: GatewayToken,
    /// The secret to give the gateways (`PORTICO_GATEWAY_TOKEN` or `--token-file`).
    pub token: String,
}

/// Make a gateway token for an environment (admin).
#[utoipa::path(post, path = "/api/v1/environments/{name}/gateway-tokens", operation_id = "create_gateway_token", tag = "fleet",
    params(("name" = String, Path)), request_body = NewGatewayToken,
    responses((status = 201, body = IssuedGatewayToken), (status = 400), (status = 401), (status = 403), (status = 404)), security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(environment): Path<String>,
    JsonBody(new): JsonBody<NewGatewayToken>,
) -> ApiResult<(StatusCode, Json<IssuedGatewayToken>)> {
    caller.require(&[Role::Admin])?;
    if new.description.len() > 1000 {
        return Err(ApiError::invalid("description", "at most 1000 characters"));
    }
    let known: Option<String> =
        sqlx::query_scalar("SELECT name FROM environments WHERE name = $1").bind(&environment).fetch_optional(&state.db.pool).await?;
    if known.is_none() {
        return Err(ApiError::not_found("environment", &environment));
    }
    let token = format!("pgw_{}", random_token());
    let record = GatewayToken { id: new_id(), environment, description: new.description, created_at: now_ms() };
    sqlx::query("INSERT INTO gateway_tokens (id, environment, token_hash, description, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&record.id)
        .bind(&record.environment)
        .bind(token_hash(&token))
        .bind(&record.description)
        .bind(record.created_at)
        .execute(&state.db.pool)
        .await?;
    tracing::info!(environment = %record.environment, id = %record.id, by = %caller.username, "gateway token created");
    Ok((StatusCode::CREATED, Json(IssuedGatewayToken { record, token })))
}

/// List an environment's gateway tokens (admin).
#[utoipa::path(get, path = "/api/v1/environments/{name}/gateway-tokens", operation_id = "list_gateway_tokens", tag = "fleet",
    params(("name" = String, Path)), responses((status = 200, body = [GatewayToken]), (status = 401), (status = 403)), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, caller: Caller, Path(environment): Path<String>) -> ApiResult<Json<Vec<GatewayToken>>> {
    caller.require(&[Role::Admin])?;
    Ok(Json(
        sqlx::query_as("SELECT id, environment, description, created_at FROM gateway_tokens WHERE environment = $1 ORDER BY created_at")
            .bind(&environment)
            .fetch_all(&state.db.pool)
            .await?,
    ))
}

/// Delete a gateway token (admin): gateways using it are cut off within seconds.
#[utoipa::path(delete, path = "/api/v1/environments/{name}/gateway-tokens/{id}", operation_id = "delete_gateway_token", tag = "fleet",
    params(("name" = String, Path), ("id" = String, Path)), responses((status = 204), (status = 401), (status = 403), (status = 404)), security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path((environment, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require(&[Role::Admin])?;
    let deleted = sqlx::query("DELETE FROM gateway_tokens WHERE id = $1 AND environment = $2")
        .bind(&id)
        .bind(&environment)
        .execute(&state.db.pool)
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(ApiError::not_found("gateway token", &id));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// A gateway calling the fleet endpoints.
#[derive(Debug, Clone)]
pub struct GatewayCaller {
    /// The gateway's id.
    pub id: String,
    /// Its environment (the token's).
    pub environment: String,
    /// sha256 of its token, to see later whether the token still exists.
    pub token_hash: String,
}

impl GatewayCaller {
    /// Whether the token it came with still exists.
    pub async fn still_allowed(&self, state: &AppState) -> ApiResult<bool> {
        let found: Option<String> = sqlx::query_scalar("SELECT id FROM gateway_tokens WHERE token_hash = $1")
            .bind(&self.token_hash)
            .fetch_optional(&state.db.pool)
            .await?;
        Ok(found.is_some())
    }
}

impl FromRequestParts<AppState> for GatewayCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let certified = parts.extensions.get::<crate::ClientCertified>().is_some_and(|c| c.0);
        if state.settings.fleet_client_certificates && !certified {
            return Err(ApiError::Unauthorized(
                "this control plane requires gateways to present a client certificate (mutual TLS) besides their token".into(),
            ));
        }
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        let protocol = header(PROTOCOL_HEADER).unwrap_or_default();
        if protocol != PROTOCOL_VERSION.to_string() {
            return Err(ApiError::invalid(
                PROTOCOL_HEADER,
                format!("protocol `{protocol}` is not supported; this control plane speaks {PROTOCOL_VERSION}"),
            ));
        }
        let token = header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| ApiError::Unauthorized("send the environment's gateway token as `Authorization: Bearer <token>`".into()))?;
        let hash = token_hash(token);
        let environment: Option<String> = sqlx::query_scalar("SELECT environment FROM gateway_tokens WHERE token_hash = $1")
            .bind(&hash)
            .fetch_optional(&state.db.pool)
            .await?;
        let environment = environment.ok_or_else(|| ApiError::Unauthorized("unknown gateway token".into()))?;
        let id = header(GATEWAY_HEADER).unwrap_or_default();
        if id.is_empty() || id.len() > 128 || !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:@".contains(c)) {
            return Err(ApiError::invalid(GATEWAY_HEADER, "a gateway id of 1 to 128 letters, digits, `-`, `_`, `.`, `:` or `@`"));
        }
        let asked = header(ENVIRONMENT_HEADER).unwrap_or_default();
        if asked != environment {
            return Err(ApiError::Forbidden(format!("this token is for environment `{environment}`, not `{asked}`")));
        }
        Ok(Self { id: id.to_owned(), environment, token_hash: hash })
    }
}
