//! Refresh tokens: random, stored only as SHA-256 hashes, single use and rotated within a
//! family; a used one presented again (a replay) revokes its whole family.

use super::access_token::IssuedAccess;
use crate::AppState;
use crate::auth::{random_token, token_hash};
use crate::db::{Db, new_id, now_ms};
use crate::error::ApiResult;
use crate::fleet::Change;

/// How long a refresh token lasts.
pub(crate) const REFRESH_TOKEN_TTL_MS: i64 = 24 * 3600 * 1000;

/// A stored refresh token.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct StoredRefresh {
    /// Every token rotated from the same first one shares it.
    pub family_id: String,
    /// The client it was issued to.
    pub client_id: String,
    /// The end user it acts for (the authorization code grant), by id.
    pub user_id: Option<String>,
    /// The scope granted with it.
    pub scope: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// Milliseconds since the Unix epoch.
    pub expires_at: i64,
    /// When it was exchanged for a new pair.
    pub used_at: Option<i64>,
    /// When it (or its family) was revoked.
    pub revoked_at: Option<i64>,
}

impl StoredRefresh {
    /// Neither used, revoked nor expired.
    pub fn is_usable(&self) -> bool {
        self.used_at.is_none() && self.revoked_at.is_none() && self.expires_at > now_ms()
    }
}

/// The stored refresh token `token`, if any.
pub(crate) async fn find(db: &Db, token: &str) -> ApiResult<Option<StoredRefresh>> {
    Ok(sqlx::query_as::<_, StoredRefresh>(
        "SELECT family_id, client_id, user_id, scope, created_at, expires_at, used_at, revoked_at FROM refresh_tokens WHERE token_hash = $1",
    )
    .bind(token_hash(token))
    .fetch_optional(&db.pool)
    .await?)
}

/// Delete the families none of whose tokens can be used at `now` (milliseconds since the
/// Unix epoch): every refresh token and every access token issued with one expired. A
/// family with a live token is kept whole, so that one of its used tokens presented again
/// still revokes it.
pub(crate) async fn delete_dead_families(db: &Db, now: i64) -> ApiResult<()> {
    sqlx::query(
        "DELETE FROM refresh_tokens WHERE family_id IN (SELECT family_id FROM refresh_tokens GROUP BY family_id \
         HAVING MAX(expires_at) < $1 AND MAX(COALESCE(access_expires_at, 0)) < $1)",
    )
    .bind(now)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// Store a new refresh token of `client_id` (for no end user) in a new family.
pub(crate) async fn issue(db: &Db, client_id: &str, scope: &str, access: &IssuedAccess) -> ApiResult<String> {
    let mut conn = db.pool.acquire().await?;
    insert(&mut conn, &new_id(), client_id, None, scope, access).await
}

/// Store a new refresh token in `family_id` on `conn`, acting for the end user `user_id` if
/// any, with the access token issued with it.
pub(crate) async fn insert(
    conn: &mut sqlx::AnyConnection,
    family_id: &str,
    client_id: &str,
    user_id: Option<&str>,
    scope: &str,
    access: &IssuedAccess,
) -> ApiResult<String> {
    let token = random_token();
    let now = now_ms();
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, family_id, client_id, user_id, scope, created_at, expires_at, access_jti, access_expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(token_hash(&token))
    .bind(family_id)
    .bind(client_id)
    .bind(user_id)
    .bind(scope)
    .bind(now)
    .bind(now + REFRESH_TOKEN_TTL_MS)
    .bind(&access.jti)
    .bind(access.expires_at_ms)
    .execute(&mut *conn)
    .await?;
    Ok(token)
}

/// Mark `token` used on `conn`, unless it is already used, revoked or expired; whether it was.
pub(crate) async fn mark_used(conn: &mut sqlx::AnyConnection, token: &str) -> ApiResult<bool> {
    let now = now_ms();
    let marked = sqlx::query(
        "UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $1",
    )
    .bind(now)
    .bind(token_hash(token))
    .execute(&mut *conn)
    .await?;
    Ok(marked.rows_affected() == 1)
}

/// Revoke every token of a family, and the access tokens issued with them (RFC 7009 §2.1):
/// gateways refuse those within about 1 s, as any revocation.
pub(crate) async fn revoke_family(state: &AppState, family_id: &str) -> ApiResult<()> {
    let now = now_ms();
    let mut change = Change::begin(state).await?;
    sqlx::query(
        "INSERT INTO revoked_tokens (jti, expires_at, revoked_at, application_id) \
         SELECT r.access_jti, r.access_expires_at, $1, c.application_id FROM refresh_tokens r JOIN oauth_clients c ON c.client_id = r.client_id \
         WHERE r.family_id = $2 AND r.access_jti IS NOT NULL AND r.access_expires_at > $1 ON CONFLICT (jti) DO NOTHING",
    )
    .bind(now)
    .bind(family_id)
    .execute(&mut *change)
    .await?;
    let application: Option<String> = sqlx::query_scalar(
        "SELECT c.application_id FROM refresh_tokens r JOIN oauth_clients c ON c.client_id = r.client_id WHERE r.family_id = $1 LIMIT 1",
    )
    .bind(family_id)
    .fetch_optional(&mut *change)
    .await?;
    if let Some(application) = application {
        super::access_token::bound_revocations(&mut change, &application).await?;
    }
    sqlx::query("UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(family_id)
        .execute(&mut *change)
        .await?;
    change.commit().await?;
    Ok(())
}
