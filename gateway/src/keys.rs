//! Credential validation done by the host on behalf of policies (the WIT `keys` import): API
//! keys looked up by their sha256 digest, JWT access tokens verified against the configured
//! issuers, with verified tokens kept in a bounded cache, and opaque tokens introspected at
//! the OpenID providers that issue them. Built once per configuration snapshot.

mod api_key;
mod claims;
mod consumers;
mod issuer;
mod jwt;
mod provider;
#[cfg(test)]
mod tests;
mod verification_key;

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use quick_cache::Weighter;
use std::collections::BTreeMap;

use quick_cache::sync::Cache;

use crate::contract::Problem;
use crate::contract::environment::{self, Environment};

pub(crate) use provider::Provider;
pub use provider::{Providers, take_time_waited};

/// An identity's `method` as the gateway keeps it: one of the names the host gives
/// (`api-key`, `jwt`, `client-certificate`), or `custom` for any other a policy sets.
pub fn method_name(method: &str) -> &'static str {
    match method {
        "api-key" => "api-key",
        "jwt" => "jwt",
        "client-certificate" => "client-certificate",
        _ => "custom",
    }
}

/// Who is calling, as established by an API key or a token (the WIT `identity` record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// How the caller was authenticated: `api-key` or `jwt`.
    pub method: &'static str,
    /// The application (OAuth2 client or API-key owner) making the call.
    pub application: Option<String>,
    /// The subscription of that application to the API being called.
    pub subscription: Option<String>,
    /// The throttling tier of that subscription or application.
    pub tier: Option<String>,
    /// The end user on whose behalf the application calls, if any.
    pub user: Option<String>,
    /// Scopes granted to the caller.
    pub scopes: Vec<String>,
    /// The APIs the credential may call (`name@version` → subscription tier), when it says.
    pub subscriptions: Option<Arc<BTreeMap<String, String>>>,
}

impl Identity {
    /// The identity for a call to API `api@version`: with the credential's subscription to
    /// it and that subscription's tier, when the credential lists its subscriptions. A
    /// credential that lists them but not this API gets no subscription.
    pub fn for_api(&self, api: &str, version: &str) -> Identity {
        let mut identity = self.clone();
        if let Some(subscription) = self.subscription_to(api, version) {
            identity.tier = subscription.as_ref().map(|(_, tier)| (*tier).to_owned()).or(identity.tier);
            identity.subscription = subscription.map(|(key, _)| key);
        }
        identity
    }

    /// For a credential that lists its subscriptions, its subscription to `api@version`
    /// (the key and the tier), or `Some(None)` when it is not subscribed; `None` when the
    /// credential lists none.
    pub fn subscription_to(&self, api: &str, version: &str) -> Option<Option<(String, &str)>> {
        let subscriptions = self.subscriptions.as_ref()?;
        let key = format!("{api}@{version}");
        Some(subscriptions.get(&key).map(|tier| tier.as_str()).map(|tier| (key, tier)))
    }
}

/// A JWT whose signature and registered claims have been verified (the WIT `verified-token`).
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    /// `iss`.
    pub issuer: String,
    /// `sub`, if present.
    pub subject: Option<String>,
    /// `exp`, seconds since the Unix epoch.
    pub expires_at: u64,
    /// The caller, mapped from the claims by the issuer's [`environment::ClaimMapping`].
    pub identity: Identity,
    /// The whole payload as JSON, for policies that read custom claims.
    pub claims: String,
    /// `jti`, if present (what revocation goes by).
    pub jti: Option<String>,
    /// `iat`, seconds since the Unix epoch, if present (what an application's cut-off goes by).
    pub issued_at: Option<u64>,
}

/// Why a credential was refused. The texts are safe to log: they never contain the credential
/// nor any value copied from it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The API key is not known, the token is not a well-formed JWT, or no provider knows
    /// an opaque token.
    #[error("unknown or malformed credential")]
    Unknown,
    /// The signature does not verify, or the algorithm is not allowed for the key.
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// `exp` is in the past (beyond the issuer's leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the issuer's leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// A required claim is missing or malformed, or `iss` / `aud` do not match.
    #[error("invalid claims: {0}")]
    InvalidClaims(String),
    /// The credential was revoked.
    #[error("credential revoked")]
    Revoked,
}

/// Total weight (bytes of token and claims, plus a fixed overhead per entry) the token cache holds.
const TOKEN_CACHE_BYTES: u64 = 32 * 1024 * 1024;
/// The number of tokens the cache is sized for.
const TOKEN_CACHE_ITEMS: usize = 10_000;
/// Bookkeeping counted for each cached token besides its text.
const TOKEN_CACHE_OVERHEAD: u64 = 256;

/// The API keys and JWT issuers of one configuration snapshot. `Send + Sync`; share it in an `Arc`.
pub struct KeyStore {
    api_keys: api_key::ApiKeys,
    /// Client certificates, by the sha256 of their DER.
    client_certificates: std::collections::HashMap<[u8; 32], Identity>,
    issuers: jwt::Issuers,
    /// Replaced whole when only revocations change (see [`KeyStore::set_revocations`]).
    revocations: ArcSwap<Revocations>,
    tokens: Cache<Box<str>, CachedToken, TokenWeighter>,
}

/// Credentials refused before they expire.
#[derive(Default)]
struct Revocations {
    /// Tokens, by `jti`.
    tokens: std::collections::HashSet<String>,
    /// Application → the first second a token of it is accepted again.
    before: std::collections::HashMap<String, u64>,
    /// API keys, by digest.
    api_keys: std::collections::HashSet<[u8; 32]>,
}

impl Revocations {
    /// Those of an environment; a malformed digest (reported by `snapshot::validate`) is
    /// left out.
    fn of(config: &Environment) -> Self {
        let now = jsonwebtoken::get_current_timestamp();
        Self {
            tokens: config.revoked_tokens.iter().filter(|r| r.expires_at >= now).map(|r| r.jti.clone()).collect(),
            before: config.revoked_before.iter().map(|(application, &second)| (application.clone(), second)).collect(),
            api_keys: config.revoked_api_keys.iter().filter_map(|hex| crate::contract::hex::decode_sha256(hex)).collect(),
        }
    }
}

/// A verified token and the last second (Unix time) at which it is still accepted.
#[derive(Clone)]
struct CachedToken {
    verified: Arc<VerifiedToken>,
    valid_until: u64,
}

#[derive(Clone)]
struct TokenWeighter;

impl Weighter<Box<str>, CachedToken> for TokenWeighter {
    fn weight(&self, token: &Box<str>, cached: &CachedToken) -> u64 {
        token.len() as u64 + cached.verified.claims.len() as u64 + TOKEN_CACHE_OVERHEAD
    }
}

impl KeyStore {
    /// Build the store from the configuration's consumers and issuers; relative key files are
    /// read from `base_dir`. Every unusable key, file or setting is reported, located by its
    /// path in the configuration. Problems that `snapshot::validate` already reports (such as
    /// a malformed `api_key_hashes` entry) are not repeated: such entries are left out, which
    /// only ever refuses more credentials.
    pub fn from_config(
        consumers: &[environment::Consumer],
        issuers: &[environment::JwtIssuer],
        base_dir: &Path,
    ) -> Result<KeyStore, Vec<Problem>> {
        Self::build(consumers, issuers, None, Revocations::default(), base_dir, None)
    }

    /// The store of a whole gateway configuration: [`Self::from_config`] plus its HMAC key
    /// for API-key digests, its revoked tokens, its applications' cut-offs and the OpenID
    /// providers it keeps up with (from `providers`).
    pub fn for_gateway(config: &Environment, base_dir: &Path, providers: &Providers) -> Result<KeyStore, Vec<Problem>> {
        let secret = config.api_key_hmac_secret.as_deref().and_then(crate::contract::hex::decode);
        Self::build(&config.consumers, &config.jwt_issuers, secret.as_deref(), Revocations::of(config), base_dir, Some(providers))
    }

    fn build(
        consumers: &[environment::Consumer],
        issuers: &[environment::JwtIssuer],
        hmac_secret: Option<&[u8]>,
        revocations: Revocations,
        base_dir: &Path,
        providers: Option<&Providers>,
    ) -> Result<KeyStore, Vec<Problem>> {
        let mut problems = Vec::new();
        let api_keys = api_key::ApiKeys::load(consumers, hmac_secret, &mut problems);
        let client_certificates =
            consumers::by_digest(consumers, "client-certificate", "client certificate", &mut problems, |i, consumer| {
                let at = |j| format!("consumers[{i}].client_certificates[{j}]");
                consumer.client_certificates.iter().enumerate().map(|(j, hex)| (at(j), crate::contract::hex::decode_sha256(hex))).collect()
            });
        let issuers = jwt::Issuers::new(issuer::load(issuers, base_dir, providers, &mut problems));
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(KeyStore {
            api_keys,
            client_certificates,
            issuers,
            revocations: ArcSwap::from_pointee(revocations),
            tokens: Cache::with_weighter(TOKEN_CACHE_ITEMS, TOKEN_CACHE_BYTES, TokenWeighter),
        })
    }

    /// Take the revocations of `config`, an environment that differs from the one this
    /// store was built from in its revocations only; requests checked after this see them.
    pub(crate) fn set_revocations(&self, config: &Environment) {
        self.revocations.store(Arc::new(Revocations::of(config)));
    }

    /// The identity of the consumer holding `key`.
    pub fn lookup_api_key(&self, key: &str) -> Result<Identity, KeyError> {
        let digest = self.api_keys.digest(key);
        let revocations = self.revocations.load();
        if !revocations.api_keys.is_empty() && revocations.api_keys.contains(&digest) {
            return Err(KeyError::Unknown);
        }
        self.api_keys.lookup(&digest)
    }

    /// The identity of the consumer that registered the client certificate whose DER has
    /// this sha256 (hex).
    pub fn lookup_client_certificate(&self, sha256: &str) -> Result<Identity, KeyError> {
        let digest = crate::contract::hex::decode_sha256(sha256).ok_or(KeyError::Unknown)?;
        self.client_certificates.get(&digest).cloned().ok_or(KeyError::Unknown)
    }

    /// Verify a JWT (compact serialisation, without `Bearer `): signature with the issuer's
    /// keys and algorithm allow-list, then `iss`, `aud`, `exp` and `nbf`. Nothing is ever
    /// fetched from a URL the token names. Verified tokens are cached until they expire. A
    /// token that is not a JWT is introspected at the OpenID providers configured to.
    pub fn verify_jwt(&self, token: &str) -> Result<Arc<VerifiedToken>, KeyError> {
        self.verify_jwt_at(token, jsonwebtoken::get_current_timestamp())
    }

    /// [`Self::verify_jwt`] with the clock of the cache check given (Unix seconds); a fresh
    /// verification always uses the real clock.
    fn verify_jwt_at(&self, token: &str, now: u64) -> Result<Arc<VerifiedToken>, KeyError> {
        // Only JWTs are cached here, so a hit is one (the shape is checked on a miss only).
        if let Some(cached) = self.tokens.get(token) {
            if now > cached.valid_until {
                self.tokens.remove_if(token, |entry| Arc::ptr_eq(&entry.verified, &cached.verified));
                return Err(KeyError::Expired);
            }
            return self.admit(cached.verified);
        }
        if !jwt::is_jwt(token) {
            // Not cached here: the provider's answers are, for their own time.
            return self.issuers.introspect(token, now).map(Arc::new).and_then(|verified| self.admit(verified));
        }
        let (verified, valid_until) = self.issuers.verify(token, now)?;
        let verified = Arc::new(verified);
        self.tokens.insert(token.into(), CachedToken { verified: Arc::clone(&verified), valid_until });
        self.admit(verified)
    }

    /// The last check of every accepted token, cached or fresh: not revoked by its `jti`,
    /// nor issued to an application before its cut-off (a token without `iat` is then
    /// refused too).
    fn admit(&self, verified: Arc<VerifiedToken>) -> Result<Arc<VerifiedToken>, KeyError> {
        let revocations = self.revocations.load();
        if verified.jti.as_ref().is_some_and(|jti| revocations.tokens.contains(jti)) {
            return Err(KeyError::Revoked);
        }
        if let Some(application) = &verified.identity.application
            && let Some(&cutoff) = revocations.before.get(application)
            && verified.issued_at.is_none_or(|issued| issued < cutoff)
        {
            return Err(KeyError::Revoked);
        }
        Ok(verified)
    }
}
