//! The gateway ↔ control plane protocol ([`PROTOCOL_VERSION`], `docs/fleet.md`): what both planes
//! send, the paths and headers, and the event-stream framing. A gateway opens the stream,
//! receives what its environment runs at once and again after every change, fetches the
//! modules it lacks by digest, builds its snapshot from it and acknowledges what it runs.
//! When only revocations changed, a gateway that has the previous version is sent those
//! changes alone.

use std::time::Duration;

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::environment::{Environment, RevokedToken};

/// The protocol version this build speaks; sent as [`PROTOCOL_HEADER`] on every request.
/// 3: acknowledgements carry `failed_apis`, and key-auth takes `operation_scopes`.
/// 4: revocations travel as [`RevocationsMessage`]s; environments carry `upstream_networks`.
/// 5: revoked API keys are revocations too (`revoked_api_keys`), refused by digest.
/// 6: consumers carry `client_certificates`, and key-auth takes `client_certificate`.
/// 7: environments carry `counters`, where their gateways keep rate counters.
/// 8: environment messages may carry the `traceparent` of the change that made them, and
/// gateways report usage analytics ([`ANALYTICS_PATH`]).
pub const PROTOCOL_VERSION: u32 = 8;

/// `GET`: the event stream (`text/event-stream`) of the token's environment.
pub const STREAM_PATH: &str = "/fleet/v1/stream";
/// `POST`: an [`Ack`].
pub const ACK_PATH: &str = "/fleet/v1/acks";
/// `GET {MODULES_PATH}/{sha256}`: a policy component's bytes.
pub const MODULES_PATH: &str = "/fleet/v1/modules";
/// `POST`: a [`UsageReport`].
pub const ANALYTICS_PATH: &str = "/fleet/v1/analytics";

/// Header: the protocol version.
pub const PROTOCOL_HEADER: &str = "portico-protocol";
/// Header: the gateway's id (stable across its restarts).
pub const GATEWAY_HEADER: &str = "portico-gateway";
/// Header: the environment the gateway was started for; it must be the token's.
pub const ENVIRONMENT_HEADER: &str = "portico-environment";

/// The event that carries an [`EnvironmentMessage`].
pub const ENVIRONMENT_EVENT: &str = "environment";
/// The event that carries a [`RevocationsMessage`].
pub const REVOCATIONS_EVENT: &str = "revocations";
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
    /// The W3C trace context of the change that made it (a deploy's request), when that
    /// was traced: a gateway that traces records applying it in the same trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// What changed when only an environment's revocations did (tokens revoked, expired
/// revocations forgotten, cut-offs): sent instead of the whole environment to a gateway
/// that was sent `base`, so that a revocation costs the fleet a few hundred bytes and no
/// rebuild, whatever the size of the environment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RevocationsMessage {
    /// [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// The environment's name.
    pub environment: String,
    /// The version this applies to.
    pub base: String,
    /// The version it makes: a gateway checks that applying it gives exactly this.
    pub version: String,
    /// Tokens revoked since `base`.
    #[serde(default)]
    pub revoked: Vec<RevokedToken>,
    /// Revocations no longer listed (their tokens expired), by `jti`.
    #[serde(default)]
    pub forgotten: Vec<String>,
    /// Every cut-off (one per application at most, so sent whole).
    #[serde(default)]
    pub revoked_before: BTreeMap<String, u64>,
    /// Every revoked API key's digest still listed (recent ones only, so sent whole).
    #[serde(default)]
    pub revoked_api_keys: Vec<String>,
}

impl RevocationsMessage {
    /// The message that turns `old` into `new`, when they are the same environment and
    /// differ in revocations only.
    pub fn between(old: &EnvironmentMessage, new: &EnvironmentMessage) -> Option<Self> {
        if old.environment != new.environment || old.protocol != new.protocol || old.version == new.version {
            return None;
        }
        if new.content.version_but_revocations() != old.content.version_but_revocations() {
            return None;
        }
        let before: HashSet<&str> = old.content.revoked_tokens.iter().map(|r| r.jti.as_str()).collect();
        let after: HashSet<&str> = new.content.revoked_tokens.iter().map(|r| r.jti.as_str()).collect();
        Some(Self {
            protocol: new.protocol,
            environment: new.environment.clone(),
            base: old.version.clone(),
            version: new.version.clone(),
            revoked: new.content.revoked_tokens.iter().filter(|r| !before.contains(r.jti.as_str())).cloned().collect(),
            forgotten: old.content.revoked_tokens.iter().filter(|r| !after.contains(r.jti.as_str())).map(|r| r.jti.clone()).collect(),
            revoked_before: new.content.revoked_before.clone(),
            revoked_api_keys: new.content.revoked_api_keys.clone(),
        })
    }

    /// Apply to `message`, which must be at `base`: the environment message at `version`,
    /// or why not.
    pub fn apply(&self, message: &EnvironmentMessage) -> Result<EnvironmentMessage, String> {
        if message.version != self.base || message.environment != self.environment {
            return Err(format!(
                "revocations for {} `{}`, this gateway runs {} `{}`",
                self.base, self.environment, message.version, message.environment
            ));
        }
        let mut content = message.content.clone();
        let forgotten: HashSet<&str> = self.forgotten.iter().map(String::as_str).collect();
        content.revoked_tokens.retain(|r| !forgotten.contains(r.jti.as_str()));
        content.revoked_tokens.extend(self.revoked.iter().cloned());
        content.revoked_tokens.sort_by(RevokedToken::canonical_order);
        content.revoked_before = self.revoked_before.clone();
        content.revoked_api_keys = self.revoked_api_keys.clone();
        let version = content.version();
        if version != self.version {
            return Err(format!("revocations applied to {} give {version}, not {}", self.base, self.version));
        }
        Ok(EnvironmentMessage { protocol: message.protocol, environment: message.environment.clone(), version, content, traceparent: None })
    }
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

/// The upper bounds, in milliseconds, of the latency buckets of usage analytics; a last
/// bucket holds what is slower than the largest.
pub const LATENCY_BOUNDS_MS: [u64; 12] = [1, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000];
/// The most rows a [`UsageReport`] carries.
pub const MAX_USAGE_ROWS: usize = 2_000;

/// What a gateway's routed requests were since its previous report. A control plane
/// applies a report once, whatever the number of times it is sent (by its `batch`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UsageReport {
    /// Unique among the gateway's reports.
    pub batch: String,
    /// Requests, by minute, API, operation, application and status class.
    pub rows: Vec<UsageRow>,
    /// Requests the gateway could not tally or keep since its previous report.
    #[serde(default)]
    pub dropped: u64,
}

/// Requests of one minute to one operation by one application, with one status class.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UsageRow {
    /// The minute's first second (Unix time, a multiple of 60).
    pub minute: u64,
    /// The API's name.
    pub api: String,
    /// The API's version.
    pub version: String,
    /// The operation, `METHOD /template`.
    pub operation: String,
    /// The calling application; none for requests without credentials (or refused before
    /// key-auth named one).
    #[serde(default)]
    pub application: Option<String>,
    /// The status class: 1 to 5 (`2` for 2xx).
    pub class: u8,
    /// How many.
    pub requests: u64,
    /// Their latencies' sum, in microseconds (routing to the response head).
    pub latency_us: u64,
    /// Their latencies by bucket ([`LATENCY_BOUNDS_MS`], then slower).
    pub latency: Vec<u64>,
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

    fn message(content: Environment) -> EnvironmentMessage {
        EnvironmentMessage {
            protocol: PROTOCOL_VERSION,
            environment: "default".into(),
            version: content.version(),
            content,
            traceparent: None,
        }
    }

    #[test]
    fn revocations_take_a_gateway_from_one_version_to_the_next_or_are_refused() {
        let revoked = |jti: &str, expires_at| RevokedToken { jti: jti.into(), expires_at };
        let mut content = Environment { revoked_tokens: vec![revoked("a", 10), revoked("b", 20)], ..Environment::default() };
        let old = message(content.clone());
        content.revoked_tokens = vec![revoked("c", 5), revoked("b", 20), revoked("d", 30)];
        content.revoked_tokens.sort_by(RevokedToken::canonical_order);
        content.revoked_before.insert("app-1".into(), 100);
        content.revoked_api_keys = vec!["ab".repeat(32)];
        let new = message(content.clone());

        let delta = RevocationsMessage::between(&old, &new).expect("only revocations changed");
        assert_eq!(delta.revoked.iter().map(|r| r.jti.as_str()).collect::<Vec<_>>(), ["c", "d"]);
        assert_eq!(delta.forgotten, ["a"]);
        assert_eq!(delta.revoked_api_keys, ["ab".repeat(32)]);
        let applied = delta.apply(&old).expect("applies to its base");
        assert_eq!((applied.version.as_str(), &applied.content), (new.version.as_str(), &new.content));
        assert!(delta.apply(&new).unwrap_err().contains("this gateway runs"), "not its base");

        // Anything else changed: the whole environment goes.
        content.upstream_networks.allow.push("10.0.0.0/8".into());
        assert!(RevocationsMessage::between(&new, &message(content)).is_none());
        // A delta that does not make its version is refused.
        let mut forged = delta.clone();
        forged.revoked.pop();
        assert!(forged.apply(&old).unwrap_err().contains("give"), "version checked");
    }

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
