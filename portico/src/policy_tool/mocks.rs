//! The host services a policy under test talks to: API keys, JWTs, rate counters and the
//! clock, answered from the current case's fixture. One [`MockHost`] serves a harness; it is
//! reset before each case, and records the `counters.hit` calls the case made.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use portico_gateway::counters::{CounterStore, HitResult, LocalCounters};
use portico_gateway::keys::{self, VerifiedToken};
use portico_gateway::policy::{Clock, KeyService};

use super::fixtures::{self, Mocks};

/// 2024-01-01T00:00:00Z, the clock of fixtures that set none.
pub const DEFAULT_CLOCK_MS: u64 = 1_704_067_200_000;

/// One `counters.hit` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The key.
    pub key: String,
    /// The limit.
    pub limit: u64,
    /// The window, in milliseconds.
    pub window_ms: u64,
    /// The cost.
    pub cost: u32,
}

/// The mocked services. Locking is fine here: this is a test harness, not a gateway.
#[derive(Default)]
pub struct MockHost {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    clock_ms: u64,
    api_keys: HashMap<String, keys::Identity>,
    client_certificates: HashMap<String, keys::Identity>,
    jwts: HashMap<String, Result<Arc<VerifiedToken>, keys::KeyError>>,
    pinned: HashMap<String, fixtures::PinnedHit>,
    counters: LocalCounters,
    hits: Vec<Hit>,
}

impl MockHost {
    /// Answer from `mocks` from now on, with fresh counters and no hits recorded.
    pub fn reset(&self, mocks: &Mocks) {
        let clock_ms = mocks.clock_ms.unwrap_or(DEFAULT_CLOCK_MS);
        let api_keys = mocks.api_keys.iter().map(|(key, identity)| (key.clone(), identity_of(identity, "api-key"))).collect();
        let client_certificates = mocks
            .client_certificates
            .iter()
            .map(|(sha256, identity)| (sha256.to_ascii_lowercase(), identity_of(identity, "client-certificate")))
            .collect();
        let jwts = mocks.jwts.iter().map(|(token, jwt)| (token.clone(), verified(jwt, clock_ms))).collect();
        *self.state() = State {
            clock_ms,
            api_keys,
            client_certificates,
            jwts,
            pinned: mocks.counters.clone().into_iter().collect(),
            counters: LocalCounters::new(),
            hits: Vec::new(),
        };
    }

    /// The `counters.hit` calls since the last reset.
    pub fn hits(&self) -> Vec<Hit> {
        self.state().hits.clone()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The gateway's identity for a fixture's, authenticated by `method` unless it says.
pub fn identity_of(identity: &fixtures::Identity, method: &str) -> keys::Identity {
    keys::Identity {
        method: keys::method_name(identity.method.as_deref().unwrap_or(method)),
        application: identity.application.clone(),
        subscription: identity.subscription.clone(),
        tier: identity.tier.clone(),
        user: identity.user.clone(),
        scopes: identity.scopes.clone(),
        subscriptions: None,
    }
}

/// A fixture's identity from the gateway's, for comparing.
pub fn fixture_identity(identity: &keys::Identity) -> fixtures::Identity {
    fixtures::Identity {
        method: Some(identity.method.to_owned()),
        application: identity.application.clone(),
        subscription: identity.subscription.clone(),
        tier: identity.tier.clone(),
        user: identity.user.clone(),
        scopes: identity.scopes.clone(),
    }
}

fn verified(jwt: &fixtures::Jwt, clock_ms: u64) -> Result<Arc<VerifiedToken>, keys::KeyError> {
    if let Some(error) = &jwt.error {
        return Err(match error {
            fixtures::KeyError::Unknown => keys::KeyError::Unknown,
            fixtures::KeyError::BadSignature(why) => keys::KeyError::BadSignature(why.clone()),
            fixtures::KeyError::Expired => keys::KeyError::Expired,
            fixtures::KeyError::NotYetValid => keys::KeyError::NotYetValid,
            fixtures::KeyError::InvalidClaims(why) => keys::KeyError::InvalidClaims(why.clone()),
            fixtures::KeyError::Revoked => keys::KeyError::Revoked,
        });
    }
    Ok(Arc::new(VerifiedToken {
        issuer: jwt.issuer.clone().unwrap_or_else(|| "https://issuer.test".to_owned()),
        subject: jwt.subject.clone(),
        expires_at: jwt.expires_at.unwrap_or(clock_ms / 1000 + 3600),
        identity: identity_of(&jwt.identity, "jwt"),
        claims: jwt.claims.as_ref().map_or_else(|| "{}".to_owned(), ToString::to_string),
        jti: None,
        issued_at: None,
    }))
}

impl KeyService for MockHost {
    fn lookup_api_key(&self, key: &str) -> Result<keys::Identity, keys::KeyError> {
        self.state().api_keys.get(key).cloned().ok_or(keys::KeyError::Unknown)
    }

    fn lookup_client_certificate(&self, sha256: &str) -> Result<keys::Identity, keys::KeyError> {
        self.state().client_certificates.get(&sha256.to_ascii_lowercase()).cloned().ok_or(keys::KeyError::Unknown)
    }

    fn verify_jwt(&self, token: &str) -> Result<Arc<VerifiedToken>, keys::KeyError> {
        self.state().jwts.get(token).cloned().unwrap_or(Err(keys::KeyError::Unknown))
    }
}

impl CounterStore for MockHost {
    fn hit(&self, key: &str, limit: u64, window_ms: u64, cost: u32) -> HitResult {
        let mut state = self.state();
        state.hits.push(Hit { key: key.to_owned(), limit, window_ms, cost });
        if let Some(pinned) = state.pinned.get(key) {
            return HitResult {
                allowed: pinned.allowed,
                limit,
                remaining: pinned.remaining,
                reset_ms: pinned.reset_ms,
                retry_after_ms: pinned.retry_after_ms,
            };
        }
        let now = state.clock_ms;
        state.counters.hit_at(key, limit, window_ms, cost, now)
    }
}

impl Clock for MockHost {
    fn now_ms(&self) -> u64 {
        self.state().clock_ms
    }

    fn monotonic_ns(&self) -> u64 {
        self.state().clock_ms.saturating_mul(1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_from_the_fixture_and_records_hits() {
        let mocks: Mocks = serde_norway::from_str(
            "clock_ms: 5000\napi_keys: {k: {application: shop}}\njwts: {t: {identity: {user: ann}}, bad: {error: revoked}}\ncounters: {pinned: {allowed: false, retry_after_ms: 7}}\n",
        )
        .unwrap();
        let host = MockHost::default();
        host.reset(&mocks);
        assert_eq!(host.now_ms(), 5000);
        assert_eq!(host.lookup_api_key("k").unwrap().application.as_deref(), Some("shop"));
        assert_eq!(host.lookup_api_key("k").unwrap().method, "api-key");
        assert_eq!(host.lookup_api_key("nope"), Err(keys::KeyError::Unknown));
        let token = host.verify_jwt("t").unwrap();
        assert_eq!((token.identity.method, token.identity.user.as_deref(), token.expires_at), ("jwt", Some("ann"), 3605));
        assert_eq!(host.verify_jwt("bad").unwrap_err(), keys::KeyError::Revoked);
        assert!(!host.hit("pinned", 3, 1000, 1).allowed);
        assert!(host.hit("real", 1, 1000, 1).allowed);
        assert!(!host.hit("real", 1, 1000, 1).allowed);
        assert_eq!(host.hits().len(), 3);
        host.reset(&Mocks::default());
        assert!(host.hits().is_empty());
        assert!(host.hit("real", 1, 1000, 1).allowed, "counters start afresh each case");
    }
}
