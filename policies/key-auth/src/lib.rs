//! key-auth: Portico's built-in authentication policy. It accepts an API key (header, then
//! query parameter), a Bearer JWT or, when configured, the connection's client certificate
//! (mutual TLS); has the host check it, sets the caller's identity and answers 401 (no or
//! bad credential) or 403 (missing scope) otherwise.

mod config;
mod credential;

use portico_policy_sdk::keys::{self, KeyError};
use portico_policy_sdk::{Context, Decision, Identity, Needs, Policy, Request, log};

use crate::config::{Config, Settings};
use crate::credential::{Method, Refusal, jwt_in_header, missing_scopes, non_empty, query_without, reason, refusal_response};

/// Where the credential of a request was found, so that it can be hidden afterwards.
enum Place<'a> {
    Header(&'a str),
    Query(&'a str),
    /// The TLS connection: nothing to hide from the upstream.
    Connection,
}

/// A credential found in a request.
struct Credential<'a> {
    method: Method,
    value: String,
    place: Place<'a>,
}

/// The key-auth policy.
struct KeyAuth {
    settings: Settings,
}

impl KeyAuth {
    /// The first credential in the request: API key header, API key query parameter, JWT,
    /// then the connection's client certificate. A credential in the request comes first: it
    /// names the caller of this request, where a certificate names whoever opened the
    /// connection.
    fn find_credential(&self, request: &Request) -> Option<Credential<'_>> {
        let settings = &self.settings;
        if let Some(header) = &settings.api_key_header
            && let Some(value) = non_empty(request.header(header))
        {
            let place = Place::Header(header);
            return Some(Credential { method: Method::ApiKey, value, place });
        }
        if let Some(name) = &settings.api_key_query
            && let Some(value) = non_empty(request.query_param(name))
        {
            let place = Place::Query(name);
            return Some(Credential { method: Method::ApiKey, value, place });
        }
        if let Some(header) = &settings.jwt_header
            && let Some(value) = request.header(header)
            && let Some(token) = jwt_in_header(header, &value)
        {
            let place = Place::Header(header);
            let value = token.to_owned();
            return Some(Credential { method: Method::Jwt, value, place });
        }
        if settings.client_certificate
            && let Some(sha256) = request.client_certificate()
        {
            return Some(Credential { method: Method::ClientCertificate, value: sha256, place: Place::Connection });
        }
        None
    }

    fn authenticate(&self, request: &Request, context: &Context) -> Result<(Identity, Place<'_>), Refusal> {
        let credential = self.find_credential(request).ok_or(Refusal::Missing)?;
        let checked = match credential.method {
            Method::ApiKey => keys::lookup_api_key(&credential.value),
            Method::Jwt => keys::verify_jwt(&credential.value).map(|token| token.identity),
            Method::ClientCertificate => keys::lookup_client_certificate(&credential.value),
        };
        let identity = checked.map_err(|error| {
            log_rejection(credential.method, &error);
            Refusal::Rejected(credential.method, error)
        })?;
        if self.settings.require_subscription && identity.subscription.is_none() {
            return Err(Refusal::NotSubscribed);
        }
        let operation_scopes =
            if self.settings.operation_scopes.is_empty() { None } else { self.settings.operation_scopes.get(&context.operation()) };
        let missing: Vec<String> = missing_scopes(&self.settings.required_scopes, &identity.scopes)
            .into_iter()
            .chain(operation_scopes.map_or_else(Vec::new, |required| missing_scopes(required, &identity.scopes)))
            .collect();
        if !missing.is_empty() {
            let required = self.settings.required_scopes.iter().chain(operation_scopes.into_iter().flatten()).cloned().collect();
            return Err(Refusal::InsufficientScope { required, missing });
        }
        Ok((identity, credential.place))
    }
}

impl Policy for KeyAuth {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(KeyAuth { settings: Settings::from_config(config)? })
    }

    fn needs(&self) -> Needs {
        Needs::empty()
    }

    fn on_request(&mut self, request: &Request, context: &Context) -> Decision {
        let (identity, place) = match self.authenticate(request, context) {
            Ok(found) => found,
            Err(refusal) => return refusal_response(&self.settings, &refusal).into(),
        };
        context.set_identity(&identity);
        if self.settings.hide_credentials {
            hide(request, &place);
        }
        Decision::Continue
    }
}

/// Removes the credential from the request before it goes upstream.
fn hide(request: &Request, place: &Place<'_>) {
    match place {
        Place::Header(name) => {
            if let Err(error) = request.remove_header(name) {
                log::warn("cannot remove the credential header", &[("header", name), ("error", error.name())]);
            }
        }
        Place::Query(name) => {
            if let Some(query) = request.query() {
                request.set_query(query_without(&query, name).as_deref());
            }
        }
        Place::Connection => {}
    }
}

fn log_rejection(method: Method, error: &KeyError) {
    let mut fields = vec![("method", method.name()), ("reason", reason(error))];
    if let KeyError::BadSignature(why) | KeyError::InvalidClaims(why) = error {
        fields.push(("detail", why.as_str()));
    }
    log::info("credential refused", &fields);
}

portico_policy_sdk::export_policy!(KeyAuth);
