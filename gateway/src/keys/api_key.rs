//! API keys: only their sha256 digests are kept, mapped to the identity of their consumer.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::consumers::by_digest;
use super::{Identity, KeyError};
use crate::contract::Problem;
use crate::contract::environment::Consumer;
use crate::contract::hex::decode_sha256;

/// The API keys of every consumer, by digest.
pub(super) struct ApiKeys {
    by_digest: HashMap<[u8; 32], Identity>,
    hmac_secret: Option<Vec<u8>>,
}

impl ApiKeys {
    /// Digest the consumers' plain keys and take their hex digests; a key given to two
    /// consumers is a problem.
    pub(super) fn load(consumers: &[Consumer], hmac_secret: Option<&[u8]>, problems: &mut Vec<Problem>) -> ApiKeys {
        let by_digest = by_digest(consumers, "api-key", "API key", problems, |i, consumer| {
            let plain = consumer
                .api_keys
                .iter()
                .enumerate()
                .map(|(j, key)| (format!("consumers[{i}].api_keys[{j}]"), Some(digest(hmac_secret, key))));
            let hashed = consumer
                .api_key_hashes
                .iter()
                .enumerate()
                .map(|(j, hex)| (format!("consumers[{i}].api_key_hashes[{j}]"), decode_sha256(hex)));
            plain.chain(hashed).collect()
        });
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
