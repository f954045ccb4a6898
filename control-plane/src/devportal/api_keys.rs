//! API keys of applications. A key is shown once, when made; the database keeps its
//! HMAC-SHA256 under a server secret (itself in `settings`, made on first use), which is
//! also what gateways receive. Revoked keys are kept, marked, for the record.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use hmac::{Hmac, Mac};
use portico_gateway::contract::hex;
use rand::RngCore;
use serde::Serialize;
use sha2::Sha256;
use utoipa::ToSchema;

use super::applications::owned;

use crate::AppState;
use crate::auth::{Caller, random_token};
use crate::db::{Db, new_id, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::fleet::Change;
use crate::secrets;

/// The key in `settings` of the HMAC secret, hex.
const SECRET_SETTING: &str = secrets::HMAC_SETTING;

/// What every key starts with, so that people and scanners can tell one when they see it.
const KEY_PREFIX: &str = "pk_";

/// How many leading characters of a key are kept to tell keys apart.
const SHOWN_PREFIX: usize = 8;

/// The server's API-key HMAC secret, made (32 random bytes) on first use. Safe when
/// several control planes start at once: the first insert wins and all read it back.
pub async fn api_key_hmac_secret(db: &Db) -> ApiResult<Vec<u8>> {
    let select = "SELECT value FROM settings WHERE key = $1";
    let mut stored: Option<String> = sqlx::query_scalar(select).bind(SECRET_SETTING).fetch_optional(&db.pool).await?;
    if stored.is_none() {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(SECRET_SETTING)
            .bind(db.sealing.seal(hex::encode(&secret).as_bytes(), secrets::HMAC_CONTEXT))
            .execute(&db.pool)
            .await?;
        stored = Some(sqlx::query_scalar(select).bind(SECRET_SETTING).fetch_one(&db.pool).await?);
    }
    let text = String::from_utf8(db.sealing.open(&stored.unwrap_or_default(), secrets::HMAC_CONTEXT)?).unwrap_or_default();
    hex::decode(&text)
        .filter(|secret| secret.len() >= 16)
        .ok_or_else(|| ApiError::Internal(format!("the setting {SECRET_SETTING} is not hex of 16 bytes or more")))
}

/// Lower-case hex of HMAC-SHA256(`secret`, `key`): how keys are stored and sent to gateways.
pub fn api_key_hash(secret: &[u8], key: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(key.as_bytes());
    hex::encode(&mac.finalize().into_bytes())
}

/// A key that gateways accept, with who holds it and what it may call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyOwner {
    /// [`api_key_hash`] of the key.
    pub key_hash: String,
    /// The application holding it.
    pub application_id: String,
    /// Its name.
    pub application_name: String,
    /// Its application tier.
    pub application_tier: String,
    /// User name of the application's owner.
    pub owner_username: String,
    /// The application's ACTIVE subscriptions to PUBLISHED or DEPRECATED APIs: subscription
    /// tier by `name@version` of the API.
    pub subscriptions: BTreeMap<String, String>,
    /// Revoked (within [`REVOKED_KEYS_LISTED_FOR`]): gateways refuse it.
    pub revoked: bool,
}

/// How long a revoked key stays listed for gateways, as a revocation beside its consumer:
/// so that revoking one changes only the environment's revocations, which running gateways
/// take as a small delta rather than a whole new environment. Older revoked keys are left
/// out of the next environment built.
pub const REVOKED_KEYS_LISTED_FOR_MS: i64 = 24 * 3600 * 1000;

/// Every key gateways must know: those not revoked and those revoked lately, oldest first,
/// with its application and subscriptions.
pub async fn listed_api_keys(db: &Db) -> ApiResult<Vec<ApiKeyOwner>> {
    let since = now_ms() - REVOKED_KEYS_LISTED_FOR_MS;
    let keys: Vec<(String, String, String, String, String, Option<i64>)> = sqlx::query_as(
        "SELECT k.key_hash, ap.id, ap.name, ap.tier, u.username, k.revoked_at FROM api_keys k \
         JOIN applications ap ON ap.id = k.application_id JOIN users u ON u.id = ap.owner_id \
         WHERE k.revoked_at IS NULL OR k.revoked_at > $1 ORDER BY k.created_at, k.id",
    )
    .bind(since)
    .fetch_all(&db.pool)
    .await?;
    let by_application = subscriptions_of_holders(db, since).await?;
    Ok(keys
        .into_iter()
        .map(|(key_hash, application_id, application_name, application_tier, owner_username, revoked_at)| ApiKeyOwner {
            subscriptions: by_application.get(&application_id).cloned().unwrap_or_default(),
            revoked: revoked_at.is_some(),
            key_hash,
            application_id,
            application_name,
            application_tier,
            owner_username,
        })
        .collect())
}

/// The ACTIVE subscriptions to PUBLISHED or DEPRECATED APIs (tier by `name@version`) of
/// every application holding a credential gateways must know: a key not revoked before
/// `keys_since` (milliseconds since the Unix epoch), a client certificate, or a client at
/// an outside key manager.
pub(super) async fn subscriptions_of_holders(db: &Db, keys_since: i64) -> ApiResult<HashMap<String, BTreeMap<String, String>>> {
    let subscriptions: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT s.application_id, a.name, a.version, s.tier FROM subscriptions s JOIN apis a ON a.id = s.api_id \
         WHERE s.status = 'ACTIVE' AND a.status IN ('PUBLISHED', 'DEPRECATED') \
         AND (EXISTS (SELECT 1 FROM api_keys k WHERE k.application_id = s.application_id AND (k.revoked_at IS NULL OR k.revoked_at > $1)) \
         OR EXISTS (SELECT 1 FROM client_certificates c WHERE c.application_id = s.application_id) \
         OR EXISTS (SELECT 1 FROM external_clients e WHERE e.application_id = s.application_id))",
    )
    .bind(keys_since)
    .fetch_all(&db.pool)
    .await?;
    let mut by_application: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    for (application_id, name, version, tier) in subscriptions {
        by_application.entry(application_id).or_default().insert(format!("{name}@{version}"), tier);
    }
    Ok(by_application)
}

/// An API key as listed: never the key or its hash.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct ApiKey {
    /// Id.
    pub id: String,
    /// The key's first characters.
    pub prefix: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
}

/// A new API key, as answered once when made.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NewApiKey {
    /// Id.
    pub id: String,
    /// The key: shown this once, never again. Send it as the API's key-auth policy expects.
    pub key: String,
    /// Its first characters, as listed.
    pub prefix: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// List an application's API keys, revoked ones included, oldest first.
#[utoipa::path(get, path = "/api/v1/applications/{id}/api-keys", operation_id = "list_api_keys", tag = "devportal", params(("id" = String, Path)),
    responses((status = 200, body = [ApiKey]), (status = 401), (status = 403), (status = 404)), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Vec<ApiKey>>> {
    owned(&state.db, &caller, &id).await?;
    let keys = sqlx::query_as::<_, ApiKey>(
        "SELECT id, prefix, created_at, revoked_at FROM api_keys WHERE application_id = $1 ORDER BY created_at, id",
    )
    .bind(&id)
    .fetch_all(&state.db.pool)
    .await?;
    Ok(Json(keys))
}

/// Make an API key for an application; the answer holds the key, shown this once.
#[utoipa::path(post, path = "/api/v1/applications/{id}/api-keys", operation_id = "create_api_key", tag = "devportal", params(("id" = String, Path)),
    responses((status = 201, body = NewApiKey), (status = 401), (status = 403), (status = 404)), security(("bearer" = [])))]
pub async fn create(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<(StatusCode, Json<NewApiKey>)> {
    owned(&state.db, &caller, &id).await?;
    let secret = api_key_hmac_secret(&state.db).await?;
    let key = format!("{KEY_PREFIX}{}", random_token());
    let new = NewApiKey { id: new_id(), prefix: key[..SHOWN_PREFIX].to_owned(), key, created_at: now_ms() };
    let mut change = Change::begin(&state).await?;
    sqlx::query("INSERT INTO api_keys (id, application_id, key_hash, prefix, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&new.id)
        .bind(&id)
        .bind(api_key_hash(&secret, &new.key))
        .bind(&new.prefix)
        .bind(new.created_at)
        .execute(&mut *change)
        .await?;
    tracing::info!(application = %id, key = %new.id, prefix = %new.prefix, "API key created");
    change.commit().await?;
    Ok((StatusCode::CREATED, Json(new)))
}

/// Revoke an application's API key; revoking it again changes nothing.
#[utoipa::path(delete, path = "/api/v1/applications/{id}/api-keys/{key_id}", operation_id = "revoke_api_key", tag = "devportal",
    params(("id" = String, Path), ("key_id" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404)), security(("bearer" = [])))]
pub async fn revoke(State(state): State<AppState>, caller: Caller, Path((id, key_id)): Path<(String, String)>) -> ApiResult<StatusCode> {
    owned(&state.db, &caller, &id).await?;
    let mut change = Change::begin(&state).await?;
    let revoked = sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND application_id = $3 AND revoked_at IS NULL")
        .bind(now_ms())
        .bind(&key_id)
        .bind(&id)
        .execute(&mut *change)
        .await?;
    if revoked.rows_affected() == 1 {
        tracing::info!(application = %id, key = %key_id, "API key revoked");
        change.commit().await?;
        return Ok(StatusCode::NO_CONTENT);
    }
    let exists: Option<String> = sqlx::query_scalar("SELECT id FROM api_keys WHERE id = $1 AND application_id = $2")
        .bind(&key_id)
        .bind(&id)
        .fetch_optional(&state.db.pool)
        .await?;
    match exists {
        Some(_) => Ok(StatusCode::NO_CONTENT),
        None => Err(ApiError::not_found("API key", &key_id)),
    }
}
