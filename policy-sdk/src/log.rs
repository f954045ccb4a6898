//! Structured logging into the gateway's log, tagged by the host with the policy's name.
//!
//! Fields are `(key, value)` pairs: `log::warn("cannot set header", &[("header", name)])`.
//! Never log a credential.

pub use crate::bindings::portico::policy::log::{Level, write};

/// Writes a record at `level` with borrowed fields.
pub fn record(level: Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<(String, String)> = fields.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect();
    write(level, message, &fields);
}

/// Writes a [`Level::Trace`] record.
pub fn trace(message: &str, fields: &[(&str, &str)]) {
    record(Level::Trace, message, fields);
}

/// Writes a [`Level::Debug`] record.
pub fn debug(message: &str, fields: &[(&str, &str)]) {
    record(Level::Debug, message, fields);
}

/// Writes a [`Level::Info`] record.
pub fn info(message: &str, fields: &[(&str, &str)]) {
    record(Level::Info, message, fields);
}

/// Writes a [`Level::Warn`] record.
pub fn warn(message: &str, fields: &[(&str, &str)]) {
    record(Level::Warn, message, fields);
}

/// Writes a [`Level::Error`] record.
pub fn error(message: &str, fields: &[(&str, &str)]) {
    record(Level::Error, message, fields);
}
