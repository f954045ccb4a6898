//! The contract between the planes: what a control plane and its gateways both read and
//! write. The [`environment`] document (what an environment runs, and where it keeps its
//! [`counters`]), the [`fleet`] protocol that carries it, the [`defaults`] of what
//! documents leave out, their [`units`], and [`hex`] digests. Nothing else in the gateway
//! is the control plane's business but the checks of [`crate::check`].

pub mod counters;
pub mod defaults;
pub mod environment;
pub mod fleet;
pub mod hex;
pub mod units;

use std::fmt;

use serde::de::{DeserializeOwned, Deserializer};

/// One thing wrong with a configuration, located by its path in the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path into the document, e.g. `apis[1].upstream.endpoints[0]`.
    pub path: String,
    /// What is wrong, in words.
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Deserialize a document, naming the path of the first problem in it (`(document)` when
/// the document itself is wrong).
pub(crate) fn deserialize<'de, T: DeserializeOwned>(document: impl Deserializer<'de>) -> Result<T, Problem> {
    serde_path_to_error::deserialize(document).map_err(|e| {
        let path = e.path().to_string();
        Problem { path: if path == "." { "(document)".to_owned() } else { path }, reason: e.into_inner().to_string() }
    })
}
