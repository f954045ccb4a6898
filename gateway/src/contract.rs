//! The contract between the planes: what a control plane and its gateways both read and
//! write. The [`environment`] document (what an environment runs), the [`fleet`] protocol
//! that carries it, the [`defaults`] of what documents leave out, their [`units`], and
//! [`hex`] digests. Nothing else in the gateway is the control plane's business but the
//! checks of [`crate::check`].

pub mod defaults;
pub mod environment;
pub mod fleet;
pub mod hex;
pub mod units;

use std::fmt;

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
