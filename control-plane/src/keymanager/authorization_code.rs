//! Authorization codes (RFC 6749 §4.1, RFC 7636): random, stored only as SHA-256 hashes,
//! bound to the client, the redirect URI and a PKCE S256 challenge, valid for a minute and
//! exchanged once; a code presented again revokes the tokens its first exchange issued.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::auth::{random_token, token_hash};
use crate::db::{Db, now_ms};
use crate::error::ApiResult;

/// How long a code may wait for its exchange.
const CODE_TTL_MS: i64 = 60_000;

/// How long a code is kept past its expiry, so that one presented again still revokes the
/// tokens its exchange issued.
const KEPT_AFTER_EXPIRY_MS: i64 = 3_600_000;

/// What an end user allowed, as the code carries it to the token endpoint.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct Grant {
    /// The client allowed.
    pub client_id: String,
    /// The user who allowed it, by id.
    pub user_id: String,
    /// The redirect URI of the authorization request, exactly.
    pub redirect_uri: String,
    /// Space-separated scopes.
    pub scope: String,
    /// BASE64URL(SHA256(code_verifier)).
    pub code_challenge: String,
    /// The OpenID Connect nonce, copied into the ID token.
    pub nonce: Option<String>,
    /// When the user authenticated, seconds since the Unix epoch.
    pub auth_time: i64,
}

/// A stored code, as the token endpoint finds it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct StoredCode {
    /// What it grants.
    #[sqlx(flatten)]
    pub grant: Grant,
    /// Milliseconds since the Unix epoch.
    pub expires_at: i64,
    /// When it was exchanged.
    pub used_at: Option<i64>,
    /// The refresh-token family its exchange began.
    pub family_id: Option<String>,
}

/// Store a new code for `grant`; the code itself.
pub(crate) async fn issue(db: &Db, grant: &Grant) -> ApiResult<String> {
    let code = random_token();
    let now = now_ms();
    sqlx::query("DELETE FROM authorization_codes WHERE expires_at < $1").bind(now - KEPT_AFTER_EXPIRY_MS).execute(&db.pool).await?;
    sqlx::query(
        "INSERT INTO authorization_codes (code_hash, client_id, user_id, redirect_uri, scope, code_challenge, nonce, auth_time, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(token_hash(&code))
    .bind(&grant.client_id)
    .bind(&grant.user_id)
    .bind(&grant.redirect_uri)
    .bind(&grant.scope)
    .bind(&grant.code_challenge)
    .bind(&grant.nonce)
    .bind(grant.auth_time)
    .bind(now)
    .bind(now + CODE_TTL_MS)
    .execute(&db.pool)
    .await?;
    Ok(code)
}

/// The stored code `code`, if any.
pub(crate) async fn find(db: &Db, code: &str) -> ApiResult<Option<StoredCode>> {
    Ok(sqlx::query_as::<_, StoredCode>(
        "SELECT client_id, user_id, redirect_uri, scope, code_challenge, nonce, auth_time, expires_at, used_at, family_id \
         FROM authorization_codes WHERE code_hash = $1",
    )
    .bind(token_hash(code))
    .fetch_optional(&db.pool)
    .await?)
}

/// Mark `code` used on `conn`, its exchange beginning `family_id`, unless it was used or
/// expired meanwhile; whether it was.
pub(crate) async fn mark_used(conn: &mut sqlx::AnyConnection, code: &str, family_id: &str) -> ApiResult<bool> {
    let now = now_ms();
    let marked = sqlx::query(
        "UPDATE authorization_codes SET used_at = $1, family_id = $2 WHERE code_hash = $3 AND used_at IS NULL AND expires_at > $1",
    )
    .bind(now)
    .bind(family_id)
    .bind(token_hash(code))
    .execute(&mut *conn)
    .await?;
    Ok(marked.rows_affected() == 1)
}

/// Whether `text` has the shape RFC 7636 §4.1 gives a code verifier: 43 to 128 characters
/// of `[A-Za-z0-9-._~]`.
pub(crate) fn is_verifier(text: &str) -> bool {
    (43..=128).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// Whether `text` has the shape of an S256 challenge: 43 base64url characters (32 bytes).
pub(crate) fn is_s256_challenge(text: &str) -> bool {
    text.len() == 43 && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The S256 challenge of `verifier` (RFC 7636 §4.2).
pub(crate) fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Whether `verifier` answers `challenge`, compared in constant time.
pub(crate) fn verifies(verifier: &str, challenge: &str) -> bool {
    crate::auth::same_secret(&s256(verifier), challenge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_7636_example_verifies() {
        // RFC 7636, Appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(is_verifier(verifier));
        assert_eq!(s256(verifier), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        assert!(is_s256_challenge(&s256(verifier)));
        assert!(verifies(verifier, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
        assert!(!verifies(verifier, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN"));
        assert!(!verifies("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
    }

    #[test]
    fn verifiers_and_challenges_of_the_wrong_shape_are_told_apart() {
        assert!(!is_verifier("short"));
        assert!(!is_verifier(&"a".repeat(129)));
        assert!(!is_verifier(&format!("{}+", "a".repeat(42))));
        assert!(is_verifier(&"a~._-".repeat(10)));
        assert!(!is_s256_challenge("plain-text-challenge"));
        assert!(!is_s256_challenge(&format!("{}=", "a".repeat(42))));
    }
}
