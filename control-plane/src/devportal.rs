//! The developer portal: self sign-up, the catalogue of published APIs, applications,
//! their subscriptions to APIs (with optional approval) and their credentials (an OAuth2
//! client and API keys, whose secrets are shown once and stored only as hashes; client
//! certificates for mutual TLS).

pub(crate) mod api_keys;
pub(crate) mod applications;
pub(crate) mod catalogue;
mod client_certificates;
mod external_clients;
pub(crate) mod oauth_clients;
pub(crate) mod signup;
pub(crate) mod subscriptions;

use axum::Router;
use axum::routing::{delete, get, post, put};
use utoipa::OpenApi;

use crate::AppState;

pub use api_keys::{ApiKey, ApiKeyOwner, NewApiKey, api_key_hash, api_key_hmac_secret, listed_api_keys};
pub(crate) use applications::owned as owned_application;
pub use applications::{Application, ApplicationFields};
pub use catalogue::{CatalogueApi, CatalogueOperation, CatalogueSearch};
pub use client_certificates::{
    ApplicationCertificate, CertificateOwner, MAX_CERTIFICATE_TEXT, NewApplicationCertificate, PROOF_PREFIX, registered_client_certificates,
};
pub use external_clients::{ExternalClient, ExternalClientHolder, NewExternalClient, external_client_holders};
pub use oauth_clients::{OAuthClient, OAuthClientSecret, RedirectUris};
pub use signup::SignUp;
pub use subscriptions::{ApprovalSetting, NewSubscription, Subscription, SubscriptionFilter, SubscriptionStatus};

/// The OpenAPI paths of this module.
#[derive(OpenApi)]
#[openapi(paths(
    signup::signup,
    catalogue::list,
    catalogue::get,
    catalogue::openapi,
    applications::list,
    applications::create,
    applications::get,
    applications::replace,
    applications::delete,
    subscriptions::list,
    subscriptions::subscribe,
    subscriptions::unsubscribe,
    subscriptions::usage,
    subscriptions::queue,
    subscriptions::approve,
    subscriptions::reject,
    subscriptions::get_approval,
    subscriptions::set_approval,
    oauth_clients::get,
    oauth_clients::create,
    oauth_clients::regenerate_secret,
    oauth_clients::set_redirect_uris,
    api_keys::list,
    api_keys::create,
    api_keys::revoke,
    client_certificates::list,
    client_certificates::register,
    client_certificates::remove,
    external_clients::list,
    external_clients::map,
    external_clients::unmap,
))]
pub struct Doc;

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/signup", post(signup::signup))
        .route("/api/v1/catalogue", get(catalogue::list))
        .route("/api/v1/catalogue/{api_id}", get(catalogue::get))
        .route("/api/v1/catalogue/{api_id}/openapi.json", get(catalogue::openapi))
        .route("/api/v1/applications", get(applications::list).post(applications::create))
        .route("/api/v1/applications/{id}", get(applications::get).put(applications::replace).delete(applications::delete))
        .route("/api/v1/applications/{id}/subscriptions", get(subscriptions::list).post(subscriptions::subscribe))
        .route("/api/v1/applications/{id}/subscriptions/{sub_id}", delete(subscriptions::unsubscribe))
        .route("/api/v1/applications/{id}/subscriptions/{sub_id}/usage", get(subscriptions::usage))
        .route("/api/v1/applications/{id}/oauth-client", get(oauth_clients::get).post(oauth_clients::create))
        .route("/api/v1/applications/{id}/oauth-client/regenerate-secret", post(oauth_clients::regenerate_secret))
        .route("/api/v1/applications/{id}/oauth-client/redirect-uris", put(oauth_clients::set_redirect_uris))
        .route("/api/v1/applications/{id}/api-keys", get(api_keys::list).post(api_keys::create))
        .route("/api/v1/applications/{id}/api-keys/{key_id}", delete(api_keys::revoke))
        .route("/api/v1/applications/{id}/client-certificates", get(client_certificates::list).post(client_certificates::register))
        .route("/api/v1/applications/{id}/client-certificates/{certificate_id}", delete(client_certificates::remove))
        .route("/api/v1/applications/{id}/external-clients", get(external_clients::list))
        .route("/api/v1/applications/{id}/external-clients/{key_manager}", put(external_clients::map).delete(external_clients::unmap))
        .route("/api/v1/subscriptions", get(subscriptions::queue))
        .route("/api/v1/subscriptions/{sub_id}/approve", post(subscriptions::approve))
        .route("/api/v1/subscriptions/{sub_id}/reject", post(subscriptions::reject))
        .route("/api/v1/settings/subscription_approval", put(subscriptions::set_approval).get(subscriptions::get_approval))
}
