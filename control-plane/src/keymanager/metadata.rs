//! Authorization server metadata (RFC 8414): where the endpoints are and what they support.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;

/// The metadata document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Metadata {
    /// The `iss` of every token: the control plane's public URL.
    pub issuer: String,
    /// Send end users here to allow an application (the authorization code grant).
    pub authorization_endpoint: String,
    /// `POST` here for tokens.
    pub token_endpoint: String,
    /// The public keys that verify access tokens.
    pub jwks_uri: String,
    /// RFC 7662 introspection.
    pub introspection_endpoint: String,
    /// RFC 7009 revocation.
    pub revocation_endpoint: String,
    /// `client_credentials`, `authorization_code` and `refresh_token`.
    pub grant_types_supported: Vec<String>,
    /// `code` only: there is no implicit grant.
    pub response_types_supported: Vec<String>,
    /// `S256` only: PKCE is required, and plain is refused.
    pub code_challenge_methods_supported: Vec<String>,
    /// Redirects from the authorization endpoint carry `iss` (RFC 9207).
    pub authorization_response_iss_parameter_supported: bool,
    /// `client_secret_basic` and `client_secret_post`.
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// As for the token endpoint.
    pub introspection_endpoint_auth_methods_supported: Vec<String>,
    /// As for the token endpoint.
    pub revocation_endpoint_auth_methods_supported: Vec<String>,
}

/// The authorization server's metadata (RFC 8414).
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", operation_id = "oauth2_metadata", tag = "keymanager", responses((status = 200, body = Metadata)))]
pub async fn metadata(State(state): State<AppState>) -> Json<Metadata> {
    let issuer = state.settings.issuer.clone();
    let client_auth = || vec!["client_secret_basic".to_owned(), "client_secret_post".to_owned()];
    Json(Metadata {
        authorization_endpoint: format!("{issuer}/oauth2/authorize"),
        token_endpoint: format!("{issuer}/oauth2/token"),
        jwks_uri: format!("{issuer}/oauth2/jwks"),
        introspection_endpoint: format!("{issuer}/oauth2/introspect"),
        revocation_endpoint: format!("{issuer}/oauth2/revoke"),
        grant_types_supported: vec!["client_credentials".to_owned(), "authorization_code".to_owned(), "refresh_token".to_owned()],
        response_types_supported: vec!["code".to_owned()],
        code_challenge_methods_supported: vec!["S256".to_owned()],
        authorization_response_iss_parameter_supported: true,
        token_endpoint_auth_methods_supported: client_auth(),
        introspection_endpoint_auth_methods_supported: client_auth(),
        revocation_endpoint_auth_methods_supported: client_auth(),
        issuer,
    })
}
