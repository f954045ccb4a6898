//! Client authentication at the OAuth2 endpoints (RFC 6749 §2.3.1): HTTP Basic
//! (`client_secret_basic`) or form parameters (`client_secret_post`), never both, checked
//! against the Argon2id hash in comparable time whether or not the client exists, with
//! failures braked per client id.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::{HeaderMap, header};
use base64::Engine;
use sha2::{Digest, Sha256};

use super::error::{OAuthError, OAuthResult};
use crate::AppState;
use crate::auth::{self, Source};
use crate::db::now_ms;
use crate::error::ApiError;

/// Longest client id and secret considered; longer ones fail without being hashed.
const MAX_CLIENT_ID: usize = 256;
const MAX_CLIENT_SECRET: usize = 1024;

/// How long a verified secret is remembered.
const VERIFIED_FOR_MS: i64 = 5 * 60 * 1000;
/// Most secrets remembered at once; past it the memory starts afresh.
const MAX_VERIFIED: usize = 10_000;

/// Client secrets verified lately, so that a client asking for tokens again does not pay
/// for an Argon2id verification every time. Only correct secrets are remembered (as their
/// sha256, next to the stored hash they matched), so a wrong secret always costs a full
/// verification, and a regenerated secret, whose stored hash differs, is never matched.
#[derive(Debug, Default)]
pub struct VerifiedSecrets {
    entries: Mutex<HashMap<String, Verified>>,
}

/// One remembered secret of a client.
#[derive(Debug)]
struct Verified {
    /// The stored hash it matched.
    stored_hash: String,
    /// sha256 of the secret.
    digest: [u8; 32],
    /// Forgotten after this (ms since the epoch).
    until: i64,
}

impl VerifiedSecrets {
    fn matches(&self, client_id: &str, stored_hash: &str, secret: &str) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(client_id).is_some_and(|verified| {
            verified.stored_hash == stored_hash
                && verified.until > now_ms()
                && verified.digest == <[u8; 32]>::from(Sha256::digest(secret.as_bytes()))
        })
    }

    fn remember(&self, client_id: &str, stored_hash: &str, secret: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_VERIFIED {
            entries.clear();
        }
        let digest = Sha256::digest(secret.as_bytes()).into();
        entries.insert(client_id.to_owned(), Verified { stored_hash: stored_hash.to_owned(), digest, until: now_ms() + VERIFIED_FOR_MS });
    }
}

/// An authenticated OAuth2 client.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    /// Its id.
    pub client_id: String,
    /// The developer-portal application it belongs to.
    pub application_id: String,
}

/// Authenticate the client of a request from its `Authorization: Basic` header or its
/// `client_id` / `client_secret` form parameters.
pub(crate) async fn authenticate(
    state: &AppState,
    source: Source,
    headers: &HeaderMap,
    form_id: Option<&str>,
    form_secret: Option<&str>,
) -> OAuthResult<Client> {
    let (client_id, secret) = match (basic_credentials(headers)?, form_id, form_secret) {
        (Some(_), _, Some(_)) => {
            return Err(OAuthError::InvalidRequest(
                "send the client credentials either with HTTP Basic or as form parameters, not both".into(),
            ));
        }
        (Some((basic_id, _)), Some(form_id), None) if form_id != basic_id => {
            return Err(OAuthError::InvalidRequest("`client_id` differs from the client of the Authorization header".into()));
        }
        (Some(basic), _, None) => basic,
        (None, Some(id), Some(secret)) => (id.to_owned(), secret.to_owned()),
        (None, _, _) => {
            return Err(OAuthError::InvalidClient(
                "authenticate the client with HTTP Basic or the `client_id` and `client_secret` parameters".into(),
            ));
        }
    };
    if client_id.len() > MAX_CLIENT_ID || secret.len() > MAX_CLIENT_SECRET {
        return Err(OAuthError::InvalidClient("unknown client or wrong secret".into()));
    }

    let attempt = state
        .failures
        .begin(&format!("client:{client_id}"), source.0)
        .map_err(|_| OAuthError::SlowDown("too many failed client authentications; wait a minute".into()))?;
    let row: Option<(String, String)> = sqlx::query_as("SELECT application_id, secret_hash FROM oauth_clients WHERE client_id = $1")
        .bind(&client_id)
        .fetch_optional(&state.db.pool)
        .await?;
    let stored_hash = row.as_ref().map(|(_, hash)| hash.clone());
    let matches = match &stored_hash {
        Some(hash) if state.verified_secrets.matches(&client_id, hash, &secret) => true,
        _ => auth::verify(&secret, stored_hash.as_deref()).await.map_err(|error| match error {
            ApiError::TooManyRequests(reason) => OAuthError::SlowDown(reason),
            other => other.into(),
        })?,
    };
    if matches && let Some(hash) = &stored_hash {
        state.verified_secrets.remember(&client_id, hash, &secret);
    }
    match row {
        Some((application_id, _)) if matches => {
            attempt.succeeded();
            Ok(Client { client_id, application_id })
        }
        _ => {
            attempt.failed();
            tracing::debug!(client_id, "client authentication failed");
            Err(OAuthError::InvalidClient("unknown client or wrong secret".into()))
        }
    }
}

/// The client id and secret of an `Authorization: Basic` header, form-urldecoded as RFC 6749
/// §2.3.1 asks; none without the header, an error with another scheme or a malformed value.
fn basic_credentials(headers: &HeaderMap) -> OAuthResult<Option<(String, String)>> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || OAuthError::InvalidClient("malformed `Authorization: Basic` header".into());
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, encoded) = value.split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::InvalidClient("authenticate the client with HTTP Basic".into()));
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    Ok(Some((form_urldecode(id).ok_or_else(malformed)?, form_urldecode(secret).ok_or_else(malformed)?)))
}

fn form_urldecode(text: &str) -> Option<String> {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced).decode_utf8().ok().map(|decoded| decoded.into_owned())
}
