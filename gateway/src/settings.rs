//! A gateway process's own settings: where it listens (with TLS), where its admin
//! endpoints are, the limits it puts on requests and where it keeps compiled policies. A
//! configuration file carries them next to its environment; a fleet gateway reads them from
//! its own settings file, since its environment comes from a control plane.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::contract::defaults;
use crate::contract::units::{ByteSize, Duration};
use crate::contract::{self, Problem};

/// The process's settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where the gateway accepts API traffic.
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// Request limits applied before routing.
    #[serde(default)]
    pub limits: Limits,
    /// The folder where compiled policies are kept, so that a restart, a rollback or a
    /// re-deploy does not compile them again (relative to the file's folder). A fleet or
    /// all-in-one gateway keeps them under its cache or data folder when this is left out;
    /// a gateway run from a configuration file keeps them only in memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compiled_cache: Option<PathBuf>,
    /// How long the gateway goes on serving after SIGTERM or SIGINT, with `/readyz`
    /// answering 503, before its listeners close: the time a load balancer needs to see it
    /// leave. A second signal ends it. None by default.
    #[serde(default, skip_serializing_if = "Duration::is_zero")]
    pub drain_delay: Duration,
    /// Where the access log goes (each listener says whether its requests are logged).
    #[serde(default, skip_serializing_if = "AccessLogConfig::is_default")]
    pub access_log: AccessLogConfig,
    /// Usage analytics: reported to the control plane by a fleet or all-in-one gateway
    /// (on when absent); written to the process's log by a gateway run from a file (only
    /// when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analytics: Option<AnalyticsConfig>,
    /// OpenTelemetry traces, exported over OTLP/HTTP; off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traces: Option<TracesConfig>,
}

impl Settings {
    /// One plain-HTTP listener at `listen`, the admin endpoints at `admin`, and a
    /// `drain_delay` at shutdown: the settings of a profile run with flags, not a file.
    pub fn plain(listen: &str, admin: Option<&str>, drain_delay: Duration) -> Self {
        Self {
            listeners: vec![ListenerConfig { address: listen.to_owned(), tls: None, access_log: true }],
            admin: admin.map(|address| AdminConfig { address: address.to_owned(), metrics: MetricsConfig::default() }),
            limits: Limits::default(),
            compiled_cache: None,
            drain_delay,
            access_log: AccessLogConfig::default(),
            analytics: None,
            traces: None,
        }
    }

    /// These settings with the access log going to `to` instead, when given (a flag on
    /// the command line: a relative file is the working folder's, not the settings file's).
    pub fn with_access_log(mut self, to: Option<AccessLogTarget>) -> Self {
        self.access_log.to = match to {
            Some(AccessLogTarget::File(path)) => AccessLogTarget::File(std::path::absolute(&path).unwrap_or(path)),
            Some(to) => to,
            None => return self,
        };
        self
    }

    /// The folder of compiled policies: `compiled_cache` (relative to `base_dir`), else
    /// `default`.
    pub fn compiled_dir(&self, base_dir: &Path, default: Option<PathBuf>) -> Option<PathBuf> {
        self.compiled_cache.as_ref().map(|dir| base_dir.join(dir)).or(default)
    }

    /// Read a settings file (YAML): `listeners`, `admin`, `limits`, `compiled_cache`,
    /// `drain_delay` and `access_log`, as in a configuration file. Every problem is named with the file and its path in it.
    pub fn load(file: &Path) -> Result<Self, String> {
        let located = |problems: &[Problem]| problems.iter().map(|p| format!("{}: {p}", file.display())).collect::<Vec<_>>().join("\n");
        let text = std::fs::read_to_string(file)
            .map_err(|e| located(&[Problem { path: "(file)".into(), reason: format!("cannot read: {e}") }]))?;
        let settings: Self = contract::deserialize(serde_norway::Deserializer::from_str(&text)).map_err(|mut p| {
            if p.path == "counters" {
                p.reason = "where rate counters live is the environment's to say, so that its gateways agree: set it on the \
                            control plane (PUT /api/v1/environments/{name}/counters)"
                    .into();
            }
            located(&[p])
        })?;
        let problems = settings.problems();
        if !problems.is_empty() {
            return Err(located(&problems));
        }
        Ok(settings)
    }

    /// Every problem of these settings, by path (empty when they are usable).
    pub fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut problem = |path: String, reason: String| problems.push(Problem { path, reason });
        for (i, listener) in self.listeners.iter().enumerate() {
            if listener.address.parse::<std::net::SocketAddr>().is_err() {
                problem(format!("listeners[{i}].address"), format!("`{}` is not an ip:port address", listener.address));
            }
            if let Some(tls) = &listener.tls
                && tls.certificates.is_empty()
            {
                problem(format!("listeners[{i}].tls.certificates"), "at least one certificate is needed".into());
            }
        }
        if let Some(admin) = &self.admin
            && admin.address.parse::<std::net::SocketAddr>().is_err()
        {
            problem("admin.address".into(), format!("`{}` is not an ip:port address", admin.address));
        }
        if self.access_log.queue == 0 {
            problem("access_log.queue".into(), "must be at least 1".into());
        }
        if self.access_log.to == AccessLogTarget::File(PathBuf::new()) {
            problem("access_log.to".into(), "name a file, or `stdout` or `off`".into());
        }
        if let Some(analytics) = &self.analytics
            && analytics.report_every.is_zero()
        {
            problem("analytics.report_every".into(), "must be more than zero".into());
        }
        if let Some(traces) = &self.traces {
            let scheme = traces.endpoint.parse::<http::Uri>().ok().and_then(|uri| uri.scheme_str().map(str::to_owned));
            if !matches!(scheme.as_deref(), Some("http" | "https")) {
                problem("traces.endpoint".into(), format!("`{}` is not an http:// or https:// URL", traces.endpoint));
            }
            if !(0.0..=1.0).contains(&traces.sampling_ratio) {
                problem("traces.sampling_ratio".into(), "must be from 0 to 1".into());
            }
        }
        if let Some(analytics) = &self.analytics
            && analytics.max_unsent_rows == 0
        {
            problem("analytics.max_unsent_rows".into(), "must be at least 1".into());
        }
        if self.limits.max_headers == 0 {
            problem("limits.max_headers".into(), "must be at least 1".into());
        }
        for (field, value) in [
            ("header_read_timeout", &self.limits.header_read_timeout),
            ("body_read_timeout", &self.limits.body_read_timeout),
            ("idle_timeout", &self.limits.idle_timeout),
        ] {
            if value.is_zero() {
                problem(format!("limits.{field}"), "must be more than zero".into());
            }
        }
        if self.limits.max_connections == 0 {
            problem("limits.max_connections".into(), "must be at least 1".into());
        }
        if let Err((field, reason)) = self.limits.policy_ceilings().check_self() {
            problem(format!("limits.max_policy_{field}"), reason);
        }
        problems
    }
}

/// One listening socket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `host:port`; port 0 picks a free port (it is logged).
    pub address: String,
    /// Serve HTTPS (HTTP/1.1 and HTTP/2 by ALPN); plain HTTP/1.1 and h2c when absent.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Whether this listener's requests are written to the access log (when the process
    /// has one). On by default.
    #[serde(default = "logged", skip_serializing_if = "Clone::clone")]
    pub access_log: bool,
}

fn logged() -> bool {
    true
}

/// Where access-log lines go, and how many may wait for the thread that writes them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogConfig {
    /// `stdout` (the default), `off`, or a file the lines are appended to (relative to the
    /// settings file's folder).
    pub to: AccessLogTarget,
    /// Requests that may wait for the thread that writes their lines and tallies their
    /// usage analytics (the queue is allocated whole, about 200 bytes a request); under a
    /// load it cannot keep up with, further requests' records are dropped (and counted in
    /// `portico_access_log_dropped_total`) rather than slowing requests down.
    pub queue: usize,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        Self { to: AccessLogTarget::Stdout, queue: 8_192 }
    }
}

impl AccessLogConfig {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Usage analytics: whether the gateway tallies its requests, how often it reports them,
/// and how much it keeps while the control plane is away.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    /// On by default.
    pub enabled: bool,
    /// How often tallies are sent (`10s` by default).
    pub report_every: Duration,
    /// Rows (minute × operation × application × status class) kept while the control
    /// plane does not take them; past this, new rows are dropped and their requests
    /// counted, and the count is reported when it can be.
    pub max_unsent_rows: usize,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self { enabled: true, report_every: Duration(std::time::Duration::from_secs(10)), max_unsent_rows: 100_000 }
    }
}

/// Where spans go and which traces are recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TracesConfig {
    /// The collector's OTLP/HTTP traces endpoint (`http://127.0.0.1:4318/v1/traces`; an
    /// `https://` one is verified against the system's roots).
    pub endpoint: String,
    /// The share of new traces recorded, from 0 to 1 (`0.01` by default); a trace the
    /// client started is recorded when its `traceparent` says it is sampled.
    #[serde(default = "default_sampling_ratio")]
    pub sampling_ratio: f64,
    /// Resource attributes of the spans: `service.name` (`portico-gateway` by default),
    /// `deployment.environment`, …
    #[serde(default)]
    pub resource: std::collections::BTreeMap<String, String>,
}

fn default_sampling_ratio() -> f64 {
    0.01
}

/// Where access-log lines go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum AccessLogTarget {
    /// The process's standard output, where its other logs go too.
    Stdout,
    /// Nowhere: no access log.
    Off,
    /// A file, appended to.
    File(PathBuf),
}

impl From<String> for AccessLogTarget {
    fn from(text: String) -> Self {
        match text.as_str() {
            "stdout" | "-" => Self::Stdout,
            "off" => Self::Off,
            _ => Self::File(PathBuf::from(text)),
        }
    }
}

impl From<AccessLogTarget> for String {
    fn from(target: AccessLogTarget) -> Self {
        match target {
            AccessLogTarget::Stdout => "stdout".into(),
            AccessLogTarget::Off => "off".into(),
            AccessLogTarget::File(path) => path.display().to_string(),
        }
    }
}

/// Certificates of a TLS listener; with several, the one matching SNI is chosen and the
/// first is the default.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chains with their private keys.
    pub certificates: Vec<CertificateConfig>,
    /// PEM CA certificates that clients' certificates must chain to (mutual TLS): a client
    /// without such a certificate is refused at the handshake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: clients without a certificate are let in too, and what they may do
    /// is decided per request (a control plane's fleet endpoints require one).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub client_certificate_optional: bool,
}

/// One certificate chain and its key, as PEM files.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// PEM file with the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Host names (SNI) this certificate is chosen for; the first certificate is also
    /// the default for any other name.
    #[serde(default)]
    pub server_names: Vec<String>,
}

/// The admin listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `host:port`; keep it on a private address.
    pub address: String,
    /// What `/metrics` shows beyond the defaults.
    #[serde(default, skip_serializing_if = "MetricsConfig::is_default")]
    pub metrics: MetricsConfig,
}

/// Options of `/metrics`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Count responses per calling application too, for at most this many (API,
    /// application) pairs; responses of the pairs past the cap are counted under the
    /// application `_other`. Off (0) by default: each pair is a series of its own.
    #[serde(default)]
    pub applications: usize,
}

impl MetricsConfig {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Limits that protect the gateway and the upstreams from oversized or slow requests.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request head (request line and headers); larger gets 431.
    pub max_header_bytes: ByteSize,
    /// Most request headers; more gets 431.
    pub max_headers: usize,
    /// Largest request or response body a policy may buffer, and largest request body
    /// accepted; larger gets 413.
    pub max_body_bytes: ByteSize,
    /// Time allowed to receive a request head, and for a new connection to begin its first
    /// request; slower connections are closed.
    pub header_read_timeout: Duration,
    /// Time allowed to receive a body a policy buffers; slower requests get 408.
    pub body_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed (an HTTP/1.1 one waits
    /// for its next head under `header_read_timeout` too, so the shorter of the two applies).
    pub idle_timeout: Duration,
    /// Connections open at once on each listener; more are closed as soon as accepted.
    pub max_connections: usize,
    /// The most `timeout` a policy attachment may ask for; also the budget of a policy's
    /// start-up. An API with an attachment over it is not loaded (it answers 503).
    pub max_policy_timeout: Duration,
    /// The most `memory` a policy attachment may ask for.
    pub max_policy_memory: ByteSize,
}

impl Limits {
    /// The ceilings on policy attachments.
    pub fn policy_ceilings(&self) -> PolicyCeilings {
        PolicyCeilings { timeout: self.max_policy_timeout.0, memory_bytes: self.max_policy_memory.0 }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: ByteSize(defaults::MAX_HEADER_BYTES),
            max_headers: defaults::MAX_HEADERS,
            max_body_bytes: ByteSize(defaults::MAX_BODY_BYTES),
            header_read_timeout: Duration(defaults::HEADER_READ_TIMEOUT),
            body_read_timeout: Duration(defaults::BODY_READ_TIMEOUT),
            idle_timeout: Duration(defaults::IDLE_TIMEOUT),
            max_connections: defaults::MAX_CONNECTIONS,
            max_policy_timeout: Duration(defaults::POLICY_TIMEOUT_CEILING),
            max_policy_memory: ByteSize(defaults::POLICY_MEMORY_CEILING),
        }
    }
}

/// The most an attachment may ask for: the operator's bound on each policy's CPU time and
/// memory, whatever a publisher writes. The control plane refuses an attachment over it;
/// a gateway does not load one (the API it belongs to answers 503).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyCeilings {
    /// The longest `timeout`; also the budget of instantiation and `init`.
    pub timeout: std::time::Duration,
    /// The largest `memory`, in bytes.
    pub memory_bytes: u64,
}

impl Default for PolicyCeilings {
    fn default() -> Self {
        Self { timeout: defaults::POLICY_TIMEOUT_CEILING, memory_bytes: defaults::POLICY_MEMORY_CEILING }
    }
}

impl PolicyCeilings {
    /// The smallest `memory` an attachment may ask for.
    pub const MIN_MEMORY_BYTES: u64 = 1 << 20;

    /// Whether these ceilings are usable; if not, the field (`timeout` or `memory`) and why.
    /// They must allow at least what an attachment gets by default, which the control
    /// plane's own policies (key-auth, throttle) run with.
    pub fn check_self(&self) -> Result<(), (&'static str, String)> {
        if self.timeout < defaults::POLICY_TIMEOUT {
            return Err(("timeout", format!("must be at least the default policy timeout, {}", Duration(defaults::POLICY_TIMEOUT))));
        }
        if self.memory_bytes < defaults::POLICY_MEMORY_BYTES {
            return Err(("memory", format!("must be at least the default policy memory, {}", ByteSize(defaults::POLICY_MEMORY_BYTES))));
        }
        Ok(())
    }

    /// Whether `attachment`'s `timeout` and `memory` are allowed; if not, the field
    /// (`timeout` or `memory`) and why.
    pub fn check(&self, attachment: &contract::environment::Attachment) -> Result<(), (&'static str, String)> {
        if attachment.timeout.is_zero() {
            return Err(("timeout", "must be more than zero".into()));
        }
        if attachment.timeout.0 > self.timeout {
            let ceiling = Duration(self.timeout);
            return Err(("timeout", format!("{} is over the ceiling of {ceiling} this platform allows", attachment.timeout)));
        }
        if attachment.memory.0 < Self::MIN_MEMORY_BYTES {
            return Err(("memory", "must be at least 1MiB".into()));
        }
        if attachment.memory.0 > self.memory_bytes {
            let ceiling = ByteSize(self.memory_bytes);
            return Err(("memory", format!("{} is over the ceiling of {ceiling} this platform allows", attachment.memory)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{AccessLogTarget, Settings};

    fn load(yaml: &str) -> Result<Settings, String> {
        static FILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let file = std::env::temp_dir().join(format!("portico-settings-{}-{n}.yaml", std::process::id()));
        std::fs::write(&file, yaml).unwrap();
        let loaded = Settings::load(&file);
        std::fs::remove_file(&file).unwrap();
        loaded
    }

    #[test]
    fn the_access_log_goes_where_it_is_told_and_bad_values_are_named() {
        let default = load("listeners: [{address: '127.0.0.1:0'}]\n").unwrap();
        assert_eq!(
            (&default.access_log.to, default.access_log.queue, default.listeners[0].access_log),
            (&AccessLogTarget::Stdout, 8_192, true)
        );
        let told =
            load("access_log: {to: logs/access.log, queue: 10}\nlisteners: [{address: '127.0.0.1:0', access_log: false}]\n").unwrap();
        assert_eq!((&told.access_log.to, told.access_log.queue), (&AccessLogTarget::File("logs/access.log".into()), 10));
        assert!(!told.listeners[0].access_log);
        assert_eq!(load("access_log: {to: \"off\"}\n").unwrap().access_log.to, AccessLogTarget::Off);
        let error = load("access_log: {to: '', queue: 0}\n").unwrap_err();
        assert!(error.contains("access_log.queue: must be at least 1") && error.contains("access_log.to: name a file"), "{error}");
        let error = load("access_log: {path: x}\n").unwrap_err();
        assert!(error.contains("access_log") && error.contains("path"), "{error}");
    }

    #[test]
    fn traces_and_analytics_are_checked_and_named() {
        let default = load("listeners: [{address: '127.0.0.1:0'}]\n").unwrap();
        assert!(default.traces.is_none() && default.analytics.is_none());
        let traces = load("traces: {endpoint: 'http://127.0.0.1:4318/v1/traces'}\n").unwrap().traces.unwrap();
        assert_eq!(traces.sampling_ratio, 0.01);
        let error = load("traces: {endpoint: 'collector:4318', sampling_ratio: 2}\nanalytics: {report_every: 0s, max_unsent_rows: 0}\n")
            .unwrap_err();
        for named in [
            "traces.endpoint: `collector:4318` is not an http",
            "traces.sampling_ratio: must be from 0 to 1",
            "analytics.report_every",
            "analytics.max_unsent_rows",
        ] {
            assert!(error.contains(named), "{named}: {error}");
        }
    }

    /// Where counters live is the environment's to say, so that its gateways agree.
    #[test]
    fn counters_in_a_gateways_own_settings_are_refused_with_where_they_go() {
        let error = load("listeners: [{address: '127.0.0.1:0'}]\ncounters: {redis: {url: 'redis://127.0.0.1/'}}\n").unwrap_err();
        assert!(error.contains("counters") && error.contains("/api/v1/environments/"), "{error}");
    }
}
