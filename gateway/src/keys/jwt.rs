//! Verification of one JWT against the configured issuers (RFC 8725): the issuer is chosen by
//! `iss`, the algorithm must be on that issuer's allow-list and fit the key, `kid` only selects
//! among configured keys (or an OpenID provider's, fetched again when it names one not seen
//! yet), and `iss`, `aud`, `exp` and `nbf` are required. The token is decoded once: its
//! signature checked with keys parsed at load, its claims read from the same parse. A token
//! that is not a JWT is asked about at the providers that introspect.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::{Map, Value};

use super::claims::{numeric_date, text_claim};
use super::issuer::{Issuer, media_type};
use super::provider::Answer;
use super::verification_key::candidates;
use super::{KeyError, VerifiedToken};

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
        let fetched = issuer.provider.as_ref().map(|provider| match header.kid.as_deref() {
            Some(kid) => provider.keys_knowing(kid),
            None => provider.keys(),
        });
        let keys = match &fetched {
            Some(fetched) => fetched.as_deref().map_or(&[][..], |fetched| &fetched.keys[..]),
            None => issuer.keys(),
        };
        let mut tried = false;
        for key in candidates(keys, alg, header.kid.as_deref()) {
            tried = true;
            if signature.as_deref().is_some_and(|signature| key.verify_sig(signed, signature).is_ok()) {
                check_claims(issuer, &claims, now)?;
                if issuer.require_jti && !matches!(claims.get("jti"), Some(Value::String(jti)) if !jti.is_empty()) {
                    return Err(KeyError::InvalidClaims("missing `jti`".to_owned()));
                }
                let claims_text = String::from_utf8(payload_json).map_err(|_| KeyError::Unknown)?;
                return verified(issuer, &claims, claims_text);
            }
        }
        Err(KeyError::BadSignature(if tried {
            "signature does not verify".to_owned()
        } else {
            "no configured key for this `kid` and algorithm".to_owned()
        }))
    }

    /// The token of an opaque `token` (not a JWT), as the first OpenID provider that
    /// introspects and knows it answers; unknown when none does (or none could be asked).
    pub(super) fn introspect(&self, token: &str, now: u64) -> Result<VerifiedToken, KeyError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(KeyError::Unknown);
        }
        let mut refusal = KeyError::Unknown;
        for issuer in self.by_name.values() {
            let Some(provider) = issuer.provider.as_ref().filter(|provider| provider.introspects()) else { continue };
            match provider.introspect(token, now).and_then(|answer| introspected(issuer, &answer, now)) {
                Ok(token) => return Ok(token),
                Err(KeyError::Unknown) => {}
                Err(other) => refusal = other,
            }
        }
        Err(refusal)
    }
}

/// The token a provider's `answer` makes of a token of `issuer` at `now`: active, not
/// expired, from this issuer and for one of its audiences when the answer says.
fn introspected(issuer: &Issuer, answer: &Answer, now: u64) -> Result<VerifiedToken, KeyError> {
    let Some((members, text)) = answer.active() else { return Err(KeyError::Unknown) };
    let expires_at = answer.expires_at().ok_or_else(|| KeyError::InvalidClaims("the introspection answer has no `exp`".to_owned()))?;
    if expires_at.saturating_add(issuer.leeway) < now {
        return Err(KeyError::Expired);
    }
    if let Some(iss) = members.get("iss")
        && iss.as_str() != Some(issuer.name.as_str())
    {
        return Err(KeyError::InvalidClaims("the introspection answer names another issuer".to_owned()));
    }
    let accepted = |aud: &Value| aud.as_str().is_some_and(|aud| issuer.audiences.iter().any(|accepted| accepted == aud));
    let for_us = match members.get("aud") {
        None => true,
        Some(Value::Array(auds)) => auds.iter().any(accepted),
        Some(aud) => accepted(aud),
    };
    if !for_us {
        return Err(KeyError::InvalidClaims("`aud` names no accepted audience".to_owned()));
    }
    // RFC 7662 §2.2: a bearer access token, when the answer says (not a refresh token, nor
    // one bound to a proof this gateway does not check).
    let bearer = |kind: &str| kind.eq_ignore_ascii_case("bearer") || kind.eq_ignore_ascii_case("access_token");
    if members.get("token_type").is_some_and(|kind| !kind.as_str().is_some_and(bearer)) {
        return Err(KeyError::InvalidClaims("not a bearer access token".to_owned()));
    }
    token_of(issuer, members, text.to_owned(), expires_at)
}

/// Whether `token` has the shape of a JWT (JWS compact serialisation: three parts).
pub(super) fn is_jwt(token: &str) -> bool {
    token.bytes().filter(|&byte| byte == b'.').count() == 2
}

/// The claims of a token whose signature verified: `aud`, `exp` and `nbf` (but for an
/// OpenID provider's) present and well formed (`iss` chose the issuer), the token within its validity give or take the issuer's
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
    // An OpenID provider's access tokens (RFC 9068 §2.2) need not carry `nbf`.
    let nbf = match claims.get("nbf") {
        None if issuer.provider.is_some() => None,
        nbf => Some(numeric_date(nbf).ok_or_else(|| missing("nbf"))?),
    };
    if exp < now.saturating_sub(issuer.leeway) {
        return Err(KeyError::Expired);
    }
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(issuer.leeway)) {
        return Err(KeyError::NotYetValid);
    }
    if !names_accepted {
        return Err(KeyError::InvalidClaims("`aud` names no accepted audience".to_owned()));
    }
    Ok(())
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
fn verified(issuer: &Issuer, claims: &Map<String, Value>, claims_text: String) -> Result<(VerifiedToken, u64), KeyError> {
    // `exp` was checked.
    let expires_at = numeric_date(claims.get("exp")).unwrap_or(0);
    let token = token_of(issuer, claims, claims_text, expires_at)?;
    Ok((token, expires_at.saturating_add(issuer.leeway)))
}

/// A token of `issuer` with `claims` (a JWT's, or an introspection answer's), accepted until
/// `expires_at`.
fn token_of(issuer: &Issuer, claims: &Map<String, Value>, claims_text: String, expires_at: u64) -> Result<VerifiedToken, KeyError> {
    Ok(VerifiedToken {
        issuer: issuer.name.clone(),
        subject: text_claim(claims, "sub"),
        expires_at,
        identity: issuer.identity(claims)?,
        claims: claims_text,
        jti: text_claim(claims, "jti"),
        issued_at: claims.get("iat").and_then(|iat| iat.as_u64().or_else(|| iat.as_f64().map(|iat| iat.floor() as u64))),
    })
}
