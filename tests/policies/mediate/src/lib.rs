//! Body mediation for tests: upper-cases the request body and wraps the response body
//! in a JSON envelope, to exercise buffered bodies in both directions.

use portico_policy_sdk::{Context, Decision, Needs, Policy, Request, Response, log};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    envelope: Option<String>,
}

struct Mediate {
    envelope: String,
}

impl Policy for Mediate {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let envelope = config.envelope.unwrap_or_else(|| "data".to_owned());
        if envelope.is_empty() || envelope.contains('"') {
            return Err("envelope: must be a non-empty name without quotes".to_owned());
        }
        Ok(Mediate { envelope })
    }

    fn needs(&self) -> Needs {
        Needs::REQUEST_BODY | Needs::RESPONSE_BODY | Needs::RESPONSE_PHASE
    }

    fn on_request(&mut self, request: &Request, _: &Context) -> Decision {
        if let Ok(body) = request.body() {
            let _ = request.set_body(&body.to_ascii_uppercase());
        }
        Decision::Continue
    }

    fn on_response(&mut self, _: &Request, response: &Response, _: &Context) {
        match response.body() {
            Ok(body) => {
                let inner = String::from_utf8_lossy(&body);
                let wrapped = format!("{{\"{}\":{}}}", self.envelope, if inner.is_empty() { "null" } else { &inner });
                let _ = response.set_body(wrapped.as_bytes());
                let _ = response.set_header("content-type", "application/json");
            }
            Err(error) => log::warn("response body unavailable", &[("error", &format!("{error:?}"))]),
        }
    }
}

portico_policy_sdk::export_policy!(Mediate);
