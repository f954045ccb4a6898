//! Client authentication at the OAuth2 endpoints (RFC 6749 §2.3.1): HTTP Basic
//! (`client_secret_basic`) or form parameters (`client_secret_post`), never both, checked
//! against the Argon2id hash in comparable time whether or not the client exists, with
//! failures braked per client id.

use axum::http::{HeaderMap, header};
use base64::Engine;

use super::error::{OAuthError, OAuthResult};
use crate::AppState;
use crate::auth::{decoy_hash, verify_secret};

/// Longest client id and secret considered; longer ones fail without being hashed.
const MAX_CLIENT_ID: usize = 256;
const MAX_CLIENT_SECRET: usize = 1024;

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
pub(crate) async fn authenticate(state: &AppState, headers: &HeaderMap, form_id: Option<&str>, form_secret: Option<&str>) -> OAuthResult<Client> {
    let (client_id, secret) = match (basic_credentials(headers)?, form_id, form_secret) {
        (Some(_), _, Some(_)) => {
            return Err(OAuthError::InvalidRequest("send the client credentials either with HTTP Basic or as form parameters, not both".into()));
        }
        (Some((basic_id, _)), Some(form_id), None) if form_id != basic_id => {
            return Err(OAuthError::InvalidRequest("`client_id` differs from the client of the Authorization header".into()));
        }
        (Some(basic), _, None) => basic,
        (None, Some(id), Some(secret)) => (id.to_owned(), secret.to_owned()),
        (None, _, _) => {
            return Err(OAuthError::InvalidClient("authenticate the client with HTTP Basic or the `client_id` and `client_secret` parameters".into()));
        }
    };
    if client_id.len() > MAX_CLIENT_ID || secret.len() > MAX_CLIENT_SECRET {
        return Err(OAuthError::InvalidClient("unknown client or wrong secret".into()));
    }

    let brake_key = format!("client:{client_id}");
    state.failures.check(&brake_key).map_err(|_| OAuthError::SlowDown("too many failed client authentications; wait a minute".into()))?;
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT application_id, secret_hash FROM oauth_clients WHERE client_id = $1").bind(&client_id).fetch_optional(&state.db.pool).await?;
    let stored_hash = row.as_ref().map(|(_, hash)| hash.clone());
    let matches = tokio::task::spawn_blocking(move || match stored_hash {
        Some(hash) => verify_secret(&secret, &hash),
        None => {
            verify_secret(&secret, decoy_hash());
            false
        }
    })
    .await
    .unwrap_or(false);
    match row {
        Some((application_id, _)) if matches => Ok(Client { client_id, application_id }),
        _ => {
            state.failures.record(&brake_key);
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

