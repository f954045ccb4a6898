//! Signing keys: ES256 (P-256) or RS256 (RSA 2048) pairs kept as PEM, one active signer at a
//! time (made at first use), older keys still published until an admin retires them; the
//! JWKS and the admin endpoints to list, rotate and retire keys.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::db::{Db, new_id, now_ms};
use crate::error::{ApiError, ApiResult, JsonBody};
use crate::fleet::Change;
use crate::secrets;

/// The algorithms a signing key can be for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum SigningAlg {
    /// ECDSA on P-256 with SHA-256.
    #[serde(rename = "ES256")]
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048-bit keys.
    #[serde(rename = "RS256")]
    Rs256,
}

impl SigningAlg {
    /// As stored and as written in JWT headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::Rs256 => "RS256",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "ES256" => Some(Self::Es256),
            "RS256" => Some(Self::Rs256),
            _ => None,
        }
    }

    fn algorithm(self) -> Algorithm {
        match self {
            Self::Es256 => Algorithm::ES256,
            Self::Rs256 => Algorithm::RS256,
        }
    }
}

/// The key that signs new tokens.
pub(crate) struct Signer {
    /// Its id, written as the JWT `kid`.
    pub kid: String,
    /// Its algorithm.
    pub alg: Algorithm,
    /// The private key.
    pub key: EncodingKey,
}

/// A new key pair as PEM: PKCS#8 private, SPKI public. RSA generation takes a while.
fn generate(alg: SigningAlg) -> ApiResult<(String, String)> {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let failed = |_| ApiError::Internal(format!("generating a {} key failed", alg.as_str()));
    let (private, public) = match alg {
        SigningAlg::Es256 => {
            let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(failed)?;
            (pair.to_pkcs8v1().map_err(failed)?.as_ref().to_vec(), pair.public_key().as_der().map_err(failed)?.as_ref().to_vec())
        }
        SigningAlg::Rs256 => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).map_err(failed)?;
            (pair.as_der().map_err(failed)?.as_ref().to_vec(), pair.public_key().as_der().map_err(failed)?.as_ref().to_vec())
        }
    };
    let pem = |label: &str, der: Vec<u8>| {
        pem::encode_config(&pem::Pem::new(label, der), pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF))
    };
    Ok((pem("PRIVATE KEY", private), pem("PUBLIC KEY", public)))
}

/// Make a new key of `alg` the active one; the others stay published.
async fn create_active(state: &AppState, alg: SigningAlg) -> ApiResult<KeyInfo> {
    let (private_pem, public_pem) =
        tokio::task::spawn_blocking(move || generate(alg)).await.map_err(|e| ApiError::Internal(format!("key generation task: {e}")))??;
    let key = KeyInfo { kid: new_id(), alg: alg.as_str().to_owned(), active: true, created_at: now_ms(), retired_at: None };
    let mut tx = Change::begin(state).await?;
    sqlx::query("UPDATE signing_keys SET active = 0 WHERE active = 1").execute(&mut *tx).await?;
    sqlx::query("INSERT INTO signing_keys (kid, alg, private_pem, public_pem, created_at, active) VALUES ($1, $2, $3, $4, $5, 1)")
        .bind(&key.kid)
        .bind(&key.alg)
        .bind(state.db.sealing.seal(private_pem.as_bytes(), &secrets::signing_key_context(&key.kid)))
        .bind(&public_pem)
        .bind(key.created_at)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(kid = %key.kid, alg = %key.alg, "new active signing key");
    Ok(key)
}

/// Make an ES256 key the active one unless there is one.
async fn ensure_active(state: &AppState) -> ApiResult<()> {
    let active: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM signing_keys WHERE active = 1 AND retired_at IS NULL").fetch_one(&state.db.pool).await?;
    if active == 0 {
        create_active(state, SigningAlg::Es256).await?;
    }
    Ok(())
}

/// The key that signs new tokens, made at first use. Should two have become active at once
/// (two first uses racing), the newest signs; both are published.
pub(crate) async fn signer(state: &AppState) -> ApiResult<Signer> {
    ensure_active(state).await?;
    let (kid, alg, private_pem): (String, String, String) = sqlx::query_as(
        "SELECT kid, alg, private_pem FROM signing_keys WHERE active = 1 AND retired_at IS NULL ORDER BY created_at DESC, kid DESC LIMIT 1",
    )
    .fetch_one(&state.db.pool)
    .await?;
    let alg = SigningAlg::parse(&alg).ok_or_else(|| ApiError::Internal(format!("signing key {kid} has an unknown alg {alg}")))?;
    let private_pem = state.db.sealing.open(&private_pem, &secrets::signing_key_context(&kid))?;
    let key = match alg {
        SigningAlg::Es256 => EncodingKey::from_ec_pem(&private_pem),
        SigningAlg::Rs256 => EncodingKey::from_rsa_pem(&private_pem),
    }
    .map_err(|e| ApiError::Internal(format!("signing key {kid} does not parse: {e}")))?;
    Ok(Signer { kid, alg: alg.algorithm(), key })
}

/// The algorithm and public key of a published (not retired) key.
pub(crate) async fn verifier(db: &Db, kid: &str) -> ApiResult<Option<(Algorithm, DecodingKey)>> {
    let row: Option<(String, String)> = sqlx::query_as("SELECT alg, public_pem FROM signing_keys WHERE kid = $1 AND retired_at IS NULL")
        .bind(kid)
        .fetch_optional(&db.pool)
        .await?;
    row.map(|(alg, public_pem)| decoding_key(kid, &alg, &public_pem)).transpose()
}

fn decoding_key(kid: &str, alg: &str, public_pem: &str) -> ApiResult<(Algorithm, DecodingKey)> {
    let alg = SigningAlg::parse(alg).ok_or_else(|| ApiError::Internal(format!("signing key {kid} has an unknown alg {alg}")))?;
    let key = match alg {
        SigningAlg::Es256 => DecodingKey::from_ec_pem(public_pem.as_bytes()),
        SigningAlg::Rs256 => DecodingKey::from_rsa_pem(public_pem.as_bytes()),
    }
    .map_err(|e| ApiError::Internal(format!("public key {kid} does not parse: {e}")))?;
    Ok((alg.algorithm(), key))
}

/// The published keys (every key not retired, the active one made if there is none) as
/// `(kid, alg, SPKI public key PEM)`, oldest first: what gateways verify access tokens with.
pub async fn public_keys(state: &AppState) -> ApiResult<Vec<(String, String, String)>> {
    ensure_active(state).await?;
    published(&state.db).await
}

async fn published(db: &Db) -> ApiResult<Vec<(String, String, String)>> {
    Ok(sqlx::query_as("SELECT kid, alg, public_pem FROM signing_keys WHERE retired_at IS NULL ORDER BY created_at, kid")
        .fetch_all(&db.pool)
        .await?)
}

/// A JSON Web Key Set (RFC 7517).
#[derive(Debug, Serialize, ToSchema)]
pub struct Jwks {
    /// The keys: `kty`, `crv`/`x`/`y` (EC) or `n`/`e` (RSA), `kid`, `alg`, `use`.
    #[schema(value_type = Vec<Object>)]
    pub keys: Vec<Jwk>,
}

/// The public keys that verify access tokens, as a JWKS.
#[utoipa::path(get, path = "/oauth2/jwks", operation_id = "oauth2_jwks", tag = "keymanager", responses((status = 200, body = Jwks)))]
pub async fn jwks(State(state): State<AppState>) -> ApiResult<Json<Jwks>> {
    ensure_active(&state).await?;
    let mut keys = Vec::new();
    for (kid, alg, public_pem) in published(&state.db).await? {
        let (algorithm, key) = decoding_key(&kid, &alg, &public_pem)?;
        let mut jwk = Jwk::from_decoding_key(&key, Some(algorithm)).map_err(|e| ApiError::Internal(format!("JWK of key {kid}: {e}")))?;
        jwk.common.key_id = Some(kid);
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        keys.push(jwk);
    }
    Ok(Json(Jwks { keys }))
}

/// A signing key as admins see it (never its private part).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyInfo {
    /// Key id, the `kid` of the tokens it signs.
    pub kid: String,
    /// `ES256` or `RS256`.
    pub alg: String,
    /// Whether it signs new tokens.
    pub active: bool,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// When it was retired (no longer published), in milliseconds since the Unix epoch.
    pub retired_at: Option<i64>,
}

impl KeyInfo {
    fn from_row((kid, alg, active, created_at, retired_at): (String, String, i64, i64, Option<i64>)) -> Self {
        Self { kid, alg, active: active == 1, created_at, retired_at }
    }
}

/// List the signing keys, newest first (admin).
#[utoipa::path(get, path = "/api/v1/keymanager/keys", operation_id = "list_signing_keys", tag = "keymanager",
    responses((status = 200, body = [KeyInfo]), (status = 401), (status = 403)), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<KeyInfo>>> {
    caller.require(&[Role::Admin])?;
    ensure_active(&state).await?;
    let rows: Vec<(String, String, i64, i64, Option<i64>)> =
        sqlx::query_as("SELECT kid, alg, active, created_at, retired_at FROM signing_keys ORDER BY created_at DESC, kid DESC")
            .fetch_all(&state.db.pool)
            .await?;
    Ok(Json(rows.into_iter().map(KeyInfo::from_row).collect()))
}

/// Which key to make.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rotate {
    /// The new key's algorithm.
    pub alg: SigningAlg,
}

/// Make a new active signing key (admin); the previous ones stay published until retired.
#[utoipa::path(post, path = "/api/v1/keymanager/keys/rotate", operation_id = "rotate_signing_key", tag = "keymanager", request_body = Rotate,
    responses((status = 201, body = KeyInfo), (status = 400), (status = 401), (status = 403)), security(("bearer" = [])))]
pub async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(rotate): JsonBody<Rotate>,
) -> ApiResult<(StatusCode, Json<KeyInfo>)> {
    caller.require(&[Role::Admin])?;
    let key = create_active(&state, rotate.alg).await?;
    Ok((StatusCode::CREATED, Json(key)))
}

/// Retire a key that no longer signs (admin): it leaves the JWKS, tokens it signed stop
/// verifying, and its private part is erased.
#[utoipa::path(post, path = "/api/v1/keymanager/keys/{kid}/retire", operation_id = "retire_signing_key", tag = "keymanager",
    params(("kid" = String, Path, description = "key id")),
    responses((status = 200, body = KeyInfo), (status = 401), (status = 403), (status = 404), (status = 409, description = "the active key")),
    security(("bearer" = [])))]
pub async fn retire(State(state): State<AppState>, caller: Caller, Path(kid): Path<String>) -> ApiResult<Json<KeyInfo>> {
    caller.require(&[Role::Admin])?;
    let select = "SELECT kid, alg, active, created_at, retired_at FROM signing_keys WHERE kid = $1";
    let row: Option<(String, String, i64, i64, Option<i64>)> = sqlx::query_as(select).bind(&kid).fetch_optional(&state.db.pool).await?;
    let key = KeyInfo::from_row(row.ok_or_else(|| ApiError::not_found("signing key", &kid))?);
    if key.active {
        return Err(ApiError::Conflict(format!("key `{kid}` is the active signing key: rotate first")));
    }
    if key.retired_at.is_some() {
        return Ok(Json(key));
    }
    // Keys only ever go from active to inactive, so `active = 0` still holds here.
    let mut change = Change::begin(&state).await?;
    let retired =
        sqlx::query("UPDATE signing_keys SET retired_at = $1, private_pem = '' WHERE kid = $2 AND active = 0 AND retired_at IS NULL")
            .bind(now_ms())
            .bind(&kid)
            .execute(&mut *change)
            .await?;
    if retired.rows_affected() > 0 {
        change.commit().await?;
        tracing::info!(kid, "signing key retired");
    }
    let row: (String, String, i64, i64, Option<i64>) = sqlx::query_as(select).bind(&kid).fetch_one(&state.db.pool).await?;
    Ok(Json(KeyInfo::from_row(row)))
}
