//! The configured JWT issuers: their algorithm allow-lists, claim mappings, client
//! applications and verification keys, loaded from PEM public keys and JWKS documents (an
//! OpenID provider's keys are fetched by its [`Provider`] instead).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, AlgorithmFamily};

use super::provider::{Provider, Providers};
use super::verification_key::{VerificationKey, decode_pem, load_jwks, usable};
use super::{Identity, KeyError};
use crate::contract::Problem;
use crate::contract::environment::{ClaimMapping, ClientApplication, JwtIssuer};

/// One issuer, ready to verify its tokens.
pub(super) struct Issuer {
    /// The expected `iss`.
    pub(super) name: String,
    /// Which claims carry the identity.
    pub(super) claims: ClaimMapping,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub(super) leeway: u64,
    /// The header `typ` required, lower case, without `application/`.
    pub(super) typ: Option<String>,
    /// Whether `jti` is required.
    pub(super) require_jti: bool,
    /// The `aud` values accepted (a token must name one).
    pub(super) audiences: Vec<String>,
    /// The algorithms allowed.
    algorithms: Vec<Algorithm>,
    keys: Vec<VerificationKey>,
    /// For an OpenID provider: where its keys and introspection answers come from.
    pub(super) provider: Option<Arc<Provider>>,
    /// The applications of its clients, when they are listed.
    clients: Option<std::collections::HashMap<String, Client>>,
}

/// An application as the identity of its OAuth2 client's tokens gives it.
struct Client {
    application: String,
    tier: Option<String>,
    user: Option<String>,
    subscriptions: Arc<BTreeMap<String, String>>,
}

/// A JWT `typ` as compared: lower case, without `application/` (RFC 7515 §4.1.9).
pub(super) fn media_type(typ: &str) -> String {
    let typ = typ.to_ascii_lowercase();
    typ.strip_prefix("application/").map(str::to_owned).unwrap_or(typ)
}

impl Issuer {
    /// Whether the issuer allows tokens signed with `alg`.
    pub(super) fn allows(&self, alg: Algorithm) -> bool {
        self.algorithms.contains(&alg)
    }

    /// The keys configured (an OpenID provider's are its [`Provider`]'s).
    pub(super) fn keys(&self) -> &[VerificationKey] {
        &self.keys
    }

    /// The identity of a token with `claims`, mapped by the issuer's claim mapping and, when
    /// it lists its clients' applications, by its client's: a client not listed is refused.
    pub(super) fn identity(&self, claims: &serde_json::Map<String, serde_json::Value>) -> Result<Identity, KeyError> {
        let mut identity = super::claims::identity(claims, &self.claims);
        if let Some(clients) = &self.clients {
            let client = identity.application.as_deref().and_then(|id| clients.get(id).map(|client| (id, client)));
            let Some((id, client)) = client else {
                return Err(KeyError::InvalidClaims("the token's client is not registered with an application".to_owned()));
            };
            // A client-credentials token's subject is often its client: no end user then.
            if identity.user.as_deref() == Some(id) || identity.user.is_none() {
                identity.user = client.user.clone();
            }
            identity.application = Some(client.application.clone());
            identity.tier = client.tier.clone();
            identity.subscriptions = Some(client.subscriptions.clone());
        }
        Ok(identity)
    }
}

/// Load every issuer, by `iss`; an OpenID provider's comes from `providers`. Problems are
/// added to `problems`, located by their path.
pub(super) fn load(
    configs: &[JwtIssuer],
    base_dir: &Path,
    providers: Option<&Providers>,
    problems: &mut Vec<Problem>,
) -> HashMap<String, Issuer> {
    let mut issuers = HashMap::new();
    // An opaque token names no issuer: it could only be sent to every provider that
    // introspects, each then seeing the others' tokens.
    let introspecting =
        configs.iter().enumerate().filter(|(_, config)| config.discovery.as_ref().is_some_and(|d| d.introspection.is_some()));
    for (i, _) in introspecting.skip(1) {
        problems.push(Problem {
            path: format!("jwt_issuers[{i}].discovery.introspection"),
            reason: "only one issuer may introspect opaque tokens (they name no issuer)".to_owned(),
        });
    }
    for (i, config) in configs.iter().enumerate() {
        let at = format!("jwt_issuers[{i}]");
        let problems_before = problems.len();
        let mut problem = |path: String, reason: String| problems.push(Problem { path, reason });

        check_settings(config, &at, &mut problem);
        let algorithms = allowed_algorithms(config, &at, &mut problem);
        let mut keys = Vec::new();
        for (j, key) in config.keys.iter().enumerate() {
            let (path, pem) = match (&key.pem, &key.pem_file) {
                (Some(pem), None) => (format!("{at}.keys[{j}].pem"), pem.clone()),
                (None, Some(file)) => {
                    let path = format!("{at}.keys[{j}].pem_file");
                    match std::fs::read_to_string(base_dir.join(file)) {
                        Ok(pem) => (path, pem),
                        Err(e) => {
                            problem(path, format!("cannot read `{}`: {e}", file.display()));
                            continue;
                        }
                    }
                }
                // Neither or both: reported by `check_settings`.
                _ => continue,
            };
            match decode_pem(&pem) {
                Ok((kind, mut parsed)) => {
                    parsed.retain(|(alg, _)| usable(*alg, &algorithms, None));
                    if parsed.is_empty() {
                        problem(path, format!("{} key, but none of the issuer's algorithms uses it", kind.describe()));
                    } else {
                        keys.push(VerificationKey { kid: key.kid.clone(), parsed });
                    }
                }
                Err(reason) => problem(path, reason),
            }
        }
        if let Some(document) = &config.jwks {
            let path = format!("{at}.jwks");
            match serde_json::from_value::<JwkSet>(document.clone()) {
                Ok(set) => load_jwks(&set, &path, &algorithms, &mut keys, &mut problem),
                Err(e) => problem(path, format!("not a JWKS document: {e}")),
            }
        }
        if let Some(file) = &config.jwks_file {
            let path = format!("{at}.jwks_file");
            match std::fs::read_to_string(base_dir.join(file)) {
                Ok(text) => match serde_json::from_str::<JwkSet>(&text) {
                    Ok(set) => load_jwks(&set, &path, &algorithms, &mut keys, &mut problem),
                    Err(e) => problem(path, format!("`{}` is not a JWKS document: {e}", file.display())),
                },
                Err(e) => problem(path, format!("cannot read `{}`: {e}", file.display())),
            }
        }
        let has_sources = !config.keys.is_empty() || config.jwks.is_some() || config.jwks_file.is_some();
        if keys.is_empty() && has_sources && problems.len() == problems_before {
            problems.push(Problem { path: at.clone(), reason: "no usable verification key for the allowed algorithms".to_owned() });
        }
        let provider = match (&config.discovery, providers) {
            (Some(discovery), Some(providers)) => match providers.get(&config.issuer, discovery, &algorithms) {
                Ok(provider) => Some(provider),
                Err(reason) => {
                    problems.push(Problem { path: format!("{at}.discovery"), reason });
                    None
                }
            },
            (Some(_), None) => {
                problems.push(Problem { path: format!("{at}.discovery"), reason: "OpenID providers are for a running gateway".to_owned() });
                None
            }
            (None, _) => None,
        };
        let clients = config.clients.as_ref().map(|clients| {
            clients
                .iter()
                .map(|(id, client): (&String, &ClientApplication)| {
                    let mapped = Client {
                        application: client.application.clone(),
                        tier: client.tier.clone(),
                        user: client.user.clone(),
                        subscriptions: Arc::new(client.subscriptions.clone()),
                    };
                    (id.clone(), mapped)
                })
                .collect()
        });
        if issuers.contains_key(&config.issuer) {
            problems.push(Problem { path: format!("{at}.issuer"), reason: format!("issuer `{}` is configured twice", config.issuer) });
            continue;
        }
        let leeway = config.leeway.0.as_secs();
        issuers.insert(
            config.issuer.clone(),
            Issuer {
                name: config.issuer.clone(),
                claims: config.claims.clone(),
                leeway,
                typ: config.typ.as_deref().map(media_type),
                require_jti: config.require_jti,
                audiences: config.audiences.clone(),
                algorithms,
                keys,
                provider,
                clients,
            },
        );
    }
    issuers
}

/// The problems of an issuer's settings that need no key read: what is missing, or given
/// twice over.
fn check_settings(issuer: &JwtIssuer, at: &str, problem: &mut impl FnMut(String, String)) {
    if issuer.audiences.is_empty() {
        problem(format!("{at}.audiences"), "at least one audience is needed".into());
    }
    if issuer.algorithms.is_empty() {
        problem(format!("{at}.algorithms"), "at least one algorithm is needed".into());
    }
    let configured_keys = !issuer.keys.is_empty() || issuer.jwks.is_some() || issuer.jwks_file.is_some();
    match &issuer.discovery {
        None if !configured_keys => problem(at.to_owned(), "no verification key: give `keys`, `jwks`, `jwks_file` or `discovery`".into()),
        Some(_) if configured_keys => {
            problem(format!("{at}.discovery"), "an OpenID provider's keys are fetched: give `discovery` or keys, not both".into())
        }
        Some(discovery) => {
            if let Some(introspection) = &discovery.introspection {
                for (field, value) in [("client_id", &introspection.client_id), ("client_secret", &introspection.client_secret)] {
                    if value.is_empty() {
                        problem(format!("{at}.discovery.introspection.{field}"), "must not be empty".into());
                    }
                }
            }
            if discovery.unknown_kid_interval.0.is_zero() {
                problem(format!("{at}.discovery.unknown_kid_interval"), "must be more than 0s".into());
            }
            if discovery.refresh.0.is_zero() {
                problem(format!("{at}.discovery.refresh"), "must be more than 0s".into());
            }
        }
        None => {}
    }
    for (j, key) in issuer.keys.iter().enumerate() {
        if key.pem.is_some() == key.pem_file.is_some() {
            problem(format!("{at}.keys[{j}]"), "give exactly one of `pem` and `pem_file`".into());
        }
    }
}

/// The issuer's algorithm names, parsed; HMAC, `none` and unknown names are problems.
fn allowed_algorithms(config: &JwtIssuer, at: &str, problem: &mut impl FnMut(String, String)) -> Vec<Algorithm> {
    let mut algorithms = Vec::new();
    for (k, name) in config.algorithms.iter().enumerate() {
        let path = format!("{at}.algorithms[{k}]");
        match Algorithm::from_str(name) {
            Ok(alg) if alg.family() == AlgorithmFamily::Hmac => {
                problem(path, format!("`{name}` is never accepted: HMAC needs a shared secret (RFC 8725)"));
            }
            Ok(alg) => {
                if !algorithms.contains(&alg) {
                    algorithms.push(alg);
                }
            }
            Err(_) if name.eq_ignore_ascii_case("none") => {
                problem(path, "`none` is never accepted: tokens must be signed".to_owned());
            }
            Err(_) => {
                problem(path, format!("unknown algorithm `{name}`; use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA"))
            }
        }
    }
    algorithms
}
