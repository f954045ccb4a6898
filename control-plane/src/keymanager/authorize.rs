//! The authorization endpoint (RFC 6749 §4.1, PKCE per RFC 7636, OpenID Connect's `nonce`):
//! an end user signs in on the key manager's page and allows (or denies) an application,
//! which then gets a code at its registered redirect URI. Only `response_type=code` with an
//! S256 challenge: there is no implicit grant and no plain PKCE.
//!
//! Errors that make the client or its redirect URI untrustworthy are shown to the user and
//! never redirected (§4.1.2.1); every other one goes back to the client at its redirect URI,
//! with `state` and `iss` (RFC 9207).

use axum::Form;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::authorization_code::{self, Grant, is_s256_challenge};
use super::client_auth::Client;
use super::consent_page::{self, Consent};
use super::error::OAuthError;
use super::form::{form, param};
use super::token::{refuse_ungrantable, scopes};
use crate::AppState;
use crate::auth::{self, Source, random_token};
use crate::db::now_ms;
use crate::error::ApiError;

/// Longest `client_id`, `state` and `nonce` considered.
const MAX_CLIENT_ID: usize = 256;
const MAX_STATE: usize = 1024;
const MAX_NONCE: usize = 512;

/// The cookie that carries the page's anti-forgery token (the form carries it too).
const CSRF_COOKIE: &str = "portico_authorize";

/// An authorization request (RFC 6749 §4.1.1, RFC 7636 §4.3), as query parameters of the
/// page and hidden fields of its form. Empty parameters count as absent.
#[derive(Debug, Default, Clone, Serialize, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct AuthorizeRequest {
    /// `code`.
    pub response_type: Option<String>,
    /// The application's OAuth2 client id.
    #[param(required)]
    pub client_id: Option<String>,
    /// One of the client's registered redirect URIs, exactly.
    #[param(required)]
    pub redirect_uri: Option<String>,
    /// Space-separated scopes; `openid` asks for an ID token.
    pub scope: Option<String>,
    /// Opaque to the server, sent back with the code or the error.
    pub state: Option<String>,
    /// BASE64URL(SHA256(code_verifier)): 43 characters.
    pub code_challenge: Option<String>,
    /// `S256`.
    pub code_challenge_method: Option<String>,
    /// OpenID Connect: copied into the ID token.
    pub nonce: Option<String>,
}

impl AuthorizeRequest {
    /// The parameters given, as (name, value).
    fn given(&self) -> Vec<(&'static str, &str)> {
        let all = [
            ("response_type", &self.response_type),
            ("client_id", &self.client_id),
            ("redirect_uri", &self.redirect_uri),
            ("scope", &self.scope),
            ("state", &self.state),
            ("code_challenge", &self.code_challenge),
            ("code_challenge_method", &self.code_challenge_method),
            ("nonce", &self.nonce),
        ];
        all.into_iter().filter_map(|(name, value)| Some((name, param(value)?))).collect()
    }
}

/// What the page's form posts: the request again, the user's credentials and choice.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct AuthorizeForm {
    /// The authorization request, as the page received it.
    #[serde(flatten)]
    pub request: AuthorizeRequest,
    /// The end user's name.
    pub username: Option<String>,
    /// The end user's password.
    pub password: Option<String>,
    /// The page's anti-forgery token, also in its cookie.
    pub csrf: Option<String>,
    /// `allow` or `deny`.
    pub decision: Option<String>,
}

/// A request that holds: who asks, where the answer goes, and what for.
struct Valid {
    client: Client,
    application_name: String,
    owner: String,
    redirect_uri: String,
    scopes: Vec<String>,
    state: Option<String>,
    code_challenge: String,
    nonce: Option<String>,
}

/// Why a request is refused.
enum Refusal {
    /// The client or its redirect URI cannot be trusted: told to the user on a page.
    Page(StatusCode, String),
    /// Told to the client at its redirect URI (RFC 6749 §4.1.2.1).
    Redirect { to: String, error: &'static str, description: String, state: Option<String> },
    /// Our failure.
    Server(ApiError),
}

impl From<sqlx::Error> for Refusal {
    fn from(error: sqlx::Error) -> Self {
        Refusal::Server(error.into())
    }
}

/// The login and consent page for an authorization request.
#[utoipa::path(get, path = "/oauth2/authorize", operation_id = "oauth2_authorize", tag = "keymanager", params(AuthorizeRequest),
    responses(
        (status = 200, description = "the login and consent page", content_type = "text/html"),
        (status = 303, description = "an error sent back to the client at its redirect URI (RFC 6749 §4.1.2.1)"),
        (status = 400, description = "unknown client, or a redirect URI it did not register: an HTML page, never a redirect \
            (a query holding NUL is refused before, as a problem)"),
    ))]
pub async fn page(State(state): State<AppState>, query: Result<Query<AuthorizeRequest>, QueryRejection>) -> Response {
    let request = match query {
        Ok(Query(request)) => request,
        Err(rejection) => {
            return consent_page::error(StatusCode::BAD_REQUEST, &format!("The authorization request is malformed: {rejection}"));
        }
    };
    match validate(&state, &request).await {
        Ok(valid) => consent(&state, &request, &valid, StatusCode::OK, None),
        Err(refusal) => refused(&state, refusal),
    }
}

/// The end user's answer: sign in and allow, or deny.
#[utoipa::path(post, path = "/oauth2/authorize", operation_id = "oauth2_authorize_decision", tag = "keymanager",
    request_body(content = AuthorizeForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "to the client's redirect URI, with a code or an error"),
        (status = 400, description = "a malformed form, or unknown client or redirect URI", content_type = "text/html"),
        (status = 401, description = "wrong user name or password: the page again", content_type = "text/html"),
        (status = 403, description = "the form's anti-forgery token is missing or not the page's", content_type = "text/html"),
        (status = 429, description = "too many failed sign-ins", content_type = "text/html"),
    ))]
pub async fn decide(
    State(state): State<AppState>,
    source: Source,
    headers: HeaderMap,
    body: Result<Form<AuthorizeForm>, FormRejection>,
) -> Response {
    let answer = match form(body) {
        Ok(answer) => answer,
        Err(error) => return consent_page::error(StatusCode::BAD_REQUEST, &error.to_string()),
    };
    if !csrf_matches(&headers, param(&answer.csrf)) {
        return consent_page::error(
            StatusCode::FORBIDDEN,
            "This form did not come from this page, or it expired. Go back to the application and start again.",
        );
    }
    let valid = match validate(&state, &answer.request).await {
        Ok(valid) => valid,
        Err(refusal) => return refused(&state, refusal),
    };
    let again = |status, message: &str| consent(&state, &answer.request, &valid, status, Some(message));
    match param(&answer.decision) {
        Some("allow") => {}
        Some("deny") => {
            let denied = [("error", "access_denied"), ("error_description", "the user denied the request")];
            return redirect(&state, &valid.redirect_uri, &denied, valid.state.as_deref());
        }
        _ => return again(StatusCode::BAD_REQUEST, "Choose Allow or Deny."),
    }
    let (Some(username), Some(password)) = (param(&answer.username), param(&answer.password)) else {
        return again(StatusCode::BAD_REQUEST, "Enter your user name and password.");
    };
    let user_id = match auth::check_password(&state, source, username, password).await {
        Ok((user_id, _role)) => user_id,
        Err(ApiError::Unauthorized(_)) => return again(StatusCode::UNAUTHORIZED, "Wrong user name or password."),
        Err(ApiError::TooManyRequests(_)) => return again(StatusCode::TOO_MANY_REQUESTS, "Too many failed attempts: wait a minute."),
        Err(error) => return refused(&state, Refusal::Server(error)),
    };
    // The roles that scopes name are the end user's: known only now.
    if let Err(error) = refuse_ungrantable(&state, &valid.client, Some(&user_id), &valid.scopes).await {
        return refused(&state, to_client(&valid.redirect_uri, valid.state.as_deref(), error));
    }
    let grant = Grant {
        client_id: valid.client.client_id.clone(),
        user_id,
        redirect_uri: valid.redirect_uri.clone(),
        scope: valid.scopes.join(" "),
        code_challenge: valid.code_challenge.clone(),
        nonce: valid.nonce.clone(),
        auth_time: now_ms() / 1000,
    };
    match authorization_code::issue(&state.db, &grant).await {
        Ok(code) => {
            tracing::info!(client_id = %grant.client_id, user = %username, "authorization code issued");
            redirect(&state, &valid.redirect_uri, &[("code", code.as_str())], valid.state.as_deref())
        }
        Err(error) => refused(&state, Refusal::Server(error)),
    }
}

/// Check an authorization request: first the client and its redirect URI (refused on a
/// page), then everything else (refused to the client). Whether the scopes may be granted
/// depends on the end user, so it is checked once they signed in.
async fn validate(state: &AppState, request: &AuthorizeRequest) -> Result<Valid, Refusal> {
    let page = |message: &str| Refusal::Page(StatusCode::BAD_REQUEST, message.to_owned());
    let fields = serde_json::to_value(request).map_err(|e| Refusal::Server(ApiError::Internal(e.to_string())))?;
    if let Some(field) = crate::error::holding_nul(&fields, String::new()) {
        return Err(page(&format!("`{field}`: {}", crate::error::NO_NUL)));
    }
    let client_id = param(&request.client_id).ok_or_else(|| page("The request names no client (`client_id` is missing)."))?;
    let row: Option<(String, String, String, String)> = if client_id.len() <= MAX_CLIENT_ID {
        sqlx::query_as(
            "SELECT c.application_id, c.redirect_uris, a.name, u.username FROM oauth_clients c \
             JOIN applications a ON a.id = c.application_id JOIN users u ON u.id = a.owner_id WHERE c.client_id = $1",
        )
        .bind(client_id)
        .fetch_optional(&state.db.pool)
        .await?
    } else {
        None
    };
    let (application_id, registered, application_name, owner) = row.ok_or_else(|| page("The request names an unknown client."))?;
    let registered: Vec<String> = serde_json::from_str(&registered).unwrap_or_default();
    let redirect_uri = param(&request.redirect_uri).ok_or_else(|| {
        page("The request names no redirect URI (`redirect_uri` is missing): the application must send one it registered.")
    })?;
    if !registered.iter().any(|uri| uri == redirect_uri) {
        return Err(page("The redirect URI (`redirect_uri`) is not one the application registered: they are compared exactly."));
    }

    let state_param = param(&request.state);
    let back = |error: &'static str, description: &str| Refusal::Redirect {
        to: redirect_uri.to_owned(),
        error,
        description: description.to_owned(),
        state: state_param.filter(|s| s.len() <= MAX_STATE).map(str::to_owned),
    };
    if state_param.is_some_and(|s| s.len() > MAX_STATE) {
        return Err(back("invalid_request", &format!("`state` is longer than {MAX_STATE} characters")));
    }
    match param(&request.response_type) {
        Some("code") => {}
        Some(_) => return Err(back("unsupported_response_type", "only `response_type=code` is supported (no implicit grant)")),
        None => return Err(back("invalid_request", "`response_type` is missing")),
    }
    let pkce_required = "PKCE is required: send `code_challenge` with `code_challenge_method=S256`";
    let code_challenge = match (param(&request.code_challenge), param(&request.code_challenge_method)) {
        (Some(challenge), Some("S256")) if is_s256_challenge(challenge) => challenge.to_owned(),
        (Some(_), Some("S256")) => {
            return Err(back("invalid_request", "`code_challenge` must be BASE64URL(SHA256(code_verifier)): 43 characters"));
        }
        (None, Some("S256")) | (_, None) => return Err(back("invalid_request", pkce_required)),
        (_, Some(_)) => return Err(back("invalid_request", "`code_challenge_method` must be S256 (plain is not allowed)")),
    };
    let nonce = param(&request.nonce);
    if nonce.is_some_and(|nonce| nonce.len() > MAX_NONCE) {
        return Err(back("invalid_request", &format!("`nonce` is longer than {MAX_NONCE} characters")));
    }
    let scopes = scopes(param(&request.scope)).map_err(|error| back(error.code(), &error.to_string()))?;
    Ok(Valid {
        client: Client { client_id: client_id.to_owned(), application_id },
        application_name,
        owner,
        redirect_uri: redirect_uri.to_owned(),
        scopes,
        state: state_param.map(str::to_owned),
        code_challenge,
        nonce: nonce.map(str::to_owned),
    })
}

/// An OAuth2 error, sent back to the client at `redirect_uri`.
fn to_client(redirect_uri: &str, state: Option<&str>, error: OAuthError) -> Refusal {
    match error {
        OAuthError::Server(error) => Refusal::Server(error),
        error => Refusal::Redirect {
            to: redirect_uri.to_owned(),
            error: error.code(),
            description: error.to_string(),
            state: state.map(str::to_owned),
        },
    }
}

fn refused(state: &AppState, refusal: Refusal) -> Response {
    match refusal {
        Refusal::Page(status, message) => consent_page::error(status, &message),
        Refusal::Redirect { to, error, description, state: client_state } => {
            redirect(state, &to, &[("error", error), ("error_description", description.as_str())], client_state.as_deref())
        }
        Refusal::Server(error) => {
            tracing::error!(%error, "authorization endpoint failed");
            consent_page::error(StatusCode::INTERNAL_SERVER_ERROR, "The server failed; try again later.")
        }
    }
}

/// The page for `valid`, with a fresh anti-forgery token in its form and cookie.
fn consent(state: &AppState, request: &AuthorizeRequest, valid: &Valid, status: StatusCode, message: Option<&str>) -> Response {
    let csrf = random_token();
    // Under the issuer's path: behind a proxy that serves the key manager at a prefix, the
    // browser posts (and sends the cookie) there.
    let issuer_path = state.settings.issuer.parse::<axum::http::Uri>().map(|uri| uri.path().trim_end_matches('/').to_owned());
    let action = format!("{}/oauth2/authorize", issuer_path.unwrap_or_default());
    let consent = Consent {
        application: &valid.application_name,
        owner: &valid.owner,
        scopes: &valid.scopes,
        request: &request.given(),
        csrf: &csrf,
        action: &action,
        message,
    };
    let mut response = consent_page::consent(status, &consent);
    let secure = if state.settings.issuer.starts_with("https://") { "; Secure" } else { "" };
    let cookie = format!("{CSRF_COOKIE}={csrf}; Path={action}; HttpOnly; SameSite=Strict{secure}");
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// Whether the form's anti-forgery token is the one in the page's cookie.
fn csrf_matches(headers: &HeaderMap, field: Option<&str>) -> bool {
    let Some(field) = field else {
        return false;
    };
    auth::cookie(headers, CSRF_COOKIE).is_some_and(|cookie| auth::same_secret(cookie, field))
}

/// `303 See Other` to `redirect_uri` with `params`, `state` and our `iss` (RFC 9207) added
/// to its query.
fn redirect(state: &AppState, redirect_uri: &str, params: &[(&str, &str)], client_state: Option<&str>) -> Response {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in params {
        query.append_pair(name, value);
    }
    if let Some(client_state) = client_state {
        query.append_pair("state", client_state);
    }
    query.append_pair("iss", &state.settings.issuer);
    let separator = if redirect_uri.contains('?') { '&' } else { '?' };
    let location = format!("{redirect_uri}{separator}{}", query.finish());
    match HeaderValue::from_str(&location) {
        Ok(location) => (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, location),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            ],
        )
            .into_response(),
        // Registered URIs are checked at registration; a header value they cannot make is ours.
        Err(_) => consent_page::error(StatusCode::INTERNAL_SERVER_ERROR, "The application's redirect URI cannot be used."),
    }
}
