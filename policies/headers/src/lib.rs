//! headers: Portico's built-in header policy. It renames, removes, sets and adds request
//! and response headers (values may hold placeholders such as `{application}`) and
//! implements CORS: preflights are answered here, responses get the `Access-Control-*`
//! headers.

mod config;
mod cors;
mod rules;
mod template;

use portico_policy_sdk::{Context, Decision, Identity, Needs, Policy, Request, Response, log};

use crate::config::{Config, Settings};
use crate::cors::varies_by_origin;
use crate::rules::{Failure, Headers, Rules};
use crate::template::Var;

/// The headers policy.
struct HeaderRules {
    settings: Settings,
}

impl Policy for HeaderRules {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(HeaderRules { settings: Settings::from_config(config)? })
    }

    fn on_request(&mut self, request: &Request, context: &Context) -> Decision {
        if let Some(cors) = &self.settings.cors
            && let Some(origin) = preflight_origin(request)
        {
            return cors.preflight(&origin).into();
        }
        apply(&self.settings.request, request, request, context);
        Decision::Continue
    }

    fn needs(&self) -> Needs {
        if self.settings.response.is_empty() && self.settings.cors.is_none() { Needs::empty() } else { Needs::RESPONSE_PHASE }
    }

    fn on_response(&mut self, request: &Request, response: &Response, context: &Context) {
        apply(&self.settings.response, response, request, context);
        let Some(cors) = &self.settings.cors else {
            return;
        };
        let origin = request.header("origin");
        for (name, value) in cors.response_headers(origin.as_deref()) {
            report(name, response.set_header(name, &value));
        }
        // Whether CORS headers are added depends on `Origin`, so caches must key on it.
        if !varies_by_origin(&response.header_all("vary")) {
            report("vary", response.append_header("vary", "Origin"));
        }
    }
}

/// The `Origin` of a CORS preflight: an `OPTIONS` request with `Origin` and
/// `Access-Control-Request-Method`.
fn preflight_origin(request: &Request) -> Option<String> {
    if request.method() != "OPTIONS" {
        return None;
    }
    let origin = request.header("origin")?;
    request.header("access-control-request-method")?;
    Some(origin)
}

/// Applies `rules` to `headers`, with placeholders filled from the request and context.
fn apply(rules: &Rules, headers: &dyn Headers, request: &Request, context: &Context) {
    if rules.is_empty() {
        return;
    }
    let mut identity: Option<Option<Identity>> = None;
    let mut value = |var: Var| -> String {
        let field = |identity: &Identity| match var {
            Var::Application => identity.application.clone(),
            Var::User => identity.user.clone(),
            Var::Tier => identity.tier.clone(),
            Var::Subscription => identity.subscription.clone(),
            Var::Api | Var::ClientIp => None,
        };
        match var {
            Var::Api => context.api_name(),
            Var::ClientIp => request.client_addr(),
            _ => identity.get_or_insert_with(|| context.identity()).as_ref().and_then(field).unwrap_or_default(),
        }
    };
    for Failure { header, error } in rules.apply(headers, &mut value) {
        log::warn("cannot change a header", &[("header", header.as_str()), ("error", error.name())]);
    }
}

/// Logs a header change the host refused.
fn report(header: &str, result: Result<(), portico_policy_sdk::HeaderError>) {
    if let Err(error) = result {
        log::warn("cannot change a header", &[("header", header), ("error", error.name())]);
    }
}

portico_policy_sdk::export_policy!(HeaderRules);
