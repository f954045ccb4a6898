//! A policy built against `portico:policy@0.1.0` exactly as it was released (`wit/` here is a
//! frozen copy, never to be edited): a gateway of a later 0.1 release must load it and run
//! every kind of call it makes, unchanged. It echoes `x-echo` on the response, counts the
//! request and says what it left, tags the request for the upstream, and stamps the response
//! with an attribute kept from the request phase.

wit_bindgen::generate!({ world: "policy-world", path: "wit" });

use exports::portico::policy::policy::Guest;
use portico::policy::counters;
use portico::policy::types::{Context, Decision, Needs, Request, Response};

struct Contract010;

impl Guest for Contract010 {
    fn init(_config: String) -> Result<Needs, String> {
        Ok(Needs::RESPONSE_PHASE)
    }

    fn on_request(request: &Request, context: &Context) -> Decision {
        if let Some(echo) = request.header("x-echo") {
            let _ = context.set_response_header("x-echo", &echo);
        }
        let hit = counters::hit("requests", 100, 60_000, 1);
        let _ = context.set_response_header("x-remaining", &hit.remaining.to_string());
        let _ = request.set_header("x-contract", "0.1.0");
        context.set("contract", &context.api_name());
        Decision::Continue
    }

    fn on_response(_request: &Request, response: &Response, context: &Context) {
        let _ = response.set_header("x-contract-api", &context.get("contract").unwrap_or_default());
    }
}

export!(Contract010);
