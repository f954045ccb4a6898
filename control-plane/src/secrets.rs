//! Secrets at rest: the key manager's signing keys and the API-key HMAC secret are sealed
//! (ChaCha20-Poly1305) with a key the operator holds outside the database, so that a copy
//! of the database alone (a backup, a replica, a dump) gives away nothing that mints tokens
//! or tests guessed API keys. Each sealed value is bound to where it is stored (its
//! context), so values cannot be swapped between rows either.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use sqlx::AnyPool;

use crate::error::{ApiError, ApiResult};

/// What a sealed value starts with; a value without it was written before sealing.
const SEALED: &str = "sealed:v1:";
/// The `settings` row that tells whether a key is the one this database was sealed with.
const CHECK_SETTING: &str = "sealing_key_check";
const CHECK_CONTEXT: &str = "settings.sealing_key_check";
const CHECK_TEXT: &[u8] = b"portico";

/// The operator's key (32 bytes).
#[derive(Clone)]
pub struct SealingKey {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey(…)")
    }
}

impl SealingKey {
    /// A key from 64 hex digits; the reason when they are not.
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let bytes = portico_gateway::contract::hex::decode(text.trim())
            .filter(|bytes| bytes.len() == 32)
            .ok_or_else(|| "a sealing key is 64 hex digits (32 bytes)".to_owned())?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| "a sealing key is 32 bytes".to_owned())?;
        Ok(Self { cipher: ChaCha20Poly1305::new(&Key::from(key)) })
    }

    /// A new random key, as hex.
    pub fn generate_hex() -> String {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        portico_gateway::contract::hex::encode(&bytes)
    }

    /// The key in `file`, made (readable by its owner only) when there is no such file.
    pub fn from_file_or_new(file: &Path) -> anyhow::Result<Self> {
        if !file.exists() {
            write_private(file, &format!("{}\n", Self::generate_hex()))
                .map_err(|e| anyhow::anyhow!("cannot write a new sealing key to {}: {e}", file.display()))?;
        }
        let text = std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("cannot read the sealing key {}: {e}", file.display()))?;
        Self::from_hex(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
    }

    /// `plain` sealed for storage at `context` (e.g. `signing_keys.private_pem:<kid>`).
    pub fn seal(&self, plain: &[u8], context: &str) -> String {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(&Nonce::from(nonce), Payload { msg: plain, aad: context.as_bytes() })
            .expect("ChaCha20-Poly1305 seals any length a database holds");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        format!("{SEALED}{}", STANDARD.encode(bytes))
    }

    /// What `stored` at `context` holds: opened when sealed, as it is when written before
    /// sealing; an error when it was sealed with another key or for another place.
    pub fn open(&self, stored: &str, context: &str) -> ApiResult<Vec<u8>> {
        let Some(sealed) = stored.strip_prefix(SEALED) else { return Ok(stored.as_bytes().to_vec()) };
        let bytes = STANDARD.decode(sealed).ok().filter(|b| b.len() > 12);
        let opened = bytes.and_then(|bytes| {
            let (nonce, sealed) = bytes.split_at(12);
            let nonce: [u8; 12] = nonce.try_into().ok()?;
            self.cipher.decrypt(&Nonce::from(nonce), Payload { msg: sealed, aad: context.as_bytes() }).ok()
        });
        opened.ok_or_else(|| ApiError::Internal(format!("the sealed {context} does not open with this sealing key")))
    }

    /// Check that this is the key `pool`'s secrets were sealed with (the first key given to
    /// a database becomes its key), and seal what was written before sealing.
    pub async fn adopt(&self, pool: &AnyPool) -> anyhow::Result<()> {
        let check: Option<String> =
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1").bind(CHECK_SETTING).fetch_optional(pool).await?;
        match check {
            Some(check) => {
                if self.open(&check, CHECK_CONTEXT).ok().as_deref() != Some(CHECK_TEXT) {
                    anyhow::bail!(
                        "this database's secrets were sealed with another key: give every node the same sealing key \
                         (--secrets-key-file or PORTICO_SECRETS_KEY)"
                    );
                }
            }
            None => {
                sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                    .bind(CHECK_SETTING)
                    .bind(self.seal(CHECK_TEXT, CHECK_CONTEXT))
                    .execute(pool)
                    .await?;
                // Two nodes starting at once: the row that won is the one to match.
                return Box::pin(self.adopt(pool)).await;
            }
        }
        let keys: Vec<(String, String)> =
            sqlx::query_as("SELECT kid, private_pem FROM signing_keys WHERE private_pem <> '' AND private_pem NOT LIKE 'sealed:%'")
                .fetch_all(pool)
                .await?;
        for (kid, pem) in keys {
            sqlx::query("UPDATE signing_keys SET private_pem = $1 WHERE kid = $2 AND private_pem = $3")
                .bind(self.seal(pem.as_bytes(), &signing_key_context(&kid)))
                .bind(&kid)
                .bind(&pem)
                .execute(pool)
                .await?;
        }
        let secrets: Vec<(String, String)> = sqlx::query_as("SELECT key, value FROM settings WHERE key = $1 AND value NOT LIKE 'sealed:%'")
            .bind(HMAC_SETTING)
            .fetch_all(pool)
            .await?;
        for (key, value) in secrets {
            sqlx::query("UPDATE settings SET value = $1 WHERE key = $2 AND value = $3")
                .bind(self.seal(value.as_bytes(), HMAC_CONTEXT))
                .bind(&key)
                .bind(&value)
                .execute(pool)
                .await?;
        }
        Ok(())
    }
}

/// The `settings` row of the API-key HMAC secret, and its sealing context.
pub const HMAC_SETTING: &str = "api_key_hmac_secret";
/// The sealing context of the API-key HMAC secret.
pub const HMAC_CONTEXT: &str = "settings.api_key_hmac_secret";

/// The sealing context of a signing key's private key.
pub fn signing_key_context(kid: &str) -> String {
    format!("signing_keys.private_pem:{kid}")
}

/// Write `text` to `file`, readable by its owner only, and sync it.
pub fn write_private(file: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut out = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(file)?;
    out.write_all(text.as_bytes())?;
    out.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_at_their_place() {
        let key = SealingKey::from_hex(&SealingKey::generate_hex()).unwrap();
        let sealed = key.seal(b"secret", "here");
        assert!(sealed.starts_with(SEALED) && !sealed.contains("secret"));
        assert_eq!(key.open(&sealed, "here").unwrap(), b"secret");
        assert!(key.open(&sealed, "there").is_err(), "bound to its place");
        let other = SealingKey::from_hex(&SealingKey::generate_hex()).unwrap();
        assert!(other.open(&sealed, "here").is_err(), "bound to its key");
        assert_ne!(key.seal(b"secret", "here"), sealed, "a fresh nonce each time");
        assert_eq!(key.open("written before sealing", "here").unwrap(), b"written before sealing");
        for bad in ["", "abc", &"0".repeat(63), &"g".repeat(64)] {
            assert!(SealingKey::from_hex(bad).is_err(), "{bad}");
        }
    }
}
