//! Allows a request when it has `x-allow: yes` and answers 403 otherwise: one header lookup,
//! the same work as `allow-header-py` and `allow-header-js`, for comparing languages.

use portico_policy_sdk::{Context, Decision, ImmediateResponse, Needs, Policy, Request};

struct AllowHeader;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {}

impl Policy for AllowHeader {
    type Config = Config;

    fn new(_: Config) -> Result<Self, String> {
        Ok(AllowHeader)
    }

    fn needs(&self) -> Needs {
        Needs::empty()
    }

    fn on_request(&mut self, request: &Request, _context: &Context) -> Decision {
        if request.header("x-allow").as_deref() == Some("yes") { Decision::Continue } else { ImmediateResponse::new(403).into() }
    }
}

portico_policy_sdk::export_policy!(AllowHeader);
