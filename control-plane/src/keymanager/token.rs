//! The token endpoint (RFC 6749 §3.2): the client credentials grant, the authorization code
//! grant with PKCE (RFC 7636) and the refresh token grant with rotation; every other grant,
//! the password grant among them (RFC 9700), is refused.

use axum::Form;
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::access_token::{self, ACCESS_TOKEN_TTL_S, EndUser};
use super::authorization_code::{self, is_verifier, verifies};
use super::client_auth::{self, Client};
use super::error::{OAuthError, OAuthResult};
use super::form::{form, no_store, param};
use super::id_token;
use super::refresh_token;
use crate::auth::Source;
use crate::db::{new_id, now_ms};
use crate::publisher::OPENID_SCOPE;
use crate::{AppState, publisher};

/// Most scopes one token may carry, and the longest scope string.
const MAX_SCOPES: usize = 50;
const MAX_SCOPE_CHARS: usize = 2048;

/// The form of `POST /oauth2/token`. Empty parameters count as absent (RFC 6749 §3.1).
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct TokenRequest {
    /// `client_credentials`, `authorization_code` or `refresh_token`.
    pub grant_type: Option<String>,
    /// Space-separated scopes requested.
    pub scope: Option<String>,
    /// With `grant_type=refresh_token`.
    pub refresh_token: Option<String>,
    /// With `grant_type=authorization_code`: the code the redirect brought.
    pub code: Option<String>,
    /// With `grant_type=authorization_code`: the authorization request's, exactly.
    pub redirect_uri: Option<String>,
    /// With `grant_type=authorization_code`: the PKCE secret whose S256 challenge the
    /// authorization request sent.
    pub code_verifier: Option<String>,
    /// Client id, when not sent with HTTP Basic.
    pub client_id: Option<String>,
    /// Client secret, when not sent with HTTP Basic.
    pub client_secret: Option<String>,
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    /// The JWT access token.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds the access token lasts.
    pub expires_in: i64,
    /// Exchange it at this endpoint for a new pair; single use.
    pub refresh_token: String,
    /// The scopes granted, when there are any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// With the authorization code grant and the `openid` scope: who the end user is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

/// Get a token.
#[utoipa::path(post, path = "/oauth2/token", operation_id = "oauth2_token", tag = "keymanager",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, body = TokenResponse),
        (status = 400, description = "invalid_request, invalid_grant, invalid_scope or unsupported_grant_type (RFC 6749 §5.2)"),
        (status = 401, description = "invalid_client"),
        (status = 429, description = "slow_down: too many failed client authentications"),
    ),
    security((), ("client_secret_basic" = [])))]
pub async fn token(
    State(state): State<AppState>,
    source: Source,
    headers: HeaderMap,
    request: Result<Form<TokenRequest>, FormRejection>,
) -> OAuthResult<Response> {
    let request = form(request)?;
    let client = client_auth::authenticate(&state, source, &headers, param(&request.client_id), param(&request.client_secret)).await?;
    let (issued, grant_type) = match param(&request.grant_type) {
        Some("client_credentials") => (client_credentials(&state, &client, &request).await?, "client_credentials"),
        Some("authorization_code") => (authorization_code(&state, &client, &request).await?, "authorization_code"),
        Some("refresh_token") => (refresh(&state, &client, &request).await?, "refresh_token"),
        Some(other) => {
            return Err(OAuthError::UnsupportedGrantType(format!(
                "grant type `{other}` is not supported: use client_credentials, authorization_code or refresh_token"
            )));
        }
        None => return Err(OAuthError::InvalidRequest("`grant_type` is missing".into())),
    };
    state.metrics.token_issued(grant_type);
    tracing::debug!(client_id = %client.client_id, grant_type, "token issued");
    Ok(no_store(Json(issued)))
}

async fn client_credentials(state: &AppState, client: &Client, request: &TokenRequest) -> OAuthResult<TokenResponse> {
    let requested = scopes(param(&request.scope))?;
    refuse_ungrantable(state, client, None, &requested).await?;
    let scope = requested.join(" ");
    let access = access_token::issue(state, client, None, &scope).await?;
    let refresh_token = refresh_token::issue(&state.db, &client.client_id, &scope, &access).await?;
    Ok(response(access.token, refresh_token, scope))
}

/// An access token asked for by an application's owner in the developer portal (logged in
/// there, so without the client's secret): what the client credentials grant gives the
/// application's client `client_id`, with the same scope checks, without a refresh token.
/// The caller has checked that the visitor owns the application.
pub(crate) async fn for_owner(state: &AppState, client_id: &str, application_id: &str, scope: &str) -> OAuthResult<TokenResponse> {
    let client = Client { client_id: client_id.to_owned(), application_id: application_id.to_owned() };
    let requested = scopes(Some(scope).filter(|s| !s.trim().is_empty()))?;
    refuse_ungrantable(state, &client, None, &requested).await?;
    let scope = requested.join(" ");
    let access = access_token::issue(state, &client, None, &scope).await?;
    state.metrics.token_issued("portal");
    tracing::debug!(client_id = %client.client_id, "token issued in the developer portal");
    Ok(response(access.token, String::new(), scope))
}

/// Exchange a refresh token for a new pair in the same family. The new refresh token keeps
/// the scope granted; the access token may ask for less (RFC 6749 §6).
async fn refresh(state: &AppState, client: &Client, request: &TokenRequest) -> OAuthResult<TokenResponse> {
    let presented = param(&request.refresh_token).ok_or_else(|| OAuthError::InvalidRequest("`refresh_token` is missing".into()))?;
    let invalid = || OAuthError::InvalidGrant("the refresh token is invalid, expired or revoked".into());
    let stored =
        refresh_token::find(&state.db, presented).await?.filter(|stored| stored.client_id == client.client_id).ok_or_else(invalid)?;
    if stored.used_at.is_some() {
        return Err(replayed(state, &stored.family_id).await);
    }
    if !stored.is_usable() {
        return Err(invalid());
    }
    let end_user = match &stored.user_id {
        Some(id) => Some(EndUser::find(&state.db, id).await?.ok_or_else(invalid)?),
        None => None,
    };
    let granted = scopes(Some(&stored.scope))?;
    let scope = match param(&request.scope) {
        Some(requested) => {
            let requested = scopes(Some(requested))?;
            if let Some(extra) = requested.iter().find(|scope| !granted.contains(scope)) {
                return Err(OAuthError::InvalidScope(format!("scope `{extra}` was not granted with this refresh token")));
            }
            requested.join(" ")
        }
        None => stored.scope.clone(),
    };
    // What was granted may have been withdrawn since (a subscription, a scope, a role).
    refuse_ungrantable(state, client, stored.user_id.as_deref(), &scopes(Some(&scope))?).await?;

    let access = access_token::issue(state, client, end_user.as_ref(), &scope).await?;
    let mut tx = state.db.pool.begin().await?;
    if !refresh_token::mark_used(&mut tx, presented).await? {
        // Used (or revoked) since it was read: a concurrent exchange of the same token.
        drop(tx);
        return Err(replayed(state, &stored.family_id).await);
    }
    let refresh_token =
        refresh_token::insert(&mut tx, &stored.family_id, &client.client_id, stored.user_id.as_deref(), &stored.scope, &access).await?;
    tx.commit().await?;
    Ok(response(access.token, refresh_token, scope))
}

/// Exchange a code for tokens acting for the end user who allowed it (RFC 6749 §4.1.3): the
/// client's own code, unexpired and unused, with the authorization request's redirect URI
/// and the verifier of its PKCE challenge. A code used before revokes what it was exchanged
/// for (§4.1.2).
async fn authorization_code(state: &AppState, client: &Client, request: &TokenRequest) -> OAuthResult<TokenResponse> {
    let code = param(&request.code).ok_or_else(|| OAuthError::InvalidRequest("`code` is missing".into()))?;
    let redirect_uri = param(&request.redirect_uri)
        .ok_or_else(|| OAuthError::InvalidRequest("`redirect_uri` is missing: send the authorization request's".into()))?;
    let verifier =
        param(&request.code_verifier).ok_or_else(|| OAuthError::InvalidRequest("`code_verifier` is missing: PKCE is required".into()))?;
    let invalid = || OAuthError::InvalidGrant("the code is invalid, expired or used".into());
    let stored =
        authorization_code::find(&state.db, code).await?.filter(|stored| stored.grant.client_id == client.client_id).ok_or_else(invalid)?;
    if stored.used_at.is_some() {
        return Err(match &stored.family_id {
            Some(family_id) => replayed(state, family_id).await,
            None => invalid(),
        });
    }
    if stored.expires_at <= now_ms() {
        return Err(invalid());
    }
    if stored.grant.redirect_uri != redirect_uri {
        return Err(OAuthError::InvalidGrant("`redirect_uri` differs from the authorization request's".into()));
    }
    if !is_verifier(verifier) || !verifies(verifier, &stored.grant.code_challenge) {
        return Err(OAuthError::InvalidGrant("`code_verifier` does not match the code's challenge (PKCE)".into()));
    }
    let end_user = EndUser::find(&state.db, &stored.grant.user_id).await?.ok_or_else(invalid)?;
    let granted = scopes(Some(&stored.grant.scope))?;
    // What was allowed may have been withdrawn since (a subscription, a scope, a role).
    refuse_ungrantable(state, client, Some(&end_user.id), &granted).await?;

    let access = access_token::issue(state, client, Some(&end_user), &stored.grant.scope).await?;
    let family_id = new_id();
    let mut tx = state.db.pool.begin().await?;
    if !authorization_code::mark_used(&mut tx, code, &family_id).await? {
        // Exchanged (or expired) since it was read: a concurrent exchange won, and is a
        // second use like any other.
        drop(tx);
        let winner = authorization_code::find(&state.db, code).await?.and_then(|stored| stored.family_id);
        return Err(match winner {
            Some(family_id) => replayed(state, &family_id).await,
            None => invalid(),
        });
    }
    let refresh_token =
        refresh_token::insert(&mut tx, &family_id, &client.client_id, Some(&end_user.id), &stored.grant.scope, &access).await?;
    tx.commit().await?;
    let mut issued = response(access.token, refresh_token, stored.grant.scope);
    if granted.iter().any(|scope| scope == OPENID_SCOPE) {
        issued.id_token =
            Some(id_token::issue(state, &client.client_id, &end_user, stored.grant.auth_time, stored.grant.nonce.as_deref()).await?);
    }
    Ok(issued)
}

/// A used refresh token or code came back: whoever holds its family may be an attacker, so
/// revoke it.
async fn replayed(state: &AppState, family_id: &str) -> OAuthError {
    tracing::warn!(family_id, "refresh token or code replayed: revoking its family");
    match refresh_token::revoke_family(state, family_id).await {
        Ok(()) => OAuthError::InvalidGrant("the grant was already used; the tokens issued with it are revoked".into()),
        Err(e) => e.into(),
    }
}

fn response(access_token: String, refresh_token: String, scope: String) -> TokenResponse {
    TokenResponse {
        access_token,
        token_type: "Bearer".to_owned(),
        expires_in: ACCESS_TOKEN_TTL_S,
        refresh_token,
        scope: (!scope.is_empty()).then_some(scope),
        id_token: None,
    }
}

/// Refuse with `invalid_scope`, naming it, a scope the client's application may not be
/// granted acting for `end_user` (by id; else for its owner; see
/// [`publisher::grantable_scopes`]): unknown, on an API it is not subscribed to, or meant
/// for another role. With an end user, `openid` asks for an ID token and is always granted.
pub(super) async fn refuse_ungrantable(state: &AppState, client: &Client, end_user: Option<&str>, requested: &[String]) -> OAuthResult<()> {
    let requested: Vec<&String> = requested.iter().filter(|scope| end_user.is_none() || scope.as_str() != OPENID_SCOPE).collect();
    if requested.is_empty() {
        return Ok(());
    }
    let grantable = publisher::grantable_scopes(&state.db, &client.application_id, end_user).await?;
    match requested.into_iter().find(|scope| !grantable.contains(*scope)) {
        Some(scope) => Err(OAuthError::InvalidScope(format!(
            "scope `{scope}` is not granted to this client: no API its application is subscribed to defines it for the role of the user it acts for"
        ))),
        None => Ok(()),
    }
}

/// The scopes of a `scope` parameter, without repeats, in the order given, each a scope
/// name ([`publisher::is_scope_name`]); whether they may be granted is [`refuse_ungrantable`]'s.
pub(super) fn scopes(scope: Option<&str>) -> OAuthResult<Vec<String>> {
    let Some(scope) = scope else {
        return Ok(Vec::new());
    };
    if scope.len() > MAX_SCOPE_CHARS {
        return Err(OAuthError::InvalidScope(format!("at most {MAX_SCOPE_CHARS} characters of scopes")));
    }
    let mut scopes: Vec<String> = Vec::new();
    for token in scope.split(' ').filter(|token| !token.is_empty()) {
        if !publisher::is_scope_name(token) {
            return Err(OAuthError::InvalidScope(format!(
                "scope `{}` is not a scope name: 1 to 100 characters RFC 6749 allows",
                token.escape_default()
            )));
        }
        if !scopes.iter().any(|known| known == token) {
            scopes.push(token.to_owned());
        }
    }
    if scopes.len() > MAX_SCOPES {
        return Err(OAuthError::InvalidScope(format!("at most {MAX_SCOPES} scopes")));
    }
    Ok(scopes)
}
