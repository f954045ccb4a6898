//! Authorization server metadata (RFC 8414), also served as OpenID Connect discovery: where
//! the endpoints are and what they support. One document at both addresses.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::keys::SigningAlg;
use crate::AppState;
use crate::publisher::OPENID_SCOPE;

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
    /// `openid`: asks for an ID token with the authorization code grant.
    pub scopes_supported: Vec<String>,
    /// `public`: an ID token's `sub` is the user's id, the same for every client.
    pub subject_types_supported: Vec<String>,
    /// The algorithms signing keys may have (ES256, RS256).
    pub id_token_signing_alg_values_supported: Vec<String>,
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
    Json(document(&state))
}

/// The same document for OpenID Connect clients (OpenID Connect Discovery 1.0).
#[utoipa::path(get, path = "/.well-known/openid-configuration", operation_id = "openid_configuration", tag = "keymanager", responses((status = 200, body = Metadata)))]
pub async fn openid_configuration(State(state): State<AppState>) -> Json<Metadata> {
    Json(document(&state))
}

fn document(state: &AppState) -> Metadata {
    let issuer = state.settings.issuer.clone();
    let client_auth = || vec!["client_secret_basic".to_owned(), "client_secret_post".to_owned()];
    Metadata {
        authorization_endpoint: format!("{issuer}/oauth2/authorize"),
        token_endpoint: format!("{issuer}/oauth2/token"),
        jwks_uri: format!("{issuer}/oauth2/jwks"),
        introspection_endpoint: format!("{issuer}/oauth2/introspect"),
        revocation_endpoint: format!("{issuer}/oauth2/revoke"),
        grant_types_supported: vec!["client_credentials".to_owned(), "authorization_code".to_owned(), "refresh_token".to_owned()],
        response_types_supported: vec!["code".to_owned()],
        code_challenge_methods_supported: vec!["S256".to_owned()],
        authorization_response_iss_parameter_supported: true,
        scopes_supported: vec![OPENID_SCOPE.to_owned()],
        subject_types_supported: vec!["public".to_owned()],
        id_token_signing_alg_values_supported: [SigningAlg::Es256, SigningAlg::Rs256].map(|alg| alg.as_str().to_owned()).to_vec(),
        token_endpoint_auth_methods_supported: client_auth(),
        introspection_endpoint_auth_methods_supported: client_auth(),
        revocation_endpoint_auth_methods_supported: client_auth(),
        issuer,
    }
}
