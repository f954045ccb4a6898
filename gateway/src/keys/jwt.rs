//! Verification of one JWT against the configured issuers (RFC 8725): the issuer is chosen by
//! `iss`, the algorithm must be on that issuer's allow-list and fit the key, `kid` only selects
//! among configured keys, and `iss`, `aud`, `exp` and `nbf` are required. The token is decoded
//! once: its signature checked with keys parsed at load, its claims read from the same parse.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::{Map, Value};

use super::issuer::{Issuer, media_type};
use super::{Identity, KeyError, VerifiedToken};
use crate::contract::environment::ClaimMapping;

/// Longest token considered; longer ones are refused before any parsing.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The configured issuers, by `iss`.
pub(super) struct Issuers {
    by_name: HashMap<String, Issuer>,
}

/// The header fields read before verification; `jku`, `x5u`, `x5c` and `jwk` are ignored.
#[derive(Deserialize)]
struct UnverifiedHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<IgnoredAny>,
    #[serde(default)]
    typ: Option<String>,
}

impl Issuers {
    pub(super) fn new(by_name: HashMap<String, Issuer>) -> Issuers {
        Issuers { by_name }
    }

    /// Verify `token` at `now` (Unix seconds); on success, the token and the last Unix
    /// second it is accepted at.
    pub(super) fn verify(&self, token: &str, now: u64) -> Result<(VerifiedToken, u64), KeyError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(KeyError::Unknown);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(KeyError::Unknown);
        };
        let signed = &token.as_bytes()[..header.len() + 1 + payload.len()];
        let header: UnverifiedHeader = decode_part(header).ok_or(KeyError::Unknown)?;
        let payload_json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| KeyError::Unknown)?;
        let claims: Map<String, Value> = serde_json::from_slice(&payload_json).map_err(|_| KeyError::Unknown)?;

        // `iss` is read before the signature is checked only to choose whose keys check it.
        let issuer = match claims.get("iss") {
            Some(Value::String(iss)) => self.by_name.get(iss.as_str()),
            Some(_) => return Err(KeyError::InvalidClaims("`iss` is not a string".to_owned())),
            None => return Err(KeyError::InvalidClaims("missing `iss`".to_owned())),
        }
        .ok_or_else(|| KeyError::InvalidClaims("unknown issuer".to_owned()))?;

        let alg = signature_algorithm(&header.alg)?;
        if !issuer.allows(alg) {
            return Err(KeyError::BadSignature(format!("{alg:?} is not allowed for this issuer")));
        }
        if header.crit.is_some() {
            return Err(KeyError::BadSignature("critical header extensions are not supported".to_owned()));
        }
        if let Some(expected) = &issuer.typ
            && header.typ.as_deref().map(media_type).as_ref() != Some(expected)
        {
            return Err(KeyError::InvalidClaims(format!("the header `typ` must be `{expected}`")));
        }

        // A signature that is not base64url verifies with no key.
        let signature = URL_SAFE_NO_PAD.decode(signature).ok();
        let mut tried = false;
        for key in issuer.candidates(alg, header.kid.as_deref()) {
            tried = true;
            if signature.as_deref().is_some_and(|signature| key.verify_sig(signed, signature).is_ok()) {
                check_claims(issuer, &claims, now)?;
                if issuer.require_jti && !matches!(claims.get("jti"), Some(Value::String(jti)) if !jti.is_empty()) {
                    return Err(KeyError::InvalidClaims("missing `jti`".to_owned()));
                }
                let claims_text = String::from_utf8(payload_json).map_err(|_| KeyError::Unknown)?;
                return Ok(verified(issuer, &claims, claims_text));
            }
        }
        Err(KeyError::BadSignature(if tried {
            "signature does not verify".to_owned()
        } else {
            "no configured key for this `kid` and algorithm".to_owned()
        }))
    }
}

/// The claims of a token whose signature verified: `aud`, `exp` and `nbf` present and well
/// formed (`iss` chose the issuer), the token within its validity give or take the issuer's
/// leeway, and one of its audiences accepted.
fn check_claims(issuer: &Issuer, claims: &Map<String, Value>, now: u64) -> Result<(), KeyError> {
    let missing = |claim: &str| KeyError::InvalidClaims(format!("missing or malformed `{claim}`"));
    let accepted = |aud: &str| issuer.audiences.iter().any(|accepted| accepted == aud);
    let names_accepted = match claims.get("aud") {
        Some(Value::String(aud)) => accepted(aud),
        Some(Value::Array(auds)) if auds.iter().all(Value::is_string) => auds.iter().filter_map(Value::as_str).any(accepted),
        _ => return Err(missing("aud")),
    };
    let exp = numeric_date(claims.get("exp")).ok_or_else(|| missing("exp"))?;
    let nbf = numeric_date(claims.get("nbf")).ok_or_else(|| missing("nbf"))?;
    if exp < now.saturating_sub(issuer.leeway) {
        return Err(KeyError::Expired);
    }
    if nbf > now.saturating_add(issuer.leeway) {
        return Err(KeyError::NotYetValid);
    }
    if !names_accepted {
        return Err(KeyError::InvalidClaims("`aud` names no accepted audience".to_owned()));
    }
    Ok(())
}

/// A NumericDate (RFC 7519 §2): seconds as a non-negative number, a fraction rounded.
fn numeric_date(value: Option<&Value>) -> Option<u64> {
    let value = value?;
    value.as_u64().or_else(|| value.as_f64().filter(|v| v.is_finite() && *v >= 0.0 && *v < u64::MAX as f64).map(|v| v.round() as u64))
}

/// A base64url JSON part of the token.
fn decode_part<T: DeserializeOwned>(part: &str) -> Option<T> {
    let json = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&json).ok()
}

/// The header's `alg` when it is an asymmetric signature algorithm; the message names it only
/// when it is a known algorithm, never echoing the token.
fn signature_algorithm(alg: &str) -> Result<Algorithm, KeyError> {
    match alg.parse::<Algorithm>() {
        Ok(alg) if alg.family() == AlgorithmFamily::Hmac => Err(KeyError::BadSignature(format!("{alg:?} is never accepted"))),
        Ok(alg) => Ok(alg),
        Err(_) if alg.eq_ignore_ascii_case("none") => Err(KeyError::BadSignature("unsigned tokens are never accepted".to_owned())),
        Err(_) => Err(KeyError::BadSignature("unsupported algorithm".to_owned())),
    }
}

/// The verified token, with its identity mapped from the claims.
fn verified(issuer: &Issuer, claims: &Map<String, Value>, claims_text: String) -> (VerifiedToken, u64) {
    // `exp` was checked.
    let expires_at = numeric_date(claims.get("exp")).unwrap_or(0);
    let token = VerifiedToken {
        issuer: issuer.name.clone(),
        subject: text_claim(claims, "sub"),
        expires_at,
        identity: identity(claims, &issuer.claims),
        claims: claims_text,
        jti: text_claim(claims, "jti"),
        issued_at: claims.get("iat").and_then(|iat| iat.as_u64().or_else(|| iat.as_f64().map(|iat| iat.floor() as u64))),
    };
    (token, expires_at.saturating_add(issuer.leeway))
}

/// The caller, from the claims named by `mapping`.
fn identity(claims: &Map<String, Value>, mapping: &ClaimMapping) -> Identity {
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

fn text_claim(claims: &Map<String, Value>, name: &str) -> Option<String> {
    claims.get(name).and_then(Value::as_str).map(str::to_owned)
}
