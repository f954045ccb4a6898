//! The key manager: an OAuth2 authorization server (client credentials, the authorization
//! code grant with PKCE for end users, refresh tokens, introspection, revocation, RFC 8414
//! metadata) issuing self-contained JWT access tokens that gateways verify locally, signed
//! with rotatable keys published as a JWKS.

mod access_token;
mod authorization_code;
mod authorize;
mod client_auth;
mod consent_page;
mod error;
mod external;
mod form;
mod id_token;
mod introspection;
mod keys;
mod metadata;
pub(crate) mod refresh_token;
mod revocation;
mod token;

use axum::Router;
use axum::routing::{get, post, put};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::AppState;

pub use access_token::{AccessClaims, MAX_REVOKED_PER_APPLICATION, cut_off, cutoffs, revoked_jtis};
pub use authorize::{AuthorizeForm, AuthorizeRequest};
pub use client_auth::VerifiedSecrets;
pub use error::OAuthError;
pub use external::{ExternalKeyManager, NamedKeyManager, issuer_named, issuers_for};
pub use form::TokenForm;
pub use introspection::Introspection;
pub use keys::{Jwks, KeyInfo, Rotate, SigningAlg, public_keys};
pub use metadata::Metadata;
pub(crate) use token::for_owner as token_for_owner;
pub use token::{TokenRequest, TokenResponse};

/// The `aud` of every access token this key manager issues.
pub const AUDIENCE: &str = "portico";

/// The OpenAPI paths of the authorization server ([`routes`]).
#[derive(OpenApi)]
#[openapi(paths(authorize::page, authorize::decide, token::token, introspection::introspect, revocation::revoke, keys::jwks, metadata::metadata, metadata::openid_configuration), modifiers(&ClientSecretBasic))]
pub struct Doc;

/// The OpenAPI paths of the signing keys' management ([`admin_routes`]).
#[derive(OpenApi)]
#[openapi(paths(keys::list, keys::rotate, keys::retire, external::list, external::put, external::delete))]
pub struct AdminDoc;

/// Declares the `client_secret_basic` security scheme the OAuth2 endpoints name.
struct ClientSecretBasic;

impl Modify for ClientSecretBasic {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components
            .add_security_scheme("client_secret_basic", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()));
    }
}

/// The authorization server's routes: what a key-manager node serves.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/oauth2/authorize", get(authorize::page).post(authorize::decide))
        .route("/oauth2/token", post(token::token))
        .route("/oauth2/introspect", post(introspection::introspect))
        .route("/oauth2/revoke", post(revocation::revoke))
        .route("/oauth2/jwks", get(keys::jwks))
        .route("/.well-known/oauth-authorization-server", get(metadata::metadata))
        .route("/.well-known/openid-configuration", get(metadata::openid_configuration))
}

/// The signing keys' management, for admins of the control plane (the keys are in the
/// database the key-manager nodes share).
pub fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/keymanager/keys", get(keys::list))
        .route("/api/v1/keymanager/keys/rotate", post(keys::rotate))
        .route("/api/v1/keymanager/keys/{kid}/retire", post(keys::retire))
        .route("/api/v1/key-managers", get(external::list))
        .route("/api/v1/key-managers/{name}", put(external::put).delete(external::delete))
}
