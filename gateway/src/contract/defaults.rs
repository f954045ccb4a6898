//! What a document may leave out, named once for both planes (the control plane builds
//! environments with these, `portico policy test` runs fixtures with them).

use std::time::Duration;

/// CPU time budget of one policy call.
pub const POLICY_TIMEOUT: Duration = Duration::from_millis(50);
/// Linear memory of one policy instance.
pub const POLICY_MEMORY_BYTES: u64 = 64 << 20;
/// The most `timeout` an attachment may ask for, unless the operator says otherwise. It
/// also bounds a policy's instantiation and `init`, which run on request threads when a
/// pool runs dry: a runaway guest holds a thread no longer than this.
pub const POLICY_TIMEOUT_CEILING: Duration = Duration::from_secs(1);
/// The most `memory` an attachment may ask for, unless the operator says otherwise.
pub const POLICY_MEMORY_CEILING: u64 = 256 << 20;
/// Networks no upstream may be in unless an environment allows them: loopback, "this
/// network" and the unspecified address (both reach the local host), link-local (where
/// cloud metadata services answer) and the metadata addresses outside it.
pub const DENIED_UPSTREAM_NETWORKS: &[&str] =
    &["127.0.0.0/8", "::1/128", "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32"];
/// Time allowed to connect to an upstream.
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for an upstream's response head.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);
/// Clock skew tolerated on a JWT's `exp` and `nbf`.
pub const JWT_LEEWAY: Duration = Duration::from_secs(30);
/// How often the keys of an OpenID provider are fetched again.
pub const PROVIDER_KEYS_REFRESH: Duration = Duration::from_secs(300);
/// The shortest time between two fetches of a provider's keys made for an unknown `kid`.
pub const PROVIDER_UNKNOWN_KID_INTERVAL: Duration = Duration::from_secs(30);
/// How long a provider's introspection answer is used.
pub const INTROSPECTION_CACHE_TTL: Duration = Duration::from_secs(60);
/// Largest request head.
pub const MAX_HEADER_BYTES: u64 = 32 << 10;
/// Most request headers.
pub const MAX_HEADERS: usize = 100;
/// Largest body accepted or buffered.
pub const MAX_BODY_BYTES: u64 = 10 << 20;
/// Time allowed to receive a request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed to receive a request body a policy buffers.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection idle this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections open at once per listener.
pub const MAX_CONNECTIONS: usize = 10_000;
