//! The mediation benchmark's policy (scenario S4): parses the JSON request body, removes,
//! renames and adds top-level fields, writes it back, and edits request headers. A body
//! that is not a JSON object is refused with 400, before the upstream sees it.

use std::collections::BTreeMap;

use portico_policy_sdk::{Context, Decision, Needs, Policy, Request, problem};
use serde_json::{Map, Value};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Top-level fields to drop.
    #[serde(default)]
    remove: Vec<String>,
    /// Top-level fields to rename, old name → new name.
    #[serde(default)]
    rename: BTreeMap<String, String>,
    /// Top-level fields to set.
    #[serde(default)]
    add: Map<String, Value>,
    /// Request headers to set.
    #[serde(default)]
    set_headers: BTreeMap<String, String>,
    /// Request headers to remove.
    #[serde(default)]
    remove_headers: Vec<String>,
}

struct JsonTransform {
    config: Config,
}

impl Policy for JsonTransform {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        for name in config.set_headers.keys().chain(&config.remove_headers) {
            if !portico_policy_sdk::http::is_token(name) {
                return Err(format!("set_headers/remove_headers: {name:?} is not a header name"));
            }
        }
        Ok(JsonTransform { config })
    }

    fn needs(&self) -> Needs {
        Needs::REQUEST_BODY
    }

    fn on_request(&mut self, request: &Request, _: &Context) -> Decision {
        let body = match request.body() {
            Ok(body) => body,
            Err(error) => return problem(413, "Payload Too Large", &format!("{error:?}")).into(),
        };
        let mut object = match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(object)) => object,
            _ => return problem(400, "Bad Request", "the body must be a JSON object").into(),
        };
        for name in &self.config.remove {
            object.remove(name);
        }
        for (from, to) in &self.config.rename {
            if let Some(value) = object.remove(from) {
                object.insert(to.clone(), value);
            }
        }
        for (name, value) in &self.config.add {
            object.insert(name.clone(), value.clone());
        }
        let body = serde_json::to_vec(&Value::Object(object)).expect("a JSON value serialises");
        let _ = request.set_body(&body);
        for (name, value) in &self.config.set_headers {
            let _ = request.set_header(name, value);
        }
        for name in &self.config.remove_headers {
            let _ = request.remove_header(name);
        }
        Decision::Continue
    }
}

portico_policy_sdk::export_policy!(JsonTransform);
