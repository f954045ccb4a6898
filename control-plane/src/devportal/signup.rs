//! Self sign-up: anyone may create a subscriber account.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{Role, User, create_user};
use crate::error::{ApiResult, JsonBody};

/// A new subscriber account.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignUp {
    /// User name: 3 to 64 letters, digits, `.`, `_`, `-`, `@`.
    pub username: String,
    /// Password, at least 12 characters.
    pub password: String,
}

/// Create a subscriber account (no login needed); then log in with it.
#[utoipa::path(post, path = "/api/v1/signup", operation_id = "sign_up", tag = "devportal", request_body = SignUp,
    responses((status = 201, body = User), (status = 400, description = "invalid field"), (status = 409, description = "the name is taken"),
        (status = 429, description = "too many password checks waiting")))]
pub async fn signup(State(state): State<AppState>, JsonBody(signup): JsonBody<SignUp>) -> ApiResult<(StatusCode, Json<User>)> {
    let id = create_user(&state.db, &signup.username, &signup.password, Role::Subscriber).await?;
    tracing::info!(user = %signup.username, "subscriber signed up");
    Ok((StatusCode::CREATED, Json(User { id, username: signup.username, role: Role::Subscriber.as_str().to_owned() })))
}
