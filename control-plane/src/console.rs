//! The web console: the developer portal's, the publisher's and the admin's pages, server-rendered from
//! templates compiled into the binary. Pages call the REST API's handlers (every rule,
//! role check and error is theirs) and show their problems next to the fields they name.
//! `session` owns the login cookie and the anti-forgery tokens, `page` the common frame
//! and headers (a Content-Security-Policy without inline script), `assets` the style sheet
//! and the one script.

mod admin;
mod assets;
mod page;
mod policy_form;
mod portal;
mod publisher;
mod session;
mod try_it;
mod usage;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::AppState;

/// The console's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(session::home))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/signup", get(session::signup_page).post(session::signup))
        .route("/console/assets/{name}", get(assets::serve))
        .route("/devportal", get(portal::catalogue))
        .route("/devportal/apis/{id}", get(portal::api))
        .route("/devportal/apis/{id}/try", post(portal::try_api))
        .route("/devportal/apis/{id}/openapi.json", get(portal::openapi))
        .route("/devportal/applications", get(portal::applications).post(portal::create_application))
        .route("/devportal/applications/{id}", get(portal::application))
        .route("/devportal/applications/{id}/usage", get(usage::application))
        .route("/devportal/subscriptions", post(portal::subscribe))
        .route("/devportal/applications/{id}/subscriptions/{sub_id}/delete", post(portal::unsubscribe))
        .route("/devportal/applications/{id}/api-keys", post(portal::create_api_key))
        .route("/devportal/applications/{id}/oauth-client", post(portal::create_oauth_client))
        .route("/devportal/applications/{id}/oauth-client/secret", post(portal::regenerate_secret))
        .route("/devportal/applications/{id}/oauth-client/token", post(portal::test_token))
        .route("/devportal/applications/{id}/api-keys/{key_id}/revoke", post(portal::revoke_api_key))
        .route("/admin", get(async || page::see_other("/admin/users")))
        .route("/admin/users", get(admin::users).post(admin::create_user))
        .route("/admin/users/{id}/role", post(admin::set_role))
        .route("/admin/tiers", get(admin::tiers).post(admin::save_tier))
        .route("/admin/environments", get(admin::environments).post(admin::create_environment))
        .route("/admin/environments/{name}/gateway-url", post(admin::set_gateway_url))
        .route("/admin/environments/{name}/gateway-tokens", post(admin::create_gateway_token))
        .route("/admin/environments/{name}/gateway-tokens/{id}/revoke", post(admin::revoke_gateway_token))
        .route("/admin/gateways", get(admin::gateways))
        .route("/admin/blocking", get(admin::blocking).post(admin::block))
        .route("/admin/blocking/{id}/delete", post(admin::unblock))
        .route("/publisher", get(publisher::apis))
        .route("/publisher/import", get(publisher::import_page).post(publisher::import).layer(DefaultBodyLimit::max(8 << 20)))
        .route(
            "/publisher/policies",
            get(publisher::policies)
                .post(publisher::upload_policy)
                .layer(DefaultBodyLimit::max(crate::registry::MAX_COMPONENT_BYTES + (1 << 20))),
        )
        .route("/publisher/new", get(publisher::new_api).post(publisher::create_api))
        .route("/publisher/apis/{id}", get(publisher::api))
        .route("/publisher/apis/{id}/edit", get(publisher::edit_api).post(publisher::update_api))
        .route("/publisher/apis/{id}/attach", get(publisher::attach_form).post(publisher::attach))
        .route("/publisher/apis/{id}/policies/{index}/remove", post(publisher::detach))
        .route("/publisher/apis/{id}/operations/{operation}/policies/{index}/remove", post(publisher::detach_from_operation))
        .route("/publisher/apis/{id}/usage", get(usage::api))
        .route("/publisher/apis/{id}/lifecycle", post(publisher::change_lifecycle))
        .route("/publisher/apis/{id}/revisions", post(publisher::create_revision))
        .route("/publisher/apis/{id}/deployments", post(publisher::deploy))
        .route("/publisher/apis/{id}/deployments/{environment}/rollback", post(publisher::rollback))
        .route("/publisher/environments/{name}/rollout", get(publisher::rollout))
}
