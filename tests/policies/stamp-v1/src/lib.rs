//! Stamps requests and responses with the name of the package it was built as, so a
//! test can tell which version of a policy handled a request (the v1 and v2 crates
//! build this same file under different names).

use portico_policy_sdk::{Context, Decision, Policy, Request, Response};

const VERSION: &str = env!("CARGO_PKG_NAME");

struct Stamp;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {}

impl Policy for Stamp {
    type Config = Config;

    fn new(_: Config) -> Result<Self, String> {
        Ok(Stamp)
    }

    fn on_request(&mut self, request: &Request, context: &Context) -> Decision {
        let _ = request.set_header("x-policy-version", VERSION);
        context.set("stamp", VERSION);
        Decision::Continue
    }

    fn on_response(&mut self, _: &Request, response: &Response, context: &Context) {
        // Both phases must have seen the same version.
        let seen = context.get("stamp").unwrap_or_default();
        let _ = response.set_header("x-policy-version", &format!("{seen}/{VERSION}"));
    }
}

portico_policy_sdk::export_policy!(Stamp);
