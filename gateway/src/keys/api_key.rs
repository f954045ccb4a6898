//! API keys: only their sha256 digests are kept, mapped to the identity of their consumer.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use sha2::{Digest, Sha256};

use super::{Identity, KeyError};
use crate::contract::Problem;
use crate::contract::environment::Consumer;

/// The API keys of every consumer, by digest.
pub(super) struct ApiKeys {
    by_digest: HashMap<[u8; 32], Identity>,
    hmac_secret: Option<Vec<u8>>,
}

impl ApiKeys {
    /// Digest the consumers' plain keys and take their hex digests; a key given to two
    /// consumers is a problem.
    pub(super) fn load(consumers: &[Consumer], hmac_secret: Option<&[u8]>, problems: &mut Vec<Problem>) -> ApiKeys {
        let mut by_digest = HashMap::new();
        let mut owner = HashMap::<[u8; 32], usize>::new();
        for (i, consumer) in consumers.iter().enumerate() {
            let identity = Identity {
                method: "api-key",
                application: Some(consumer.application.clone().unwrap_or_else(|| consumer.name.clone())),
                subscription: None,
                tier: consumer.tier.clone(),
                user: consumer.user.clone(),
                scopes: consumer.scopes.clone(),
                subscriptions: consumer.subscriptions.clone().map(std::sync::Arc::new),
            };
            let plain = consumer
                .api_keys
                .iter()
                .enumerate()
                .map(|(j, key)| (format!("consumers[{i}].api_keys[{j}]"), Some(digest(hmac_secret, key))));
            // A malformed digest is reported by `snapshot::validate`; it is skipped here.
            let hashed = consumer
                .api_key_hashes
                .iter()
                .enumerate()
                .map(|(j, hex)| (format!("consumers[{i}].api_key_hashes[{j}]"), parse_hex_digest(hex)));
            for (path, digest) in plain.chain(hashed) {
                let Some(digest) = digest else { continue };
                match owner.entry(digest) {
                    Entry::Vacant(slot) => {
                        slot.insert(i);
                        by_digest.insert(digest, identity.clone());
                    }
                    Entry::Occupied(slot) if *slot.get() != i => problems.push(Problem {
                        path,
                        reason: format!("this API key is also given to consumer `{}`", consumers[*slot.get()].name),
                    }),
                    Entry::Occupied(_) => {}
                }
            }
        }
        ApiKeys { by_digest, hmac_secret: hmac_secret.map(<[u8]>::to_vec) }
    }

    /// The digest `key` is known by.
    pub(super) fn digest(&self, key: &str) -> [u8; 32] {
        digest(self.hmac_secret.as_deref(), key)
    }

    /// The identity of the consumer holding the key of `digest`.
    pub(super) fn lookup(&self, digest: &[u8; 32]) -> Result<Identity, KeyError> {
        // Comparing digests leaks nothing useful through timing: finding a digest's prefix does
        // not help to find a key that produces it.
        self.by_digest.get(digest).cloned().ok_or(KeyError::Unknown)
    }
}

/// sha256 of the key, or HMAC-SHA256 under `secret`.
fn digest(secret: Option<&[u8]>, key: &str) -> [u8; 32] {
    match secret {
        Some(secret) => {
            use hmac::Mac;
            let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
            mac.update(key.as_bytes());
            mac.finalize().into_bytes().into()
        }
        None => Sha256::digest(key.as_bytes()).into(),
    }
}

/// A sha256 digest written as 64 hex digits (either case).
pub(super) fn parse_hex_digest(hex: &str) -> Option<[u8; 32]> {
    crate::contract::hex::decode(hex)?.try_into().ok()
}
