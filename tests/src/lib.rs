//! Harness for Portico's end-to-end tests: start the real `portico` binary on loopback
//! with a configuration, a mock upstream that echoes what it receives, an HTTP client,
//! test certificates and tokens, and the paths of the test policy components.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;

/// Components of the test policies, built by this package's build script.
pub mod policies {
    /// Panics, loops, grows or recurses, as configured.
    pub const MISBEHAVE: &str = env!("PORTICO_TEST_POLICY_MISBEHAVE");
    /// Stamps requests and responses with `portico-test-stamp-v1`.
    pub const STAMP_V1: &str = env!("PORTICO_TEST_POLICY_STAMP_V1");
    /// The same code built as `portico-test-stamp-v2`.
    pub const STAMP_V2: &str = env!("PORTICO_TEST_POLICY_STAMP_V2");
    /// Upper-cases request bodies and wraps response bodies.
    pub const MEDIATE: &str = env!("PORTICO_TEST_POLICY_MEDIATE");
    /// Does nothing: the cost of a call.
    pub const NOOP: &str = env!("PORTICO_TEST_POLICY_NOOP");
    /// A WASI command component: not a policy.
    pub const NOT_A_POLICY: &str = env!("PORTICO_TEST_POLICY_NOT_A_POLICY");
    /// Built against `portico:policy@0.2.0`, a world this gateway does not run.
    pub const FUTURE_WORLD: &str = env!("PORTICO_TEST_POLICY_FUTURE_WORLD");
    /// Built against `portico:policy@0.1.0` as released: later 0.1 gateways must run it.
    pub const CONTRACT_0_1_0: &str = env!("PORTICO_TEST_POLICY_CONTRACT_0_1_0");
    /// Exports `portico:policy/policy@0.1.0` with `init` only.
    pub const MISSING_EXPORT: &str = env!("PORTICO_TEST_POLICY_MISSING_EXPORT");
    /// Allows `x-allow: yes`, else 403 (the Rust third of the language benchmark).
    pub const ALLOW_HEADER: &str = env!("PORTICO_TEST_POLICY_ALLOW_HEADER");
}

/// The `portico` binary under test: this package's, which cargo builds next to the test
/// executables (`target/<profile>/portico`, the tests running from `target/<profile>/deps`).
pub fn portico_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    profile_dir.join("portico")
}

/// The cargo target folder the tests run from (`target/`): what the policy tests keep
/// between runs (guest toolchains, example builds) lives under it.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors().nth(3).expect("target/<profile>/deps/<test>").to_owned()
}

/// The workspace's root folder.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the workspace").to_owned()
}

/// A `python3` command whose path holds the pinned packages of `requirements` (relative to
/// the workspace), installed once under `target/test-python/<name>-<digest>` with pip (no
/// dependency resolution: the file pins every package).
pub fn python_with(requirements: &str) -> Command {
    use sha2::{Digest, Sha256};
    static INSTALLING: Mutex<()> = Mutex::new(());
    let file = workspace_root().join(requirements);
    let pinned = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let digest = Sha256::digest(&pinned);
    let name = file.parent().and_then(|dir| dir.file_name()).and_then(|n| n.to_str()).unwrap_or("packages");
    let dir = target_dir().join("test-python").join(format!("{name}-{:02x}{:02x}{:02x}{:02x}", digest[0], digest[1], digest[2], digest[3]));
    let _serial = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    if !dir.is_dir() {
        let staging = dir.with_extension(format!("installing-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        let output = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input", "--no-deps", "--target"])
            .arg(&staging)
            .arg("-r")
            .arg(&file)
            .env("PIP_ROOT_USER_ACTION", "ignore")
            .output()
            .expect("python3 with pip");
        assert!(output.status.success(), "pip install -r {}: {}", file.display(), String::from_utf8_lossy(&output.stderr));
        if std::fs::rename(&staging, &dir).is_err() {
            // Another test process finished first; its copy is as good.
            let _ = std::fs::remove_dir_all(&staging);
        }
    }
    let mut python = Command::new("python3");
    python.env("PYTHONPATH", &dir).env("PYTHONDONTWRITEBYTECODE", "1");
    python
}

/// Policy projects built with `portico policy build`'s own code and real toolchains, once
/// per test process, and one policy engine with mocked services to check and test them.
pub mod policy_builds {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};
    use std::sync::{Mutex, OnceLock};

    use portico::policy_tool::{BuildOptions, Built, Harness, Project, Toolchains, build_and_check};
    use portico_gateway::contract::defaults;

    /// The guest toolchains, installed on first use under `target/policy-toolchains`.
    pub fn toolchains() -> Toolchains {
        Toolchains::at(super::target_dir().join("policy-toolchains"))
    }

    /// Where the built components and the cargo builds of Rust projects go.
    pub fn output_dir() -> PathBuf {
        super::target_dir().join("policy-builds")
    }

    /// The harness every policy test of this process shares (compiled components are
    /// cached in it by digest: a Python policy is compiled once, not once per test).
    pub fn harness() -> &'static Harness {
        static HARNESS: OnceLock<Harness> = OnceLock::new();
        // The suite checks what policies do, not how fast: its machine is loaded (builds run
        // beside it), so calls get the operator's ceiling rather than a tight deadline.
        HARNESS.get_or_init(|| Harness::new().expect("policy engine").with_timeout(defaults::POLICY_TIMEOUT_CEILING))
    }

    type Slot = OnceLock<Result<Built, String>>;

    /// The project in `dir` (relative to the workspace), built and checked once per process;
    /// its component goes to `target/policy-builds/<name>.wasm`. Panics with the build's
    /// message when it fails.
    pub fn built(dir: &str) -> &'static Built {
        static BUILT: OnceLock<Mutex<HashMap<PathBuf, &'static Slot>>> = OnceLock::new();
        let path = super::workspace_root().join(dir);
        let slot: &'static Slot = {
            let mut slots = BUILT.get_or_init(Default::default).lock().unwrap();
            match slots.get(&path) {
                Some(slot) => slot,
                None => {
                    let slot = Box::leak(Box::new(Slot::default()));
                    slots.insert(path.clone(), slot);
                    slot
                }
            }
        };
        match slot.get_or_init(|| build_project(&path).map_err(|e| format!("{e:#}"))) {
            Ok(built) => built,
            Err(error) => panic!("building {dir} failed: {error}"),
        }
    }

    /// Build and check a project now (no caching), its component in `target/policy-builds`.
    pub fn build_project(dir: &Path) -> anyhow::Result<Built> {
        let project = Project::open(dir)?;
        let options = BuildOptions {
            toolchains: toolchains(),
            out: Some(output_dir().join(format!("{}.wasm", project.name))),
            cargo_target_dir: Some(output_dir().join("cargo")),
        };
        let started = std::time::Instant::now();
        let (built, _) = build_and_check(&project, &options, harness())?;
        println!(
            "built {} with {} in {:.1}s (checked in {:.1}s)",
            built.project.name,
            built.toolchain,
            built.elapsed.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
        Ok(built)
    }
}

/// How long a gateway may take to start (it compiles its policies first).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A `portico` process (any profile), killed when dropped.
pub struct PorticoProcess {
    child: Child,
    /// The API listeners, in configuration order.
    pub listeners: Vec<SocketAddr>,
    /// The admin listener, when configured.
    pub admin: Option<SocketAddr>,
    /// The control plane's listener, in the profiles that run one.
    pub control_plane: Option<SocketAddr>,
    /// The key manager's listener, in the `key-manager` profile.
    pub key_manager: Option<SocketAddr>,
    logs: Arc<Mutex<Vec<String>>>,
    /// The folder holding the configuration file.
    pub dir: tempfile::TempDir,
}

impl PorticoProcess {
    /// Write `config` to `portico.yaml` in a fresh folder and start a gateway on it.
    /// Addresses in the file should use port 0; the chosen ports are read from the log.
    pub fn start(config: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("portico.yaml"), config)?;
        Self::start_in(dir)
    }

    /// Start a gateway on `dir/portico.yaml`.
    pub fn start_in(dir: tempfile::TempDir) -> anyhow::Result<Self> {
        let config = dir.path().join("portico.yaml").display().to_string();
        Self::spawn(dir, &["serve", "--config", &config], &[])
    }

    /// Start `portico <args>` (a profile that runs a gateway) with extra environment
    /// variables, and wait until its first configuration (from a file) or snapshot (from a
    /// control plane) is applied.
    pub fn spawn(dir: tempfile::TempDir, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::spawn_until(dir, args, env, &["configuration applied", "snapshot applied"])
    }

    /// Start `portico <args>` and wait until one of the `ready` messages is logged and the
    /// profile's listeners are up (API listeners for profiles with a gateway, the control
    /// plane's for profiles with one).
    pub fn spawn_until(dir: tempfile::TempDir, args: &[&str], env: &[(&str, &str)], ready: &[&str]) -> anyhow::Result<Self> {
        // No access log, unless the test asks for one.
        let access_log = if args.contains(&"--access-log") { &[][..] } else { &["--access-log", "off"][..] };
        let mut child = Command::new(portico_binary())
            .args(["--log-format", "json", "--log", "info", "--workers", "2"])
            .args(access_log)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        for stream in
            [Box::new(child.stdout.take().expect("piped")) as Box<dyn std::io::Read + Send>, Box::new(child.stderr.take().expect("piped"))]
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let mut gateway = Self { child, listeners: Vec::new(), admin: None, control_plane: None, key_manager: None, logs, dir };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = gateway.child.try_wait()? {
                anyhow::bail!("gateway exited with {status} during start-up:\n{}", gateway.logs().join("\n"));
            }
            let events = gateway.events();
            if events.iter().any(|e| e["message"].as_str().is_some_and(|m| ready.contains(&m))) {
                gateway.listeners =
                    events.iter().filter(|e| e["message"] == "listening").filter_map(|e| e["address"].as_str()?.parse().ok()).collect();
                gateway.admin = events.iter().find(|e| e["message"] == "admin listening").and_then(|e| e["address"].as_str()?.parse().ok());
                gateway.control_plane =
                    events.iter().find(|e| e["message"] == "control plane listening").and_then(|e| e["address"].as_str()?.parse().ok());
                gateway.key_manager =
                    events.iter().find(|e| e["message"] == "key manager listening").and_then(|e| e["address"].as_str()?.parse().ok());
                let profile = args.first().copied().unwrap_or_default();
                let control_plane_ready = !["all-in-one", "control-plane"].contains(&profile) || gateway.control_plane.is_some();
                let key_manager_ready = profile != "key-manager" || gateway.key_manager.is_some();
                // Every listener's address is logged before `serving`.
                let listeners_ready =
                    ["control-plane", "key-manager"].contains(&profile) || events.iter().any(|e| e["message"] == "serving");
                if listeners_ready && control_plane_ready && key_manager_ready {
                    return Ok(gateway);
                }
            }
            if Instant::now() > deadline {
                anyhow::bail!("gateway did not start in {START_TIMEOUT:?}:\n{}", gateway.logs().join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The first API listener as a base URL.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listeners[0])
    }

    /// Everything the process printed so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// The JSON log records so far.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.logs().iter().filter_map(|line| serde_json::from_str(line).ok()).collect()
    }

    /// Wait until a log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.logs().iter().any(|l| l.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// How many log lines contain `needle`.
    pub fn count_logs(&self, needle: &str) -> usize {
        self.logs().iter().filter(|l| l.contains(needle)).count()
    }

    /// Replace the configuration file in one step (write aside, then rename).
    pub fn write_config(&self, config: &str) -> anyhow::Result<()> {
        let aside = self.dir.path().join("portico.yaml.next");
        std::fs::write(&aside, config)?;
        std::fs::rename(aside, self.dir.path().join("portico.yaml"))?;
        Ok(())
    }

    /// Send SIGHUP (reload).
    pub fn hangup(&self) {
        let _ = Command::new("kill").args(["-HUP", &self.child.id().to_string()]).status();
    }

    /// Send SIGTERM (shut down).
    pub fn terminate(&self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
    }

    /// Its resident memory (VmRSS), in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status.lines().find_map(|line| line.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `kill -9` the process and wait for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client of a control plane's management API.
pub struct ControlPlaneClient {
    /// The HTTP client.
    pub client: HttpClient,
    /// `http://host:port` or `https://host:port`.
    pub base: String,
}

impl ControlPlaneClient {
    /// A client of the control plane at `address`.
    pub fn new(address: SocketAddr) -> Self {
        Self { client: HttpClient::default(), base: format!("http://{address}") }
    }

    /// A client of the control plane serving HTTPS at `address` with the certificate `der`.
    pub fn https(address: SocketAddr, der: &[u8]) -> Self {
        Self { client: HttpClient::trusting(der), base: format!("https://{address}") }
    }

    /// Send a JSON request, with a bearer token if given.
    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<serde_json::Value>) -> Reply {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(bearer) = &bearer {
            headers.push(("authorization", bearer.as_str()));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        self.client.send(method, &format!("{}{path}", self.base), &headers, body).await.unwrap()
    }

    /// Send a JSON request that must succeed; returns the JSON answer (`Null` when empty).
    pub async fn ok(&self, method: Method, path: &str, token: Option<&str>, body: serde_json::Value) -> serde_json::Value {
        let reply = self.call(method, path, token, Some(body)).await;
        assert!(reply.status.is_success(), "{path}: {} {}", reply.status, reply.text());
        if reply.body.is_empty() { serde_json::Value::Null } else { reply.json() }
    }

    /// Log in; returns the session token.
    pub async fn login(&self, username: &str, password: &str) -> String {
        let session =
            self.ok(Method::POST, "/api/v1/auth/login", None, serde_json::json!({"username": username, "password": password})).await;
        session["token"].as_str().unwrap().to_owned()
    }

    /// As admin, let the `default` environment's APIs call upstreams on 127.0.0.1, where
    /// [`MockUpstream`]s listen (loopback upstreams are refused unless allowed).
    pub async fn allow_loopback_upstreams(&self, admin: &str) {
        let networks = serde_json::json!({"allow": ["127.0.0.1"]});
        self.ok(Method::PUT, "/api/v1/environments/default/upstream-networks", Some(admin), networks).await;
    }

    /// Create the API `definition`, publish it, take a revision and deploy it on `default`;
    /// returns the API's id.
    pub async fn deployed_api(&self, token: &str, definition: serde_json::Value) -> String {
        let api = self.ok(Method::POST, "/api/v1/apis", Some(token), definition).await;
        let api = api["id"].as_str().unwrap().to_owned();
        self.ok(Method::POST, &format!("/api/v1/apis/{api}/lifecycle"), Some(token), serde_json::json!({"action": "publish"})).await;
        self.redeploy(token, &api).await;
        api
    }

    /// Take a revision of `api` as it is now and deploy it on `default`.
    pub async fn redeploy(&self, token: &str, api: &str) {
        let revision = self.ok(Method::POST, &format!("/api/v1/apis/{api}/revisions"), Some(token), serde_json::json!({})).await;
        let deployment = serde_json::json!({"revision_id": revision["id"], "environments": ["default"]});
        self.ok(Method::POST, &format!("/api/v1/apis/{api}/deployments"), Some(token), deployment).await;
    }

    /// An OAuth2 client made for the application `app`: what the control plane answered,
    /// and its credentials as an `authorization` header (HTTP Basic).
    pub async fn oauth_client(&self, token: &str, app: &str) -> (serde_json::Value, String) {
        let oauth = self.ok(Method::POST, &format!("/api/v1/applications/{app}/oauth-client"), Some(token), serde_json::json!({})).await;
        let credentials = format!("{}:{}", oauth["client_id"].as_str().unwrap(), oauth["client_secret"].as_str().unwrap());
        let basic = format!("Basic {}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, credentials));
        (oauth, basic)
    }

    /// A new application named `name`, subscribed to `api` on the Unlimited tier, and an
    /// API key of it.
    pub async fn subscribed_key(&self, token: &str, name: &str, api: &str) -> ApiKey {
        self.subscribed_key_on(token, name, api, "Unlimited").await
    }

    /// [`Self::subscribed_key`] on the subscription tier `tier`.
    pub async fn subscribed_key_on(&self, token: &str, name: &str, api: &str, tier: &str) -> ApiKey {
        let app = self.ok(Method::POST, "/api/v1/applications", Some(token), serde_json::json!({"name": name})).await;
        let app = app["id"].as_str().unwrap().to_owned();
        self.ok(
            Method::POST,
            &format!("/api/v1/applications/{app}/subscriptions"),
            Some(token),
            serde_json::json!({"api_id": api, "tier": tier}),
        )
        .await;
        let key = self.ok(Method::POST, &format!("/api/v1/applications/{app}/api-keys"), Some(token), serde_json::json!({})).await;
        ApiKey { app, id: key["id"].as_str().unwrap().to_owned(), key: key["key"].as_str().unwrap().to_owned() }
    }
}

/// An application's API key, as [`ControlPlaneClient::subscribed_key`] made it.
pub struct ApiKey {
    /// The application's id.
    pub app: String,
    /// The key's id.
    pub id: String,
    /// The key itself.
    pub key: String,
}

/// Read from `stream` until the peer closes it (or `limit` passes); how long that took, and
/// what was read.
pub async fn until_closed(stream: &mut tokio::net::TcpStream, limit: Duration) -> (Option<Duration>, String) {
    use tokio::io::AsyncReadExt;
    let started = Instant::now();
    let mut read = Vec::new();
    let mut buffer = [0u8; 4096];
    while started.elapsed() < limit {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (Some(started.elapsed()), String::from_utf8_lossy(&read).into_owned()),
            Ok(Ok(n)) => read.extend_from_slice(&buffer[..n]),
            Err(_) => break,
        }
    }
    (None, String::from_utf8_lossy(&read).into_owned())
}

/// Poll `check` every 20 ms until it holds; panics after `limit`. Returns how long it took.
pub async fn eventually(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what} did not happen in {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

impl Drop for PorticoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `portico check-config FILE`; returns (success, stdout + stderr).
pub fn check_config(file: &Path) -> (bool, String) {
    let output = Command::new(portico_binary()).args(["--log", "error", "check-config"]).arg(file).output().expect("run portico");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// A mock upstream on loopback that answers every request with a JSON description of it
/// (`method`, `path`, `query`, `headers`, `body`), except paths ending in `/slow` (waits
/// 3 s first) or `/status/NNN` (answers NNN).
/// The line of a configuration file that lets its APIs call [`MockUpstream`]s: loopback
/// upstreams are refused unless an environment allows them.
pub const ALLOW_LOOPBACK_UPSTREAMS: &str = "upstream_networks: {allow: [127.0.0.1]}\n";

pub struct MockUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    scheme: &'static str,
    /// The path of every request it received, in order.
    received: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl MockUpstream {
    /// Start it on a free port of 127.0.0.1.
    pub async fn start() -> Self {
        Self::serve(None).await
    }

    /// Start it serving HTTPS (HTTP/1.1) with `certificate`.
    pub async fn start_tls(certificate: &TestCertificate) -> Self {
        Self::serve_tls(certificate, None).await
    }

    /// Start it serving HTTPS with `certificate`, to clients that present a certificate
    /// `client_ca` vouches for (mutual TLS) only.
    pub async fn start_tls_for_clients_of(certificate: &TestCertificate, client_ca: &TestCertificate) -> Self {
        Self::serve_tls(certificate, Some(client_ca)).await
    }

    async fn serve_tls(certificate: &TestCertificate, client_ca: Option<&TestCertificate>) -> Self {
        let chain = vec![rustls_pki_types::CertificateDer::from(certificate.der.clone())];
        let key = rustls_pki_types::pem::PemObject::from_pem_file(&certificate.key).expect("the test key");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder =
            rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().expect("TLS versions");
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(rustls_pki_types::CertificateDer::from(ca.der.clone())).expect("the client CA");
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .expect("a client verifier");
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder.with_single_cert(chain, key).expect("the test certificate");
        Self::serve(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock upstream");
        let addr = listener.local_addr().expect("local addr");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let received = Arc::new(Mutex::new(Vec::new()));
        let recorder = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (tls, recorder) = (tls.clone(), recorder.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        recorder.lock().unwrap().push(request.uri().path().to_owned());
                        echo(request)
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => drop(builder.serve_connection(TokioIo::new(stream), service).await),
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                drop(builder.serve_connection(TokioIo::new(stream), service).await);
                            }
                        }
                    }
                });
            }
        });
        Self { addr, scheme, received, task }
    }

    /// The path of every request it received so far, in order.
    pub fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }
}

/// A span as an OTLP receiver got it (ids in lower-case hex; the parent's empty for a root).
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// The `service.name` of its resource.
    pub service: String,
    /// Its name.
    pub name: String,
    /// `SERVER`, `CLIENT`, `INTERNAL`, …
    pub kind: String,
    /// Its trace.
    pub trace_id: String,
    /// Its id.
    pub span_id: String,
    /// Its parent's id.
    pub parent_span_id: String,
    /// Its attributes, values as text.
    pub attributes: BTreeMap<String, String>,
    /// Whether its status is an error.
    pub error: bool,
}

/// An OTLP/HTTP traces receiver (`POST /v1/traces`, protobuf) that keeps what it gets,
/// decoded with the protocol's own message types.
pub struct OtlpReceiver {
    /// Where it listens.
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    task: tokio::task::JoinHandle<()>,
}

impl OtlpReceiver {
    /// Start it on a free port of 127.0.0.1.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the OTLP receiver");
        let addr = listener.local_addr().expect("local addr");
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = spans.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let kept = kept.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let kept = kept.clone();
                        async move { Ok::<_, std::convert::Infallible>(Self::take(request, &kept).await) }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    drop(builder.serve_connection(TokioIo::new(stream), service).await);
                });
            }
        });
        Self { addr, spans, task }
    }

    async fn take(request: Request<Incoming>, kept: &Mutex<Vec<ReceivedSpan>>) -> Response<Full<Bytes>> {
        use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        use prost::Message;
        let answer = |status: StatusCode, body: Vec<u8>| {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            *response.status_mut() = status;
            response.headers_mut().insert("content-type", http::HeaderValue::from_static("application/x-protobuf"));
            response
        };
        let is_protobuf = request.headers().get("content-type").is_some_and(|v| v.as_bytes() == b"application/x-protobuf");
        if request.uri().path() != "/v1/traces" || request.method() != Method::POST || !is_protobuf {
            return answer(StatusCode::NOT_FOUND, Vec::new());
        }
        let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let Ok(export) = ExportTraceServiceRequest::decode(body) else {
            return answer(StatusCode::BAD_REQUEST, Vec::new());
        };
        let text = |value: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>| match value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(Value::StringValue(s)) => s.clone(),
            Some(Value::IntValue(i)) => i.to_string(),
            Some(Value::BoolValue(b)) => b.to_string(),
            Some(Value::DoubleValue(d)) => d.to_string(),
            other => format!("{other:?}"),
        };
        let mut spans = kept.lock().unwrap();
        for resource_spans in export.resource_spans {
            let resource = resource_spans.resource.map(|r| r.attributes).unwrap_or_default();
            let service = resource.iter().find(|kv| kv.key == "service.name").map(|kv| text(&kv.value)).unwrap_or_default();
            for span in resource_spans.scope_spans.into_iter().flat_map(|scope| scope.spans) {
                let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
                spans.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name.clone(),
                    kind: span.kind().as_str_name().trim_start_matches("SPAN_KIND_").to_owned(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: span.attributes.iter().map(|kv| (kv.key.clone(), text(&kv.value))).collect(),
                    error: span.status.as_ref().is_some_and(|s| s.code == 2),
                });
            }
        }
        answer(StatusCode::OK, ExportTraceServiceResponse::default().encode_to_vec())
    }

    /// Its traces endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    /// The spans received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap().clone()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let (head, body) = request.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let path = head.uri.path().to_owned();
    if path.ends_with("/slow") {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let status = path
        .rsplit_once("/status/")
        .map(|(_, code)| code)
        .and_then(|s| s.parse().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut headers = BTreeMap::new();
    for (name, value) in &head.headers {
        headers.entry(name.as_str().to_owned()).or_insert_with(Vec::new).push(value.to_str().unwrap_or("").to_owned());
    }
    let description = serde_json::json!({
        "method": head.method.as_str(),
        "path": path,
        "query": head.uri.query(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let mut response = Response::new(Full::new(Bytes::from(description.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert("content-type", "application/json".parse().unwrap());
    response.headers_mut().insert("x-upstream", "mock".parse().unwrap());
    Ok(response)
}

/// A response as the tests read it.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// What the mock upstream saw of header `name` (first value).
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name][0].as_str().map(str::to_owned)
    }
}

/// An HTTP client with a connection pool: plain HTTP, or HTTPS trusting one certificate.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Default for HttpClient {
    /// Plain HTTP only (no certificate is trusted).
    fn default() -> Self {
        Self::with_roots(rustls::RootCertStore::empty())
    }
}

impl HttpClient {
    /// A client that trusts the certificate `ca_der` (a test CA or a self-signed server).
    pub fn trusting(ca_der: &[u8]) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls_pki_types::CertificateDer::from(ca_der.to_vec())).expect("a certificate");
        Self::with_roots(roots)
    }

    fn with_roots(roots: rustls::RootCertStore) -> Self {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let connector = HttpsConnectorBuilder::new().with_tls_config(config).https_or_http().enable_http1().wrap_connector(http);
        // A connection idle in the pool for longer than a gateway waits for the next request
        // head (`header_read_timeout`, 10 s by default) may be closed by the gateway just as
        // a request is written on it: not reused past half that.
        let client =
            Client::builder(TokioExecutor::new()).pool_timer(TokioTimer::new()).pool_idle_timeout(Duration::from_secs(5)).build(connector);
        Self { client }
    }

    /// Send a request and read the whole response.
    pub async fn send(&self, method: Method, url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> anyhow::Result<Reply> {
        let mut request = Request::builder().method(method).uri(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self.client.request(request.body(Full::new(body.into()))?).await?;
        let (head, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply { status: head.status, headers: head.headers, body })
    }

    /// GET with headers.
    pub async fn get(&self, url: &str, headers: &[(&str, &str)]) -> anyhow::Result<Reply> {
        self.send(Method::GET, url, headers, Bytes::new()).await
    }
}

/// Legitimate traffic beside an attack: one client sending GETs one after another (every
/// 5 ms at most), each answer's status and time recorded, until stopped.
pub struct LegitimateLoad {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<LoadFigures>,
}

/// What [`LegitimateLoad`] saw.
#[derive(Debug)]
pub struct LoadFigures {
    /// Requests sent.
    pub requests: usize,
    /// Those not answered 200 (or not answered at all).
    pub failures: usize,
    /// Median time to the whole answer.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

impl std::fmt::Display for LoadFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} requests, {} failed, p50 {:?}, p99 {:?}", self.requests, self.failures, self.p50, self.p99)
    }
}

impl LegitimateLoad {
    /// Start sending GETs for `url`.
    pub fn start(url: String) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let client = HttpClient::default();
            let (mut times, mut failures) = (Vec::new(), 0);
            while !stopped.load(std::sync::atomic::Ordering::SeqCst) {
                let started = Instant::now();
                let ok = matches!(tokio::time::timeout(Duration::from_secs(5), client.get(&url, &[])).await, Ok(Ok(reply)) if reply.status == StatusCode::OK);
                times.push(started.elapsed());
                failures += usize::from(!ok);
                tokio::time::sleep(Duration::from_millis(5).saturating_sub(started.elapsed())).await;
            }
            times.sort();
            let at =
                |q: f64| times.get(((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1))).copied().unwrap_or_default();
            LoadFigures { requests: times.len(), failures, p50: at(0.5), p99: at(0.99) }
        });
        Self { stop, task }
    }

    /// Stop, and what it saw.
    pub async fn stop(self) -> LoadFigures {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.task.await.expect("the load task")
    }
}

/// `GET https://localhost{path}` at `addr`, trusting `ca_der`, offering `alpn`
/// (`h2` or `http/1.1`), with `headers`: the HTTP version spoken and the answer.
pub async fn tls_get(
    addr: SocketAddr,
    ca_der: &[u8],
    alpn: &[u8],
    path: &str,
    headers: &[(&str, &str)],
) -> (http::Version, (StatusCode, Bytes)) {
    use http_body_util::Empty;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pki_types::CertificateDer::from(ca_der.to_vec())).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector.connect(rustls_pki_types::ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    let mut request = http::Request::builder().uri(format!("https://localhost{path}")).header("host", "localhost");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Empty::<Bytes>::new()).unwrap();
    let response = if alpn == b"h2" {
        let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
        tokio::spawn(connection);
        sender.send_request(request).await.unwrap()
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(connection);
        sender.send_request(request).await.unwrap()
    };
    let version = response.version();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (version, (status, body))
}

/// Whether a TLS handshake with `addr` (as `localhost`) succeeds trusting only `ca_der`;
/// the reason when not.
pub async fn tls_handshake(addr: SocketAddr, ca_der: &[u8]) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pki_types::CertificateDer::from(ca_der.to_vec())).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.map(drop).map_err(|e| e.to_string())
}

/// `GET https://localhost{path}` over HTTP/1.1 at `addr`, trusting only `ca_der`, presenting
/// `client`'s certificate when given: the status, or why there is none.
pub async fn tls_request(addr: SocketAddr, ca_der: &[u8], client: Option<&TestCertificate>, path: &str) -> Result<StatusCode, String> {
    use http_body_util::Empty;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pki_types::CertificateDer::from(ca_der.to_vec())).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(client) => {
            let chain = vec![rustls_pki_types::CertificateDer::from(client.der.clone())];
            let key = rustls_pki_types::pem::PemObject::from_pem_file(&client.key).map_err(|e| e.to_string())?;
            builder.with_client_auth_cert(chain, key).map_err(|e| e.to_string())?
        }
    };
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = http::Request::builder().uri(path).header("host", "localhost").body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    sender.send_request(request).await.map(|response| response.status()).map_err(|e| e.to_string())
}

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM files.
pub struct TestCertificate {
    /// The certificate PEM file.
    pub cert: PathBuf,
    /// The private key PEM file.
    pub key: PathBuf,
    /// The certificate, DER, for a client's trust store.
    pub der: Vec<u8>,
}

impl TestCertificate {
    /// Generate one into `dir`.
    pub fn generate(dir: &Path) -> Self {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let certified = rcgen::generate_simple_self_signed(names).expect("generate certificate");
        let cert = dir.join("server.pem");
        let key = dir.join("server.key");
        std::fs::write(&cert, certified.cert.pem()).expect("write cert");
        std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
        Self { cert, key, der: certified.cert.der().to_vec() }
    }
}

/// An ES256 key pair for minting test tokens.
pub struct TestIssuer {
    /// The `iss` of its tokens.
    pub issuer: String,
    /// PEM private key (PKCS#8).
    pub private_pem: String,
    /// PEM public key (SubjectPublicKeyInfo).
    pub public_pem: String,
}

impl TestIssuer {
    /// A new key pair for `issuer`.
    pub fn new(issuer: &str) -> Self {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("generate key");
        Self { issuer: issuer.to_owned(), private_pem: key.serialize_pem(), public_pem: key.public_key_pem() }
    }

    /// Sign `claims` with ES256.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let key = jsonwebtoken::EncodingKey::from_ec_pem(self.private_pem.as_bytes()).expect("EC key");
        jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256), claims, &key).expect("sign")
    }

    /// Valid claims for `audience`, expiring in an hour.
    pub fn claims(&self, audience: &str) -> serde_json::Value {
        let now = unix_now();
        serde_json::json!({
            "iss": self.issuer, "aud": audience, "sub": "alice", "azp": "shop-app",
            "tier": "Gold", "scope": "read write", "iat": now, "nbf": now - 5, "exp": now + 3600,
        })
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Indent a multi-line text for embedding in YAML under a `|` block.
pub fn indent(text: &str, spaces: usize) -> String {
    let pad = " ".repeat(spaces);
    text.lines().map(|l| format!("{pad}{l}")).collect::<Vec<_>>().join("\n")
}

/// A PostgreSQL 15 cluster of its own (Debian's binaries, run as the `postgres` user) on a
/// free loopback port that takes TLS connections only, with a certificate for 127.0.0.1
/// (`certificate`, its own CA); stopped and removed when dropped.
pub struct PostgresTlsServer {
    /// Its port.
    pub port: u16,
    /// Its certificate: what a client trusts (`sslrootcert`).
    pub certificate: TestCertificate,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl PostgresTlsServer {
    const BIN: &str = "/usr/lib/postgresql/15/bin";

    /// Make the cluster and start it. Panics, naming what is missing, when PostgreSQL 15's
    /// server binaries cannot be run.
    pub fn start() -> Self {
        use std::os::unix::fs::{PermissionsExt, chown};
        let dir = tempfile::tempdir().expect("a temporary directory");
        let owner = Self::postgres_user();
        chown(dir.path(), Some(owner), None).expect("give the cluster's folder to `postgres`");
        let data = dir.path().join("data");
        Self::as_postgres("initdb", &["-D", data.to_str().expect("a UTF-8 path"), "--auth=trust", "-U", "postgres", "-E", "UTF8"]);
        let certificate = TestCertificate::generate(dir.path());
        for file in [&certificate.cert, &certificate.key] {
            chown(file, Some(owner), None).expect("give the certificate to `postgres`");
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).expect("a private key readable by its owner only");
        }
        std::fs::write(data.join("pg_hba.conf"), "hostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n")
            .expect("pg_hba.conf");
        let port = free_port();
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            dir.path().display(),
            certificate.cert.display(),
            certificate.key.display()
        );
        let log = dir.path().join("postgres.log");
        Self::as_postgres(
            "pg_ctl",
            &["-D", data.to_str().unwrap_or_default(), "-l", log.to_str().unwrap_or_default(), "-o", &options, "-w", "start"],
        );
        Self { port, certificate, data, _dir: dir }
    }

    /// A URL of its `postgres` database with `sslmode` (and the certificate as the root to
    /// verify it by).
    pub fn url(&self, sslmode: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres?sslmode={sslmode}&sslrootcert={}", self.port, self.certificate.cert.display())
    }

    fn postgres_user() -> u32 {
        let output = Command::new("id").args(["-u", "postgres"]).output().expect("`id` runs");
        String::from_utf8_lossy(&output.stdout).trim().parse().expect("a `postgres` user (Debian's postgresql package makes it)")
    }

    fn as_postgres(program: &str, args: &[&str]) {
        let output = Command::new("runuser")
            .args(["-u", "postgres", "--", &format!("{}/{program}", Self::BIN)])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("runuser {program}: {e} (PostgreSQL 15's server, Debian's postgresql-15, is needed)"));
        assert!(
            output.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PostgresTlsServer {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--", &format!("{}/pg_ctl", Self::BIN), "-D"])
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

/// A `redis-server` of its own on a free loopback port, without persistence, for tests that
/// count on Redis or kill it; stopped when dropped.
pub struct RedisServer {
    /// Its port.
    pub port: u16,
    process: std::process::Child,
    /// Its working folder: where a replica keeps what its master sent it, and a Sentinel
    /// its configuration file (so that no server loads another's data).
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Start one and wait until it answers `PING`. Panics, naming what is missing, when
    /// `redis-server` cannot be run (CI installs it).
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// [`Self::start`] on `port` (to bring one back where a killed one was).
    pub fn start_on(port: u16) -> Self {
        Self::spawn(port, None, &[], tempfile::tempdir().expect("a temporary directory"))
    }

    /// A replica of `master`, on a free port.
    pub fn replica_of(master: &RedisServer) -> Self {
        Self::spawn(
            free_port(),
            None,
            &["--replicaof", "127.0.0.1", &master.port.to_string()],
            tempfile::tempdir().expect("a temporary directory"),
        )
    }

    /// A Sentinel on a free port that monitors `master` under `name`, alone (quorum 1), and
    /// fails over one second after the master stops answering.
    pub fn sentinel_for(master: &RedisServer, name: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = dir.path().join("sentinel.conf");
        let text = format!(
            "sentinel monitor {name} 127.0.0.1 {port} 1\nsentinel down-after-milliseconds {name} 1000\n\
             sentinel failover-timeout {name} 5000\nsentinel parallel-syncs {name} 1\n",
            port = master.port
        );
        std::fs::write(&config, text).expect("the Sentinel's configuration");
        let config = config.to_str().expect("a UTF-8 path").to_owned();
        Self::spawn(free_port(), Some(&config), &["--sentinel"], dir)
    }

    /// `redis-server [config] --port … extra`: a configuration file comes first on its command line.
    fn spawn(port: u16, config: Option<&str>, extra: &[&str], dir: tempfile::TempDir) -> Self {
        let process = std::process::Command::new("redis-server")
            .args(config)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .args(extra)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (Debian's `redis-server` package) is needed");
        let server = Self { port, process, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.answers() {
            assert!(Instant::now() < deadline, "redis-server on port {port} did not answer within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Whether it answers `PING` now.
    pub fn answers(&self) -> bool {
        self.command(&["PING"]).is_some_and(|reply| reply == "+PONG")
    }

    /// Send one command (inline) and read the first line of the reply; `None` when the
    /// server cannot be reached.
    pub fn command(&self, words: &[&str]) -> Option<String> {
        use std::io::{BufRead, BufReader, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
        stream.write_all(format!("{}\r\n", words.join(" ")).as_bytes()).ok()?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).ok()?;
        Some(line.trim_end().to_owned())
    }

    /// Stop it now (as a crash would: no shutdown save, clients cut).
    pub fn kill(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A network link the test can cut: a TCP relay from a loopback port to `target`. Cut, it
/// drops the connections it carries and every new one, as a partition between two regions
/// looks from either side; healed, it relays again.
pub struct Link {
    /// Where to connect instead of `target`.
    pub address: SocketAddr,
    cut: Arc<std::sync::atomic::AtomicBool>,
    carried: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Link {
    /// A link to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let address = listener.local_addr().expect("its address");
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let carried: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (is_cut, connections) = (cut.clone(), carried.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if is_cut.load(Ordering::SeqCst) {
                    continue;
                }
                let relay = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                connections.lock().unwrap().push(relay.abort_handle());
            }
        });
        Self { address, cut, carried }
    }

    /// Partition: drop what the link carries and refuse what comes.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for relay in self.carried.lock().unwrap().drain(..) {
            relay.abort();
        }
    }

    /// Heal the partition.
    pub fn heal(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A Prometheus server (Debian's `prometheus`, which `.ci/run` installs) that scrapes the
/// given targets every second: the real parser of what `/metrics` pages write.
pub struct PrometheusServer {
    process: Child,
    /// `http://127.0.0.1:port`.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl PrometheusServer {
    /// Start one scraping each `(job, address)` and wait until it answers.
    pub fn start(targets: &[(&str, SocketAddr)]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut config = String::from("global: {scrape_interval: 1s, scrape_timeout: 1s}\nscrape_configs:\n");
        for (job, address) in targets {
            config.push_str(&format!("  - job_name: {job}\n    static_configs: [{{targets: ['{address}']}}]\n"));
        }
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, config).expect("the Prometheus configuration");
        let port = free_port();
        let process = Command::new("prometheus")
            .arg(format!("--config.file={}", file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian's `prometheus` package) is needed");
        let server = Self { process, url: format!("http://127.0.0.1:{port}"), _dir: dir };
        // Its API answers 503 until its storage is open: wait for `/-/ready`.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !Self::ready(port) {
            assert!(Instant::now() < deadline, "prometheus on port {port} was not ready within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// Whether `GET /-/ready` answers 200.
    fn ready(port: u16) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut head = [0u8; 12];
        stream.write_all(b"GET /-/ready HTTP/1.0\r\n\r\n").is_ok() && stream.read_exact(&mut head).is_ok() && head.ends_with(b" 200")
    }

    /// `GET /api/v1/{path}`'s `data`; panics unless Prometheus answers `success`.
    pub async fn api(&self, path: &str) -> serde_json::Value {
        let reply = HttpClient::default().get(&format!("{}/api/v1/{path}", self.url), &[]).await.expect("prometheus answers");
        let body = reply.json();
        assert_eq!(body["status"], "success", "{path}: {body}");
        body["data"].clone()
    }

    /// The series of an instant query, as (labels, value).
    pub async fn query(&self, query: &str) -> Vec<(serde_json::Value, f64)> {
        let encoded = percent_encoding::utf8_percent_encode(query, percent_encoding::NON_ALPHANUMERIC);
        let data = self.api(&format!("query?query={encoded}")).await;
        data["result"]
            .as_array()
            .expect("a vector")
            .iter()
            .map(|series| (series["metric"].clone(), series["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)))
            .collect()
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// An OpenID provider Portico did not write: panva's `oidc-provider` from npm (OpenID
/// certified), run by node from `tests/fixtures/oidc-provider` (installed once, from its
/// lockfile, under `target/test-node/`). Client credentials only: JWT access tokens for
/// [`OpenIdProvider::RESOURCE`], opaque ones without a `resource`; introspection and
/// revocation. It keeps its tokens in memory: a restart forgets the opaque ones.
pub struct OpenIdProvider {
    /// Its port (the same across restarts).
    pub port: u16,
    process: Option<Child>,
    /// Its clients and keys files.
    dir: tempfile::TempDir,
    script: PathBuf,
}

impl OpenIdProvider {
    /// The resource (`aud`) of its JWT access tokens.
    pub const RESOURCE: &str = "https://api.portico.test";

    /// Start one whose clients are `clients` (id, secret), signing with a new key `kid`.
    pub fn start(clients: &[(&str, &str)], kid: &str) -> Self {
        let script = Self::installed().join("provider.mjs");
        let dir = tempfile::tempdir().unwrap();
        let clients: Vec<serde_json::Value> =
            clients.iter().map(|(id, secret)| serde_json::json!({"client_id": id, "client_secret": secret})).collect();
        std::fs::write(dir.path().join("clients.json"), serde_json::to_vec(&clients).unwrap()).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut provider = Self { port, process: None, dir, script };
        provider.restart_signing_with(&[kid]);
        provider
    }

    /// Its issuer.
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stop it (as a provider's outage).
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// (Re)start it publishing new keys named `kids` (made for the first use of each name,
    /// kept after), signing with the first: a key rotation when it names a new one.
    pub fn restart_signing_with(&mut self, kids: &[&str]) {
        self.stop();
        let mut keys = Vec::new();
        for kid in kids {
            let file = self.dir.path().join(format!("key-{kid}.json"));
            if !file.exists() {
                let status = Command::new("node").arg(&self.script).arg("--generate-key").arg(&file).arg(kid).status().expect("node");
                assert!(status.success(), "generating key {kid}");
            }
            let set: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
            keys.extend(set["keys"].as_array().unwrap().iter().cloned());
        }
        let jwks = self.dir.path().join("jwks.json");
        std::fs::write(&jwks, serde_json::to_vec(&serde_json::json!({"keys": keys})).unwrap()).unwrap();
        let mut process = Command::new("node")
            .arg(&self.script)
            .env("PORT", self.port.to_string())
            .env("RESOURCE", Self::RESOURCE)
            .env("JWKS_FILE", &jwks)
            .env("CLIENTS_FILE", self.dir.path().join("clients.json"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node (Node.js 20 is on every machine)");
        let mut line = String::new();
        let mut stdout = BufReader::new(process.stdout.take().unwrap());
        // Its one line says it listens (or it exits, and the line is empty).
        stdout.read_line(&mut line).unwrap();
        assert!(line.starts_with("listening"), "oidc-provider did not start: {line:?}");
        self.process = Some(process);
    }

    /// An access token for `client`: a JWT when `jwt`, else opaque.
    pub async fn token(&self, client: (&str, &str), jwt: bool) -> String {
        let mut form = "grant_type=client_credentials&scope=read".to_owned();
        if jwt {
            form.push_str("&resource=https%3A%2F%2Fapi.portico.test");
        }
        let reply = self.post_as(client, "/token", form).await;
        reply.json()["access_token"].as_str().unwrap().to_owned()
    }

    /// Revoke `token` as `client`, to whom it was issued (RFC 7009).
    pub async fn revoke(&self, client: (&str, &str), token: &str) {
        self.post_as(client, "/token/revocation", format!("token={token}")).await;
    }

    /// POST `form` to `path` as `client` (id, secret); the answer, which must be 200.
    async fn post_as(&self, client: (&str, &str), path: &str, form: String) -> Reply {
        let basic = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("{}:{}", client.0, client.1));
        let authorization = format!("Basic {basic}");
        let headers = [("authorization", authorization.as_str()), ("content-type", "application/x-www-form-urlencoded")];
        let reply = HttpClient::default().send(Method::POST, &format!("{}{path}", self.issuer()), &headers, form).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text());
        reply
    }

    /// The fixture's folder with its packages installed (once per lockfile).
    fn installed() -> PathBuf {
        use sha2::{Digest, Sha256};
        static INSTALLING: Mutex<()> = Mutex::new(());
        let fixture = workspace_root().join("tests/fixtures/oidc-provider");
        let files = ["package.json", "package-lock.json", "provider.mjs"];
        let mut digest = Sha256::new();
        for file in files {
            digest.update(std::fs::read(fixture.join(file)).unwrap());
        }
        let digest = digest.finalize();
        let dir = target_dir()
            .join("test-node")
            .join(format!("oidc-provider-{:02x}{:02x}{:02x}{:02x}", digest[0], digest[1], digest[2], digest[3]));
        let _serial = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
        if !dir.is_dir() {
            let staging = dir.with_extension(format!("installing-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&staging);
            std::fs::create_dir_all(&staging).unwrap();
            for file in files {
                std::fs::copy(fixture.join(file), staging.join(file)).unwrap();
            }
            let output = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel", "error"])
                .current_dir(&staging)
                .output()
                .expect("npm (Node.js 20 and npm are on every machine)");
            assert!(output.status.success(), "npm ci in {}: {}", staging.display(), String::from_utf8_lossy(&output.stderr));
            if std::fs::rename(&staging, &dir).is_err() {
                let _ = std::fs::remove_dir_all(&staging);
            }
        }
        dir
    }
}

impl Drop for OpenIdProvider {
    fn drop(&mut self) {
        self.stop();
    }
}
