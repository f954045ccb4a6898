//! The last-known-good cache: the last snapshot a gateway applied, with the modules it
//! runs, kept on disk so the gateway can start and serve while its control plane is away.
//!
//! `snapshot.json` holds the sha256 of the message on its first line and the message on
//! the rest; modules are `modules/<sha256>.wasm`. Every file is written to a temporary
//! name, synced and renamed, so a crash leaves the old file or the new one, never half of
//! one; a file changed behind the gateway's back is found by its digest and refused. The
//! snapshot holds secrets (the API-key HMAC secret, upstream client keys): the folder is made
//! for its owner only (0700) and every file is written readable by its owner only (0600).

use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::contract::environment::stored_module_path;
use crate::contract::fleet::EnvironmentMessage;
use crate::contract::hex;

const SNAPSHOT_FILE: &str = "snapshot.json";
const GATEWAY_ID_FILE: &str = "gateway-id";

/// A cache that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Reading failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A file's content is not what was written.
    #[error("{path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// A gateway's cache folder.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// Open (creating it if needed) the cache in `dir`.
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir.join("modules"))?;
        Ok(Self { dir: dir.to_owned() })
    }

    /// The folder: the base of the snapshots built from this cache (their modules are
    /// `modules/<sha256>.wasm` under it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The gateway's id: read from the cache, or made up and kept there, so that a
    /// restarted gateway is the same gateway to its control plane.
    pub fn gateway_id(&self) -> io::Result<String> {
        let path = self.dir.join(GATEWAY_ID_FILE);
        match std::fs::read_to_string(&path) {
            Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
            _ => {
                let id =
                    format!("gw-{}", &hex::sha256(format!("{:?}{}", std::time::SystemTime::now(), std::process::id()).as_bytes())[..12]);
                write_atomically(&path, id.as_bytes())?;
                Ok(id)
            }
        }
    }

    /// The cached snapshot, with its modules checked against their digests; `None` when
    /// nothing was cached yet.
    pub fn load(&self) -> Result<Option<EnvironmentMessage>, CacheError> {
        let path = self.dir.join(SNAPSHOT_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CacheError::Io { path, source }),
        };
        let corrupt = |reason: String| CacheError::Corrupt { path: path.clone(), reason };
        let newline = bytes.iter().position(|&b| b == b'\n').ok_or_else(|| corrupt("no digest line".into()))?;
        let (expected, body) = (String::from_utf8_lossy(&bytes[..newline]).into_owned(), &bytes[newline + 1..]);
        let actual = hex::sha256(body);
        if expected != actual {
            return Err(corrupt(format!("its content has sha256 {actual}, but {expected} was written")));
        }
        let message: EnvironmentMessage = serde_json::from_slice(body).map_err(|e| corrupt(format!("not a snapshot: {e}")))?;
        for (name, module) in &message.content.modules {
            let sha256 = module.sha256.as_deref().ok_or_else(|| corrupt(format!("module `{name}` has no sha256")))?;
            let file = self.dir.join(stored_module_path(sha256));
            match self.module_ok(sha256) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(CacheError::Corrupt { path: file, reason: format!("module `{name}` does not have its sha256 {sha256}") });
                }
                Err(source) => return Err(CacheError::Io { path: file, source }),
            }
        }
        Ok(Some(message))
    }

    /// Keep `message` as the last-known-good snapshot (its modules must be stored already).
    pub fn save(&self, message: &EnvironmentMessage) -> io::Result<()> {
        let body = serde_json::to_vec(message).map_err(io::Error::other)?;
        let mut file = hex::sha256(&body).into_bytes();
        file.push(b'\n');
        file.extend_from_slice(&body);
        write_atomically(&self.dir.join(SNAPSHOT_FILE), &file)
    }

    /// Whether the module with this digest is stored, intact.
    pub fn module_ok(&self, sha256: &str) -> io::Result<bool> {
        match std::fs::read(self.module_path(sha256)?) {
            Ok(bytes) => Ok(hex::sha256(&bytes).eq_ignore_ascii_case(sha256)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Store a module under its digest, after checking that the bytes have it.
    pub fn store_module(&self, sha256: &str, bytes: &[u8]) -> io::Result<()> {
        let path = self.module_path(sha256)?;
        let actual = hex::sha256(bytes);
        if !actual.eq_ignore_ascii_case(sha256) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("the module has sha256 {actual}, expected {sha256}")));
        }
        write_atomically(&path, bytes)
    }

    /// Where the module with this digest is kept. The digest comes from the control plane:
    /// it names a file only once it is known to be 64 hex digits.
    fn module_path(&self, sha256: &str) -> io::Result<PathBuf> {
        if !hex::is_sha256(sha256) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("`{sha256}` is not a sha256 (64 hex digits)")));
        }
        Ok(self.dir.join(stored_module_path(sha256)))
    }
}

/// Write to `path.tmp`, sync, rename over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let temporary = path.with_extension("tmp");
    // A leftover of a crash would keep its own mode.
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    use crate::contract::environment::{Environment, ModuleSource};
    use crate::contract::fleet::PROTOCOL_VERSION;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("portico-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn message_with_module(sha256: &str) -> EnvironmentMessage {
        let mut content = Environment::default();
        content.modules.insert("p@1".into(), ModuleSource { path: None, sha256: Some(sha256.into()) });
        EnvironmentMessage {
            protocol: PROTOCOL_VERSION,
            environment: "prod".into(),
            version: content.version(),
            content,
            traceparent: None,
        }
    }

    #[test]
    fn a_digest_that_is_not_hex_never_names_a_file() {
        let dir = temp_dir("traversal");
        let cache = Cache::open(&dir).unwrap();
        std::fs::write(dir.join("secret.wasm"), b"outside the module store").unwrap();
        for digest in ["../secret", "../../etc/passwd", "", &"a".repeat(63)] {
            let error = cache.module_ok(digest).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{digest}");
            assert!(error.to_string().contains("not a sha256"), "{error}");
            assert_eq!(cache.store_module(digest, b"x").unwrap_err().kind(), io::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn a_saved_snapshot_loads_back_and_a_changed_byte_is_refused() {
        let dir = temp_dir("roundtrip");
        let cache = Cache::open(&dir).unwrap();
        assert!(cache.load().unwrap().is_none());
        let module = b"not really wasm, only bytes";
        let sha256 = hex::sha256(module);
        cache.store_module(&sha256, module).unwrap();
        let message = message_with_module(&sha256);
        cache.save(&message).unwrap();
        assert_eq!(cache.load().unwrap().unwrap().version, message.version);
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&dir), mode(&dir.join(SNAPSHOT_FILE))), (0o700, 0o600), "the snapshot's secrets are its owner's only");

        let file = dir.join(SNAPSHOT_FILE);
        let mut bytes = std::fs::read(&file).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 1;
        std::fs::write(&file, &bytes).unwrap();
        let error = cache.load().unwrap_err().to_string();
        assert!(error.contains("snapshot.json is corrupt") && error.contains("sha256"), "{error}");

        cache.save(&message).unwrap();
        std::fs::write(dir.join(stored_module_path(&sha256)), b"tampered").unwrap();
        let error = cache.load().unwrap_err().to_string();
        assert!(error.contains(&format!("{sha256}.wasm is corrupt")), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_module_whose_bytes_do_not_match_its_digest_is_not_stored() {
        let dir = temp_dir("module");
        let cache = Cache::open(&dir).unwrap();
        let error = cache.store_module(&"0".repeat(64), b"bytes").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(!cache.module_ok(&"0".repeat(64)).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_gateway_id_survives_a_restart() {
        let dir = temp_dir("id");
        let first = Cache::open(&dir).unwrap().gateway_id().unwrap();
        assert_eq!(Cache::open(&dir).unwrap().gateway_id().unwrap(), first);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
