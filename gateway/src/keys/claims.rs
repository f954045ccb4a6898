//! Reading a token's claims (or an introspection answer's members): registered dates, and
//! the caller's identity by an issuer's claim mapping.

use serde_json::{Map, Value};

use super::Identity;
use crate::contract::environment::ClaimMapping;

/// A NumericDate (RFC 7519 §2): seconds as a non-negative number, a fraction rounded.
pub(super) fn numeric_date(value: Option<&Value>) -> Option<u64> {
    let value = value?;
    value.as_u64().or_else(|| value.as_f64().filter(|v| v.is_finite() && *v >= 0.0 && *v < u64::MAX as f64).map(|v| v.round() as u64))
}

/// The caller, from the claims named by `mapping`.
pub(super) fn identity(claims: &Map<String, Value>, mapping: &ClaimMapping) -> Identity {
    let mut application = text_claim(claims, &mapping.application);
    // The default mapping reads `azp`, which tokens from the client-credentials grant often lack.
    if application.is_none() && mapping.application == "azp" {
        application = text_claim(claims, "client_id");
    }
    let scopes = match claims.get(&mapping.scopes) {
        Some(Value::String(scopes)) => scopes.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(scopes)) => scopes.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    Identity {
        method: "jwt",
        application,
        subscription: text_claim(claims, &mapping.subscription),
        tier: text_claim(claims, &mapping.tier),
        user: text_claim(claims, &mapping.user),
        scopes,
        subscriptions: match claims.get(&mapping.subscriptions) {
            Some(Value::Object(map)) => {
                Some(std::sync::Arc::new(map.iter().filter_map(|(api, tier)| Some((api.clone(), tier.as_str()?.to_owned()))).collect()))
            }
            _ => None,
        },
    }
}

pub(super) fn text_claim(claims: &Map<String, Value>, name: &str) -> Option<String> {
    claims.get(name).and_then(Value::as_str).map(str::to_owned)
}
