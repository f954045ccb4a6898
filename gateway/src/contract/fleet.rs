//! The gateway ↔ control plane protocol, version 3 (`docs/fleet.md`): what both planes
//! send, the paths and headers, and the event-stream framing. A gateway opens the stream,
//! receives what its environment runs at once and again after every change, fetches the
//! modules it lacks by digest, builds its snapshot from it and acknowledges what it runs.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::environment::Environment;

/// The protocol version this build speaks; sent as [`PROTOCOL_HEADER`] on every request.
/// 3: acknowledgements carry `failed_apis`, and key-auth takes `operation_scopes`.
pub const PROTOCOL_VERSION: u32 = 3;

/// `GET`: the event stream (`text/event-stream`) of the token's environment.
pub const STREAM_PATH: &str = "/fleet/v1/stream";
/// `POST`: an [`Ack`].
pub const ACK_PATH: &str = "/fleet/v1/acks";
/// `GET {MODULES_PATH}/{sha256}`: a policy component's bytes.
pub const MODULES_PATH: &str = "/fleet/v1/modules";

/// Header: the protocol version.
pub const PROTOCOL_HEADER: &str = "portico-protocol";
/// Header: the gateway's id (stable across its restarts).
pub const GATEWAY_HEADER: &str = "portico-gateway";
/// Header: the environment the gateway was started for; it must be the token's.
pub const ENVIRONMENT_HEADER: &str = "portico-environment";

/// The event that carries an [`EnvironmentMessage`].
pub const ENVIRONMENT_EVENT: &str = "environment";
/// How often the control plane writes on an otherwise idle stream.
pub const KEEPALIVE: Duration = Duration::from_secs(5);
/// A stream silent this long is taken for dead and opened again.
pub const SILENCE: Duration = Duration::from_secs(15);
/// A gateway not seen for this long is reported unhealthy.
pub const HEALTHY_WITHIN: Duration = Duration::from_secs(20);

/// What an environment runs, as the stream carries it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentMessage {
    /// [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// The environment's name.
    pub environment: String,
    /// [`Environment::version`] of `content`.
    pub version: String,
    /// What it runs. Its modules have no `path`: each is fetched by `sha256`.
    pub content: Environment,
}

/// A gateway's report after a snapshot was offered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    /// The version the gateway serves now (none before its first snapshot).
    pub running: Option<String>,
    /// Set when the offered snapshot was refused: its version and why.
    #[serde(default)]
    pub refused: Option<Refusal>,
    /// The APIs of the running snapshot the gateway could not load: each answers 503
    /// while the rest of the environment is served.
    #[serde(default)]
    pub failed_apis: Vec<FailedApi>,
}

/// An API a gateway serves as unavailable, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FailedApi {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// What failed, by path in the environment (`apis[2].policies[0]: ...`).
    pub problems: Vec<String>,
}

/// A snapshot a gateway would not apply.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refusal {
    /// The refused version.
    pub version: String,
    /// Why.
    pub reason: String,
}

/// One server-sent event as written on the stream (`data` must be one line).
pub fn event(name: &str, data: &str) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// The largest event a gateway reads, data and unfinished line together: far above any
/// environment's message, and a bound on what a broken or hostile stream can make it hold.
pub const MAX_EVENT_BYTES: usize = 64 << 20;

/// Reads server-sent events from chunks as they arrive (comments and `id`/`retry` fields are
/// skipped; multi-line data is joined with `\n`).
#[derive(Debug)]
pub struct EventReader {
    pending: Vec<u8>,
    /// How much of `pending` is known to hold no line end.
    scanned: usize,
    name: String,
    data: String,
    limit: usize,
}

impl Default for EventReader {
    fn default() -> Self {
        Self::with_limit(MAX_EVENT_BYTES)
    }
}

impl EventReader {
    /// A reader that refuses events larger than `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        Self { pending: Vec::new(), scanned: 0, name: String::new(), data: String::new(), limit }
    }

    /// Feed a chunk; returns the events it completed, as (name, data), or why the stream
    /// cannot be read on (an event over the limit).
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<(String, String)>, String> {
        self.pending.extend_from_slice(chunk);
        let mut events = Vec::new();
        // Only bytes not scanned yet are searched, so a long line arriving in many chunks
        // costs its length once.
        while let Some(offset) = self.pending[self.scanned..].iter().position(|&b| b == b'\n') {
            let end = self.scanned + offset;
            self.scanned = 0;
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..line.len() - 1]);
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if line.is_empty() {
                if !self.data.is_empty() || !self.name.is_empty() {
                    let name = if self.name.is_empty() { "message".to_owned() } else { std::mem::take(&mut self.name) };
                    events.push((name, std::mem::take(&mut self.data)));
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').map(|(f, v)| (f, v.strip_prefix(' ').unwrap_or(v))).unwrap_or((line, ""));
            match field {
                "event" => self.name = value.to_owned(),
                "data" => {
                    if !self.data.is_empty() {
                        self.data.push('\n');
                    }
                    self.data.push_str(value);
                }
                _ => {}
            }
        }
        self.scanned = self.pending.len();
        if self.pending.len() + self.data.len() > self.limit {
            return Err(format!("an event of more than {} bytes", self.limit));
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_are_read_whole() {
        let mut reader = EventReader::default();
        let text = format!(": keep-alive\n\n{}{}", event("environment", "{\"a\":1}"), "data: one\r\ndata: two\r\n\r\n");
        let (first, second) = text.as_bytes().split_at(20);
        let mut events = reader.push(first).unwrap();
        events.extend(reader.push(second).unwrap());
        assert_eq!(events, vec![("environment".to_owned(), "{\"a\":1}".to_owned()), ("message".to_owned(), "one\ntwo".to_owned())]);
    }

    #[test]
    fn an_event_over_the_limit_is_refused_whole_lines_or_not() {
        let mut reader = EventReader::with_limit(1024);
        let line = "x".repeat(300);
        for _ in 0..3 {
            assert_eq!(reader.push(line.as_bytes()), Ok(Vec::new()), "no line end yet, under the limit");
        }
        assert!(reader.push(line.as_bytes()).unwrap_err().contains("more than 1024 bytes"));
        // Data lines add up too, even when each line is short.
        let mut reader = EventReader::with_limit(1024);
        let data = format!("data: {}\n", "y".repeat(200));
        let refused = (0..10).map(|_| reader.push(data.as_bytes())).find_map(Result::err);
        assert!(refused.is_some_and(|e| e.contains("more than 1024 bytes")));
    }
}
