//! Access tokens: self-contained JWTs (`typ` `at+jwt`, RFC 9068) naming the client, its
//! application, the application's tier and its subscriptions, and the end user it acts for,
//! signed with the active key for an hour; and their verification against the published keys.

use std::collections::BTreeMap;

use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use super::client_auth::Client;
use super::{AUDIENCE, keys};
use crate::AppState;
use crate::db::{Db, now_ms};
use crate::error::{ApiError, ApiResult};

/// How long an access token lasts, in seconds.
pub(crate) const ACCESS_TOKEN_TTL_S: i64 = 3600;

/// Longest token considered; longer ones are inactive without parsing.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Clock skew tolerated on `exp` and `nbf` between control plane nodes, in seconds.
const LEEWAY_S: u64 = 5;

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AccessClaims {
    /// The issuer: the control plane's public URL.
    pub iss: String,
    /// The end user's id with the authorization code grant (RFC 9068 §2.2), else the client id.
    pub sub: String,
    /// Always [`AUDIENCE`].
    pub aud: String,
    /// The application id.
    pub azp: String,
    /// The client id.
    pub client_id: String,
    /// The application's name.
    pub application_name: String,
    /// The user name of the end user gateways see (and block): the user who authorized the
    /// application with the authorization code grant, else the application's owner.
    pub username: String,
    /// The application's tier.
    pub tier: String,
    /// Subscription tier by `<api name>@<api version>`, for active subscriptions to
    /// published or deprecated APIs.
    pub subscriptions: BTreeMap<String, String>,
    /// Space-separated scopes; absent when none were asked for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: i64,
    /// Not before, seconds since the Unix epoch.
    pub nbf: i64,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// Unique id, what revocation lists.
    pub jti: String,
}

/// An access token as signed, with what revoking it takes.
pub(crate) struct IssuedAccess {
    /// The JWT.
    pub token: String,
    /// Its `jti`.
    pub jti: String,
    /// Its `exp`, in milliseconds since the Unix epoch.
    pub expires_at_ms: i64,
}

/// A user who authorized an application (the authorization code grant).
#[derive(Debug, Clone)]
pub(crate) struct EndUser {
    /// Id.
    pub id: String,
    /// User name.
    pub username: String,
}

impl EndUser {
    /// The user `id`, if it still exists.
    pub(crate) async fn find(db: &Db, id: &str) -> ApiResult<Option<EndUser>> {
        let username: Option<String> =
            sqlx::query_scalar("SELECT username FROM users WHERE id = $1").bind(id).fetch_optional(&db.pool).await?;
        Ok(username.map(|username| EndUser { id: id.to_owned(), username }))
    }
}

/// Sign an access token for `client`, acting for `end_user` if any, with `scope`; the
/// application's tier and subscriptions are read now.
pub(crate) async fn issue(state: &AppState, client: &Client, end_user: Option<&EndUser>, scope: &str) -> ApiResult<IssuedAccess> {
    let (application_name, tier, username): (String, String, String) =
        sqlx::query_as("SELECT a.name, a.tier, u.username FROM applications a JOIN users u ON u.id = a.owner_id WHERE a.id = $1")
            .bind(&client.application_id)
            .fetch_one(&state.db.pool)
            .await?;
    let subscribed: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT a.name, a.version, s.tier FROM subscriptions s JOIN apis a ON a.id = s.api_id \
         WHERE s.application_id = $1 AND s.status = 'ACTIVE' AND a.status IN ('PUBLISHED', 'DEPRECATED')",
    )
    .bind(&client.application_id)
    .fetch_all(&state.db.pool)
    .await?;
    let (sub, username) = match end_user {
        Some(user) => (user.id.clone(), user.username.clone()),
        None => (client.client_id.clone(), username),
    };
    let now = now_ms() / 1000;
    let claims = AccessClaims {
        iss: state.settings.issuer.clone(),
        sub,
        aud: AUDIENCE.to_owned(),
        azp: client.application_id.clone(),
        client_id: client.client_id.clone(),
        application_name,
        username,
        tier,
        subscriptions: subscribed.into_iter().map(|(name, version, tier)| (format!("{name}@{version}"), tier)).collect(),
        scope: scope.to_owned(),
        iat: now,
        nbf: now,
        exp: now + ACCESS_TOKEN_TTL_S,
        jti: uuid::Uuid::new_v4().to_string(),
    };
    let token = sign(state, "at+jwt", &claims).await?;
    Ok(IssuedAccess { token, jti: claims.jti, expires_at_ms: claims.exp * 1000 })
}

/// `claims` as a JWT of type `typ`, signed with the active key.
pub(crate) async fn sign(state: &AppState, typ: &str, claims: &impl Serialize) -> ApiResult<String> {
    let signer = keys::signer(state).await?;
    let mut header = Header::new(signer.alg);
    header.typ = Some(typ.to_owned());
    header.kid = Some(signer.kid);
    jsonwebtoken::encode(&header, claims, &signer.key).map_err(|e| ApiError::Internal(format!("signing a {typ}: {e}")))
}

/// The claims of `token` if it is one of our access tokens: signed by a published key with
/// that key's algorithm, from our issuer, for our audience, and within its lifetime.
/// Revocation is not checked here.
pub(crate) async fn verify(state: &AppState, token: &str) -> ApiResult<Option<AccessClaims>> {
    if token.len() > MAX_TOKEN_BYTES {
        return Ok(None);
    }
    let Ok(header) = jsonwebtoken::decode_header(token) else {
        return Ok(None);
    };
    // `jku`, `x5u` and embedded keys are never followed: the key is ours, chosen by `kid`.
    let Some(kid) = header.kid.filter(|kid| kid.len() <= 128 && header.crit.is_none()) else {
        return Ok(None);
    };
    let Some((alg, key)) = keys::verifier(&state.db, &kid).await? else {
        return Ok(None);
    };
    if header.alg != alg {
        return Ok(None);
    }
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[&state.settings.issuer]);
    validation.set_audience(&[AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    validation.validate_nbf = true;
    validation.leeway = LEEWAY_S;
    Ok(jsonwebtoken::decode::<AccessClaims>(token, &key, &validation).ok().map(|data| data.claims))
}

/// Whether `token` has the shape of a JWT (three dot-separated parts) rather than of a
/// refresh token.
pub(crate) fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

/// Whether the access token `jti` is revoked.
pub(crate) async fn is_revoked(db: &Db, jti: &str) -> ApiResult<bool> {
    let found: Option<String> =
        sqlx::query_scalar("SELECT jti FROM revoked_tokens WHERE jti = $1").bind(jti).fetch_optional(&db.pool).await?;
    Ok(found.is_some())
}

/// Have every gateway refuse the access tokens issued to `application_id` so far (within
/// about 1 s, like a revocation): what they claim (its subscriptions, its tier, its very
/// existence) no longer holds. Part of the caller's change; kept for one token lifetime.
pub async fn cut_off(conn: &mut AnyConnection, application_id: &str) -> ApiResult<()> {
    let now = now_ms();
    // `iat` has whole seconds: a token of this second may predate the change, so the cut-off
    // is the next second (a token issued in the rest of this one is refused too).
    sqlx::query(
        "INSERT INTO application_cutoffs (application_id, from_s, expires_at) VALUES ($1, $2, $3) \
         ON CONFLICT (application_id) DO UPDATE SET from_s = excluded.from_s, expires_at = excluded.expires_at",
    )
    .bind(application_id)
    .bind(now / 1000 + 1)
    .bind(now + (ACCESS_TOKEN_TTL_S + LEEWAY_S as i64 + 1) * 1000)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The cut-offs still in force: application id → the first second (Unix time) of the
/// tokens accepted again.
pub async fn cutoffs(db: &Db) -> ApiResult<Vec<(String, i64)>> {
    Ok(sqlx::query_as("SELECT application_id, from_s FROM application_cutoffs WHERE expires_at > $1 ORDER BY application_id")
        .bind(now_ms())
        .fetch_all(&db.pool)
        .await?)
}

/// Whether a token issued to `application_id` at `iat` (Unix seconds) falls before the
/// application's cut-off, as gateways check it.
pub async fn is_cut_off(db: &Db, application_id: &str, iat: i64) -> ApiResult<bool> {
    let from_s: Option<i64> = sqlx::query_scalar("SELECT from_s FROM application_cutoffs WHERE application_id = $1 AND expires_at > $2")
        .bind(application_id)
        .bind(now_ms())
        .fetch_optional(&db.pool)
        .await?;
    Ok(from_s.is_some_and(|from_s| iat < from_s))
}

/// The most revoked tokens listed per application; past it they are folded into a cut-off.
pub const MAX_REVOKED_PER_APPLICATION: i64 = 100;

/// Keep `application_id`'s listed revocations within [`MAX_REVOKED_PER_APPLICATION`]: past
/// it, a cut-off refuses every token it was issued so far and replaces the list. So a
/// client minting and revoking in a loop grows what every gateway holds by one entry, not
/// one per token; the price is that its other live tokens go too (it gets new ones). Part
/// of the caller's change, after its revocations were written.
pub async fn bound_revocations(conn: &mut AnyConnection, application_id: &str) -> ApiResult<()> {
    let listed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM revoked_tokens WHERE application_id = $1 AND expires_at > $2")
        .bind(application_id)
        .bind(now_ms())
        .fetch_one(&mut *conn)
        .await?;
    if listed > MAX_REVOKED_PER_APPLICATION {
        cut_off(&mut *conn, application_id).await?;
        sqlx::query("DELETE FROM revoked_tokens WHERE application_id = $1").bind(application_id).execute(&mut *conn).await?;
        tracing::warn!(application = %application_id, listed, "revocations folded into a cut-off: every token issued to the application so far is refused");
    }
    Ok(())
}

/// The revoked access tokens that have not expired yet, as `(jti, exp in milliseconds since
/// the Unix epoch)`: what gateways must refuse until then.
pub async fn revoked_jtis(db: &Db) -> ApiResult<Vec<(String, i64)>> {
    Ok(sqlx::query_as("SELECT jti, expires_at FROM revoked_tokens WHERE expires_at > $1 ORDER BY expires_at, jti")
        .bind(now_ms())
        .fetch_all(&db.pool)
        .await?)
}
