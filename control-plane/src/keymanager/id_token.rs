//! ID tokens (OpenID Connect Core §2): who the end user is, for the client, issued with the
//! authorization code grant when the `openid` scope ([`crate::publisher::OPENID_SCOPE`],
//! which no API may define) was asked for, signed with the access tokens' key.

use serde::Serialize;

use super::access_token::{self, ACCESS_TOKEN_TTL_S, EndUser};
use crate::AppState;
use crate::db::now_ms;
use crate::error::ApiResult;

#[derive(Debug, Serialize)]
struct IdClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    azp: &'a str,
    preferred_username: &'a str,
    iat: i64,
    exp: i64,
    auth_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
}

/// An ID token about `user` for `client_id`, with the request's `nonce`.
pub(crate) async fn issue(state: &AppState, client_id: &str, user: &EndUser, auth_time: i64, nonce: Option<&str>) -> ApiResult<String> {
    let now = now_ms() / 1000;
    let claims = IdClaims {
        iss: &state.settings.issuer,
        sub: &user.id,
        aud: client_id,
        azp: client_id,
        preferred_username: &user.username,
        iat: now,
        exp: now + ACCESS_TOKEN_TTL_S,
        auth_time,
        nonce,
    };
    access_token::sign(state, "JWT", &claims).await
}
