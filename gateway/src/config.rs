//! A gateway configuration file (DB-less mode): the process's [`Settings`] and its
//! [`Environment`] in one YAML (or JSON) document, checked as a whole when a snapshot is
//! built from it.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::contract::environment::Environment;
use crate::contract::{self, Problem};
use crate::settings::Settings;

/// Version of the configuration format; bumped on a breaking change.
pub const FORMAT_VERSION: u32 = 1;
/// The top-level keys that are the process's settings; every other one is the environment's.
const SETTINGS_KEYS: [&str; 8] = ["listeners", "admin", "limits", "compiled_cache", "drain_delay", "access_log", "traces", "analytics"];

/// A configuration that cannot be used, with every problem found.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file, when the configuration came from one.
    pub file: Option<PathBuf>,
    /// Every problem, in document order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.as_deref().map(Path::display);
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match &file {
                Some(file) => write!(f, "{file}: {problem}")?,
                None => write!(f, "{problem}")?,
            }
        }
        Ok(())
    }
}

impl ConfigError {
    fn single(file: &Path, path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { file: Some(file.to_owned()), problems: vec![Problem { path: path.into(), reason: reason.into() }] }
    }
}

/// A configuration file as read: the process's settings and the environment it runs.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    /// Where the gateway listens, and its limits.
    pub settings: Settings,
    /// What it runs.
    pub environment: Environment,
    /// The folder the file's relative paths start from: the file's own.
    pub base_dir: PathBuf,
    /// The file.
    pub file: PathBuf,
}

impl ConfigFile {
    /// The files whose change means the configuration changed: the file and its modules.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.file.clone()];
        files.extend(self.environment.modules.values().map(|m| m.file(&self.base_dir)));
        files
    }
}

/// Read and parse a YAML (or JSON) configuration file. What it says is checked when a
/// snapshot is built from it.
pub fn load(file: &Path) -> Result<ConfigFile, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|e| ConfigError::single(file, "(file)", format!("cannot read: {e}")))?;
    let (settings, environment) = parse(&text).map_err(|problem| ConfigError { file: Some(file.to_owned()), problems: vec![problem] })?;
    let base_dir = file.parent().map(Path::to_owned).unwrap_or_default();
    Ok(ConfigFile { settings, environment, base_dir, file: file.to_owned() })
}

/// Parse YAML text into its two parts; the problem names the path where parsing stopped.
pub fn parse(text: &str) -> Result<(Settings, Environment), Problem> {
    let document: serde_norway::Value =
        serde_norway::from_str(text).map_err(|e| Problem { path: "(document)".into(), reason: e.to_string() })?;
    let mut environment = match document {
        serde_norway::Value::Mapping(mapping) => mapping,
        serde_norway::Value::Null => serde_norway::Mapping::new(),
        _ => return Err(Problem { path: "(document)".into(), reason: "a configuration is a mapping of keys to values".into() }),
    };
    if let Some(version) = environment.remove("version")
        && version.as_u64() != Some(u64::from(FORMAT_VERSION))
    {
        let written = serde_norway::to_string(&version).unwrap_or_default();
        return Err(Problem {
            path: "version".into(),
            reason: format!("unsupported version {}, expected {FORMAT_VERSION}", written.trim()),
        });
    }
    let mut settings = serde_norway::Mapping::new();
    for key in SETTINGS_KEYS {
        if let Some(value) = environment.remove(key) {
            settings.insert(key.into(), value);
        }
    }
    let settings = contract::deserialize(serde_norway::Value::Mapping(settings))?;
    Ok((settings, contract::deserialize(serde_norway::Value::Mapping(environment))?))
}
