//! Outside key managers (WSO2's third-party key managers): OpenID providers, given by their
//! issuer URL, whose tokens the gateways of chosen environments accept. The gateways fetch
//! the provider's keys through its discovery document and, with the credentials given here,
//! introspect its opaque tokens; applications map the client ids registered there (the
//! developer portal's external clients), so subscriptions and tiers still apply. Settings are
//! kept sealed (they hold the introspection secret, shown as `***`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use portico_gateway::check;
use portico_gateway::contract::defaults;
use portico_gateway::contract::environment::{ClaimMapping, Discovery, JwtIssuer};
use portico_gateway::contract::units::Duration;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::db::{Db, now_ms};
use crate::error::{ApiError, ApiResult, JsonBody};
use crate::fleet::Change;

/// What a secret is shown as.
const HIDDEN: &str = "***";

/// An outside key manager's settings.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExternalKeyManager {
    /// The provider's issuer (`iss`): an `https://` URL (`http://` on a loopback address
    /// only); its keys are fetched from `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    /// The environments whose gateways accept its tokens.
    #[schema(min_items = 1)]
    pub environments: Vec<String>,
    /// The `aud` values accepted (the resource indicator the provider gives its JWTs).
    #[schema(min_items = 1)]
    pub audiences: Vec<String>,
    /// Signature algorithms accepted; `RS256` and `ES256` when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithms: Option<Vec<String>>,
    /// Which claims carry the client id, scopes and end user (the gateway contract's
    /// `claims`); `azp` (else `client_id`), `scope` and `sub` when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub claims: Option<ClaimMapping>,
    /// How gateways keep up with it: `refresh` (default `5m`), `unknown_kid_interval`
    /// (default `30s`), `ca` (PEM; the system's roots when left out) and `introspection`
    /// (`client_id`, `client_secret`, `cache_ttl`, default `60s`) for opaque tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub discovery: Option<Discovery>,
}

/// An outside key manager as listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct NamedKeyManager {
    /// Its name.
    pub name: String,
    /// Its settings, the introspection secret as `***`.
    #[serde(flatten)]
    pub settings: ExternalKeyManager,
}

/// Where a key manager's settings are sealed.
fn sealing_context(name: &str) -> String {
    format!("key_managers.config:{name}")
}

/// Every outside key manager, by name.
async fn all(db: &Db) -> ApiResult<Vec<(String, ExternalKeyManager)>> {
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT name, config FROM key_managers ORDER BY name").fetch_all(&db.pool).await?;
    rows.into_iter()
        .map(|(name, sealed)| {
            let text = db.sealing.open(&sealed, &sealing_context(&name))?;
            let settings = serde_json::from_slice(&text)
                .map_err(|e| ApiError::Internal(format!("the settings of key manager `{name}` do not read: {e}")))?;
            Ok((name, settings))
        })
        .collect()
}

/// The outside key managers `environment` accepts, by name, as the gateway contract's
/// issuers (without their clients' applications, which the developer portal knows).
pub async fn issuers_for(db: &Db, environment: &str) -> ApiResult<Vec<(String, JwtIssuer)>> {
    Ok(all(db)
        .await?
        .into_iter()
        .filter(|(_, settings)| settings.environments.iter().any(|e| e == environment))
        .map(|(name, settings)| (name, issuer(settings)))
        .collect())
}

/// The issuer of the outside key manager `name`, if there is one.
pub async fn issuer_named(db: &Db, name: &str) -> ApiResult<Option<JwtIssuer>> {
    Ok(all(db).await?.into_iter().find(|(stored, _)| stored == name).map(|(_, settings)| issuer(settings)))
}

/// The gateway contract's issuer of `settings`.
fn issuer(settings: ExternalKeyManager) -> JwtIssuer {
    JwtIssuer {
        issuer: settings.issuer,
        audiences: settings.audiences,
        algorithms: settings.algorithms.unwrap_or_else(|| vec!["RS256".to_owned(), "ES256".to_owned()]),
        keys: Vec::new(),
        jwks: None,
        jwks_file: None,
        claims: settings.claims.unwrap_or_default(),
        leeway: Duration(defaults::JWT_LEEWAY),
        typ: None,
        require_jti: false,
        discovery: Some(settings.discovery.unwrap_or_default()),
        clients: None,
    }
}

/// `settings` as shown: the introspection secret as `***`.
fn shown(mut settings: ExternalKeyManager) -> ExternalKeyManager {
    if let Some(introspection) = settings.discovery.as_mut().and_then(|discovery| discovery.introspection.as_mut()) {
        introspection.client_secret = HIDDEN.to_owned();
    }
    settings
}

/// List the outside key managers (admin).
#[utoipa::path(get, path = "/api/v1/key-managers", operation_id = "list_key_managers", tag = "keymanager",
    responses((status = 200, body = [NamedKeyManager]), (status = 401), (status = 403)), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<NamedKeyManager>>> {
    caller.require(&[Role::Admin])?;
    Ok(Json(all(&state.db).await?.into_iter().map(|(name, settings)| NamedKeyManager { name, settings: shown(settings) }).collect()))
}

/// Create or replace an outside key manager (admin). The gateways of its environments accept
/// its tokens within a second of fetching its keys; those of environments it no longer names
/// stop. A secret given as `***` keeps the one stored.
#[utoipa::path(put, path = "/api/v1/key-managers/{name}", operation_id = "put_key_manager", tag = "keymanager",
    params(("name" = String, Path, pattern = "^[A-Za-z0-9_-]{1,64}$")), request_body = ExternalKeyManager,
    responses((status = 200, body = NamedKeyManager), (status = 400, description = "a setting a gateway would refuse, named by its field"),
        (status = 401), (status = 403)),
    security(("bearer" = [])))]
pub async fn put(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(mut settings): JsonBody<ExternalKeyManager>,
) -> ApiResult<Json<NamedKeyManager>> {
    caller.require(&[Role::Admin])?;
    let valid_name = (1..=64).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid_name {
        return Err(ApiError::invalid("name", "1 to 64 letters, digits, `-` and `_`"));
    }
    if name == "built-in" {
        return Err(ApiError::invalid("name", "`built-in` is Portico's own key manager"));
    }
    let others = all(&state.db).await?;
    if let Some(introspection) = settings.discovery.as_mut().and_then(|discovery| discovery.introspection.as_mut())
        && introspection.client_secret == HIDDEN
    {
        // Kept only for the same provider: a new issuer must not receive the old secret.
        let stored = others.iter().find(|(stored, old)| *stored == name && old.issuer == settings.issuer);
        let secret = stored.and_then(|(_, old)| old.discovery.as_ref()?.introspection.as_ref()).map(|old| old.client_secret.clone());
        introspection.client_secret = secret.ok_or_else(|| {
            ApiError::invalid(
                "discovery.introspection.client_secret",
                "give the secret (`***` keeps the stored one, for the same issuer only)",
            )
        })?;
    }
    if settings.issuer == state.settings.issuer {
        return Err(ApiError::invalid("issuer", "this is Portico's own key manager"));
    }
    let introspects =
        |settings: &ExternalKeyManager| settings.discovery.as_ref().is_some_and(|discovery| discovery.introspection.is_some());
    for (other, existing) in others.iter().filter(|(other, _)| *other != name) {
        let Some(shared) = settings.environments.iter().find(|e| existing.environments.contains(e)) else { continue };
        if existing.issuer == settings.issuer {
            return Err(ApiError::invalid("issuer", format!("`{other}` has this issuer in `{shared}` already")));
        }
        if introspects(existing) && introspects(&settings) {
            return Err(ApiError::invalid(
                "discovery.introspection",
                format!("`{other}` introspects opaque tokens in `{shared}` already: an environment has one such key manager"),
            ));
        }
    }
    if settings.environments.is_empty() {
        return Err(ApiError::invalid("environments", "name at least one environment"));
    }
    for (i, environment) in settings.environments.iter().enumerate() {
        let known: Option<String> =
            sqlx::query_scalar("SELECT name FROM environments WHERE name = $1").bind(environment).fetch_optional(&state.db.pool).await?;
        if known.is_none() {
            return Err(ApiError::invalid(format!("environments[{i}]"), format!("no environment `{environment}`")));
        }
    }
    if let Some(problem) = check::jwt_issuer(&issuer(settings.clone())).into_iter().next() {
        let field = problem.path.strip_prefix("jwt_issuers[0]").map(|rest| rest.trim_start_matches('.')).unwrap_or(&problem.path);
        let field = if field.is_empty() || field == "discovery" { "issuer" } else { field };
        return Err(ApiError::invalid(field, problem.reason));
    }
    let text = serde_json::to_string(&settings).map_err(|e| ApiError::Internal(e.to_string()))?;
    let sealed = state.db.sealing.seal(text.as_bytes(), &sealing_context(&name));
    let mut change = Change::begin(&state).await?;
    let updated =
        sqlx::query("UPDATE key_managers SET config = $1 WHERE name = $2").bind(&sealed).bind(&name).execute(&mut *change).await?;
    if updated.rows_affected() == 0 {
        sqlx::query("INSERT INTO key_managers (name, config, created_at) VALUES ($1, $2, $3)")
            .bind(&name)
            .bind(&sealed)
            .bind(now_ms())
            .execute(&mut *change)
            .await?;
    }
    change.commit().await?;
    tracing::info!(key_manager = %name, issuer = %settings.issuer, environments = ?settings.environments, by = %caller.username, "outside key manager set");
    Ok(Json(NamedKeyManager { name, settings: shown(settings) }))
}

/// Remove an outside key manager (admin): gateways stop accepting its tokens, and the client
/// ids applications mapped there are forgotten.
#[utoipa::path(delete, path = "/api/v1/key-managers/{name}", operation_id = "delete_key_manager", tag = "keymanager",
    params(("name" = String, Path)), responses((status = 204), (status = 401), (status = 403), (status = 404)), security(("bearer" = [])))]
pub async fn delete(State(state): State<AppState>, caller: Caller, Path(name): Path<String>) -> ApiResult<StatusCode> {
    caller.require(&[Role::Admin])?;
    let mut change = Change::begin(&state).await?;
    sqlx::query("DELETE FROM external_clients WHERE key_manager = $1").bind(&name).execute(&mut *change).await?;
    let deleted = sqlx::query("DELETE FROM key_managers WHERE name = $1").bind(&name).execute(&mut *change).await?;
    if deleted.rows_affected() == 0 {
        return Err(ApiError::not_found("key manager", &name));
    }
    change.commit().await?;
    tracing::info!(key_manager = %name, by = %caller.username, "outside key manager removed");
    Ok(StatusCode::NO_CONTENT)
}
