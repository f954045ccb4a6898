//! The web console in a real browser: Debian's headless Chromium, driven over WebDriver
//! (chromedriver), against an all-in-one process. Screenshots of the pages and the
//! accessibility check's findings (axe-core, run in the page) are saved under
//! `target/console/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use http::{Method, StatusCode};
use portico_tests::{ControlPlaneClient, HttpClient, MockUpstream, PorticoProcess, target_dir};
use serde_json::{Value, json};

/// The axe-core release the accessibility check runs (from npm, kept under `target/`).
const AXE_VERSION: &str = "4.14.1";

/// What the publisher imports.
const ORDERS_OPENAPI: &str = "openapi: 3.0.3
info:
  title: Orders
  version: v2
  description: Orders of the shop
servers:
  - url: http://orders.example/orders
paths:
  /orders:
    get:
      summary: List orders
  /orders/{id}:
    get:
      summary: One order
";

/// Where screenshots and the accessibility report go.
fn artifacts() -> PathBuf {
    let dir = target_dir().join("console");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// axe-core's script, installed with npm on first use.
fn axe_source() -> String {
    let dir = target_dir().join("console-axe").join(AXE_VERSION);
    let file = dir.join("node_modules/axe-core/axe.min.js");
    if !file.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("npm")
            .args(["install", "--no-save", "--no-audit", "--no-fund", "--no-package-lock", "--prefix"])
            .arg(&dir)
            .arg(format!("axe-core@{AXE_VERSION}"))
            .status()
            .expect("npm runs");
        assert!(status.success(), "npm install axe-core@{AXE_VERSION} failed");
    }
    std::fs::read_to_string(file).unwrap()
}

/// Headless Chromium behind its own chromedriver.
struct Browser {
    client: Client,
    driver: Child,
    axe: String,
    /// Serious and critical accessibility findings, by page.
    findings: Vec<Value>,
}

impl Browser {
    async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (Debian's chromium-driver, which .ci/run installs)");
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,800"]},
        });
        let capabilities = capabilities.as_object().unwrap().clone();
        let started = Instant::now();
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector).capabilities(capabilities.clone()).connect(&format!("http://127.0.0.1:{port}")).await {
                Ok(client) => break client,
                Err(e) if started.elapsed() > Duration::from_secs(30) => panic!("no browser session after 30 s: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        Browser { client, driver, axe: axe_source(), findings: Vec::new() }
    }

    async fn go(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    async fn path(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        }
    }

    async fn fill(&self, css: &str, text: &str) {
        let field = self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no {css}: {e}"));
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no {css}: {e}")).click().await.unwrap();
    }

    /// Click `css` and wait for the page it leads to (a link, or a form's button).
    async fn follow(&self, css: &str) {
        self.client.execute("window.porticoLeaving = true; return true;", vec![]).await.unwrap();
        self.click(css).await;
        let started = Instant::now();
        let arrived = "return window.porticoLeaving === undefined && document.readyState === 'complete';";
        while self.client.execute(arrived, vec![]).await.ok() != Some(Value::Bool(true)) {
            assert!(started.elapsed() < Duration::from_secs(10), "{css} led to no new page within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn text(&self, css: &str) -> String {
        self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no {css}: {e}")).text().await.unwrap()
    }

    async fn count(&self, css: &str) -> usize {
        self.client.find_all(Locator::Css(css)).await.unwrap().len()
    }

    /// Fail unless the page is no wider than the window (nothing to scroll sideways).
    async fn assert_fits(&self, page: &str) {
        let widths = self.client.execute("return [document.documentElement.scrollWidth, window.innerWidth];", vec![]).await.unwrap();
        let (content, window) = (widths[0].as_u64().unwrap(), widths[1].as_u64().unwrap());
        assert!(content <= window, "{page} is {content} px wide in a {window} px window");
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(artifacts().join(format!("{name}.png")), png).unwrap();
    }

    /// Run axe-core on the page; keep its serious and critical findings.
    async fn check_accessibility(&mut self, page: &str) {
        self.client.execute(&format!("{}\nreturn true;", self.axe), vec![]).await.unwrap();
        let run = "const done = arguments[arguments.length - 1];\
            axe.run(document, {resultTypes: ['violations']})\
              .then(r => done(r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')\
                .map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' '))}))))\
              .catch(e => done([{id: 'axe-failed', help: String(e)}]));";
        let found = self.client.execute_async(run, vec![]).await.unwrap();
        for finding in found.as_array().unwrap() {
            self.findings.push(json!({"page": page, "finding": finding}));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_signs_up_subscribes_gets_a_key_and_revokes_it_in_the_browser() {
    let upstream = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    let process = PorticoProcess::spawn(
        dir,
        &["all-in-one", "--data-dir", &data, "--gateway", "127.0.0.1:0", "--api", "127.0.0.1:0"],
        &[("PORTICO_ADMIN_PASSWORD", "console-admin-1")],
    )
    .unwrap();
    let cp = ControlPlaneClient::new(process.control_plane.unwrap());
    let base = cp.base.clone();
    let http = HttpClient::default();

    // The publisher's side, through the REST API.
    let admin = cp.login("admin", "console-admin-1").await;
    cp.allow_loopback_upstreams(&admin).await;
    let documentation =
        "# Using Pets\n\nAsk for an item by its id.\n\n<script>document.title = 'owned'</script>\n\n[more](javascript:alert(1))";
    let definition = json!({
        "name": "Pets", "version": "v1", "context": "/pets", "endpoints": [upstream.url()],
        "description": "Pets for sale", "tags": ["animals", "demo"], "tiers": ["Unlimited", "Bronze"],
        "documentation": documentation, "operations": [{"method": "GET", "path": "/items/{id}"}],
    });
    let api = cp.deployed_api(&admin, definition).await;

    let mut browser = Browser::start().await;
    let b = &mut browser;

    // The admin makes a publisher and a tier; bad input is refused next to its field.
    b.go(&format!("{base}/login")).await;
    b.fill("#username", "admin").await;
    b.fill("#password", "console-admin-1").await;
    b.follow("main button[type=submit]").await;
    b.follow("a[href='/admin']").await;
    assert_eq!(b.path().await, "/admin/users");
    b.fill("#username", "pat").await;
    b.fill("#password", "short").await;
    b.follow("main form button[type=submit]").await;
    assert!(b.text("#password-error").await.contains("12"));
    assert!(!cp.ok(Method::GET, "/api/v1/users", Some(&admin), Value::Null).await.to_string().contains("\"pat\""), "nothing saved");
    b.fill("#password", "publisher-pass-1").await;
    b.follow("main form button[type=submit]").await;
    assert!(b.text("#users").await.contains("pat"));
    b.check_accessibility("admin's users").await;
    b.follow("a[href='/admin/tiers']").await;
    b.fill("#name", "Tiny").await;
    b.fill("#requests", "3").await;
    b.fill("#per_ms", "10").await;
    b.follow("main form button[type=submit]").await;
    assert!(b.text("#per_ms-error").await.contains("1000"), "the window's message is next to it");
    b.fill("#per_ms", "60000").await;
    b.follow("main form button[type=submit]").await;
    assert!(b.text("#tiers").await.contains("3 per 60000 ms"));
    let tiers = cp.ok(Method::GET, "/api/v1/tiers", Some(&admin), Value::Null).await;
    let tiny = tiers.as_array().unwrap().iter().find(|t| t["name"] == "Tiny").expect("the tier was saved");
    assert_eq!((tiny["kind"].as_str(), tiny["requests"].as_i64(), tiny["per_ms"].as_i64()), (Some("subscription"), Some(3), Some(60000)));
    b.screenshot("admin-tiers").await;
    b.check_accessibility("admin's tiers").await;
    // The environment knows its gateway's URL (the all-in-one profile said it); a bad one is
    // refused next to the field, and a gateway token is shown once.
    b.follow("a[href='/admin/environments']").await;
    let gateway_base = process.url("");
    assert_eq!(
        b.client.find(Locator::Css("#gateway_url-default")).await.unwrap().prop("value").await.unwrap().as_deref(),
        Some(gateway_base.trim_end_matches('/'))
    );
    b.fill("#gateway_url-default", "ftp://gateway.example").await;
    b.follow("form[action='/admin/environments/default/gateway-url'] button").await;
    assert!(b.text("#gateway_url-default-error").await.contains("https://"), "the URL's message is next to it");
    let environments = cp.ok(Method::GET, "/api/v1/environments", Some(&admin), Value::Null).await;
    assert_eq!(environments[0]["gateway_url"], gateway_base.trim_end_matches('/'), "nothing saved");
    b.fill("#token-description-default", "edge gateways").await;
    b.follow("form[action='/admin/environments/default/gateway-tokens'] button").await;
    assert!(b.text("#new-gateway-token").await.starts_with("pgw_"));
    b.check_accessibility("admin's environments").await;
    b.follow("a[href='/admin/blocking']").await;
    b.fill("#value", "not-an-address").await;
    b.follow("main form button[type=submit]").await;
    assert!(!b.text("#value-error").await.is_empty(), "the value's message is next to it");
    b.click("#kind option[value=user]").await;
    b.fill("#value", "mallory").await;
    b.follow("main form button[type=submit]").await;
    assert!(b.text("#conditions").await.contains("mallory"));
    b.check_accessibility("admin's blocking conditions").await;
    b.follow("button[aria-label='Unblock user mallory']").await;
    assert_eq!(b.count("#conditions").await, 0, "unblocked");
    b.follow("a[href='/admin/gateways']").await;
    assert!(b.text("#gateways").await.contains("all-in-one-"), "the fleet lists the gateway in this process");
    b.check_accessibility("admin's gateways").await;
    b.follow("form[action='/logout'] button").await;

    // The publisher imports an OpenAPI document, publishes the API, deploys it and sees the
    // rollout complete.
    b.go(&format!("{base}/login")).await;
    b.fill("#username", "pat").await;
    b.fill("#password", "publisher-pass-1").await;
    b.follow("main button[type=submit]").await;
    assert_eq!(b.path().await, "/publisher");
    b.follow("a[href='/publisher/import']").await;
    b.fill("#openapi", "openapi: [").await;
    b.fill("#endpoints", &upstream.url()).await;
    b.follow("main form button[type=submit]").await;
    assert!(b.text("#openapi-error").await.contains("YAML"), "the document's problem is next to it");
    assert_eq!(cp.ok(Method::GET, "/api/v1/apis?q=orders", Some(&admin), Value::Null).await, json!([]), "nothing saved");
    b.check_accessibility("import with an error").await;
    let document = artifacts().join("orders.yaml");
    std::fs::write(&document, ORDERS_OPENAPI).unwrap();
    b.fill("#openapi", "").await;
    b.client.find(Locator::Css("#openapi_file")).await.unwrap().send_keys(&document.display().to_string()).await.unwrap();
    b.follow("main form button[type=submit]").await;
    let orders_page = b.path().await;
    assert!(orders_page.starts_with("/publisher/apis/"), "on the imported API's page");
    assert!(b.text("h1").await.starts_with("Orders"), "{}", b.text("h1").await);
    assert_eq!(b.count("#operations tbody tr").await, 2);
    b.follow("form[action$='/lifecycle'] button").await;
    assert!(b.text("h1").await.contains("PUBLISHED"), "{}", b.text("h1").await);
    b.follow("form[action$='/revisions'] button").await;
    assert!(b.text("#revisions").await.contains("1"));
    b.follow("form[action$='/deployments'] button[type=submit]").await;
    let started = Instant::now();
    while b.count(".rollout[data-done='true']").await == 0 {
        assert!(started.elapsed() < Duration::from_secs(15), "the rollout shown done: {}", b.text(".deployments").await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("the rollout was shown done {:?} after the deploy's page", started.elapsed());
    assert!(b.text(".rollout").await.contains("Rolled out"));
    let orders = http.get(&process.url("/orders/v2/orders"), &[]).await.unwrap();
    assert_eq!(orders.status, StatusCode::UNAUTHORIZED, "the gateway serves the deployed API (and wants a key)");
    b.screenshot("publisher-api").await;
    b.check_accessibility("publisher's API page").await;
    // The policy registry: an upload without its component is refused next to the field; a
    // component uploads and is listed with what uses it.
    b.go(&format!("{base}/publisher/policies")).await;
    b.fill("#name", "noop").await;
    b.fill("#version", "1.0.0").await;
    b.follow("main form button[type=submit]").await;
    assert!(b.text("#component-error").await.contains(".wasm"), "the component's message is next to it");
    b.client.find(Locator::Css("#component")).await.unwrap().send_keys(portico_tests::policies::NOOP).await.unwrap();
    b.follow("main form button[type=submit]").await;
    assert!(b.text("#policies").await.contains("noop@1.0.0"), "{}", b.text("#policies").await);
    b.check_accessibility("policy registry").await;
    // Attached to the imported API with its configuration form.
    b.go(&format!("{base}{orders_page}")).await;
    b.click("#policy option[value='noop@1.0.0']").await;
    b.follow("form[action$='/attach'] button").await;
    b.check_accessibility("attaching a policy").await;
    b.follow("#attach button[type=submit]").await;
    assert!(b.text("#attachments").await.contains("noop@1.0.0"), "the policy is attached");
    b.follow("form[action='/logout'] button").await;

    // A visitor not logged in is sent to the login page, which comes back after.
    b.go(&format!("{base}/devportal/applications")).await;
    assert_eq!(b.path().await, "/login?next=%2Fdevportal%2Fapplications");
    b.screenshot("login").await;
    b.check_accessibility("login").await;

    // Sign up: a short password is refused next to its field, and no account is made.
    b.follow("a[href='/signup']").await;
    b.fill("#username", "alice").await;
    b.fill("#password", "too-short").await;
    b.follow("main button[type=submit]").await;
    assert!(b.text("#password-error").await.contains("12"), "the password's message is next to it");
    assert_eq!(b.client.find(Locator::Css("#password")).await.unwrap().attr("aria-invalid").await.unwrap().as_deref(), Some("true"));
    b.check_accessibility("signup with an error").await;
    let users = cp.ok(Method::GET, "/api/v1/users", Some(&admin), Value::Null).await;
    assert!(!users.to_string().contains("alice"), "nothing saved: {users}");
    b.fill("#password", "alice-password-1").await;
    b.follow("main button[type=submit]").await;
    assert_eq!(b.path().await, "/devportal", "signed up and logged in");

    // The catalogue: search and tags.
    assert_eq!(b.count(".card").await, 2);
    b.screenshot("portal-catalogue").await;
    b.check_accessibility("catalogue").await;
    b.fill("#q", "of the shop").await;
    b.follow("form[role=search] button").await;
    assert_eq!(b.text(".card h2").await, "Orders v2");
    assert_eq!(b.count(".card").await, 1);
    b.follow("a[href='/devportal?tag=animals']").await;
    assert_eq!(b.count(".card").await, 1);
    b.follow(".card h2 a").await;

    // The API's page: its documentation rendered, with nothing that runs.
    assert_eq!(b.path().await, format!("/devportal/apis/{api}"));
    assert_eq!(b.text(".documentation h3").await, "Using Pets");
    assert!(b.text(".documentation").await.contains("<script>"), "raw HTML is shown as text");
    assert_eq!(b.client.title().await.unwrap(), "Pets v1 — Portico");
    assert_eq!(b.count(".documentation script").await, 0);
    assert_eq!(b.client.find(Locator::LinkText("more")).await.unwrap().attr("href").await.unwrap().as_deref(), Some("#"));
    let download = b.client.find(Locator::LinkText("Download the OpenAPI document")).await.unwrap().attr("href").await.unwrap().unwrap();
    let session = b.client.get_all_cookies().await.unwrap();
    let session = session.iter().find(|c| c.name() == "portico_session").expect("the session cookie");
    let document = http.get(&format!("{base}{download}"), &[("cookie", &format!("portico_session={}", session.value()))]).await.unwrap();
    assert_eq!(document.header("content-disposition"), Some("attachment; filename=\"openapi.json\""));
    assert!(document.json()["paths"]["/items/{id}"]["get"].is_object(), "{}", document.text());

    // An application: a name the API refuses is shown next to the field, nothing saved.
    b.follow("main a[href='/devportal/applications']").await;
    b.fill("#name", " shop").await;
    b.follow("main form button[type=submit]").await;
    assert!(b.text("#name-error").await.contains("surrounding spaces"), "the name's message is next to it");
    let alice = cp.login("alice", "alice-password-1").await;
    let applications = cp.ok(Method::GET, "/api/v1/applications", Some(&alice), Value::Null).await;
    assert_eq!(applications, json!([]), "nothing saved");
    b.check_accessibility("applications with an error").await;
    b.fill("#name", "shop").await;
    b.fill("#description", "The web shop").await;
    b.follow("main form button[type=submit]").await;
    assert!(b.path().await.starts_with("/devportal/applications/"), "on the new application's page");

    // Subscribe it from the API's page, on a tier the API offers.
    b.go(&format!("{base}/devportal/apis/{api}")).await;
    b.click("#tier option[value=Bronze]").await;
    b.follow("#subscribe button[type=submit]").await;
    assert!(b.text("#subscriptions").await.contains("Pets v1"), "the subscription is listed");
    let application = b.path().await.trim_start_matches("/devportal/applications/").to_owned();
    let subscriptions = cp.ok(Method::GET, &format!("/api/v1/applications/{application}/subscriptions"), Some(&alice), Value::Null).await;
    assert_eq!(subscriptions[0]["tier"], "Bronze");

    // An API key, shown once; the gateway takes it.
    b.follow("form[action$='/api-keys'] button").await;
    let key = b.text("#new-key").await;
    assert!(key.len() > 20, "{key}");
    assert!(b.client.find(Locator::Css("button[data-copy='new-key']")).await.unwrap().is_displayed().await.unwrap(), "a copy button");
    b.screenshot("portal-application-new-key").await;
    b.check_accessibility("application with a new key").await;
    b.go(&format!("{base}/devportal/applications/{application}")).await;
    assert_eq!(b.count("#new-key").await, 0, "never shown again");

    // The try-it panel calls the API through the gateway with the key.
    b.go(&format!("{base}/devportal/apis/{api}")).await;
    let gateway = process.url("/pets/v1/items/1");
    assert_eq!(b.text("#gateway_url option").await, gateway.trim_end_matches("/items/1"), "the gateway's URL is listed");
    b.fill("#path", "items/1").await;
    b.fill("#api_key", &key).await;
    b.follow("#try-it button[type=submit]").await;
    assert!(b.text("#path-error").await.contains("starting with `/`"), "the path's message is next to it");
    b.fill("#path", "/items/1").await;
    let started = Instant::now();
    loop {
        b.follow("#try-it button[type=submit]").await;
        // The key reaches the gateway within moments of being made.
        if b.text("#answer-status").await.starts_with("200") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the try-it call answered {}", b.text("#answer").await);
    }
    assert!(upstream.received().iter().any(|path| path.contains("/items/1")), "the call reached the backend");
    b.client.execute("document.getElementById('answer').scrollIntoView(); return true;", vec![]).await.unwrap();
    b.screenshot("portal-try-it").await;
    b.check_accessibility("API page with an answer").await;
    b.go(&format!("{base}/devportal/applications/{application}")).await;

    // An OAuth2 client, its secret shown once, and a token for testing that the gateway takes.
    b.follow("form[action$='/oauth-client'] button").await;
    let client_id = b.text("#client-id").await;
    let secret = b.text("#new-secret").await;
    assert!(secret.len() > 20, "{secret}");
    b.fill("#scope", "no-such-scope").await;
    b.follow("#test-token button").await;
    assert!(b.text("#scope-error").await.contains("no-such-scope"), "the scope's message is next to it");
    b.fill("#scope", "").await;
    b.follow("#test-token button").await;
    let token = b.text("#new-token").await;
    let bearer = format!("Bearer {token}");
    assert_eq!(http.get(&gateway, &[("authorization", &bearer)]).await.unwrap().status, StatusCode::OK, "the gateway takes the token");
    let basic = format!("Basic {}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("{client_id}:{secret}")));
    let form = [("authorization", basic.as_str()), ("content-type", "application/x-www-form-urlencoded")];
    let issued = http.send(Method::POST, &format!("{base}/oauth2/token"), &form, "grant_type=client_credentials").await.unwrap();
    assert_eq!(issued.status, StatusCode::OK, "the secret shown works: {}", issued.text());
    b.screenshot("portal-application-oauth").await;
    b.check_accessibility("application with its OAuth2 client").await;
    b.go(&format!("{base}/devportal/applications/{application}")).await;
    assert_eq!(b.count("#new-secret").await + b.count("#new-token").await, 0, "never shown again");

    // Revoked from the portal, the key is refused by the gateway.
    let revoked = Instant::now();
    b.follow("button[aria-label^='Revoke']").await;
    let took = portico_tests::eventually("the revocation reaching the gateway", Duration::from_secs(5), async || {
        http.get(&gateway, &[("apikey", &key)]).await.unwrap().status == StatusCode::UNAUTHORIZED
    })
    .await;
    println!("a key revoked in the portal: refused by the gateway {:?} after the click (checked for {took:?})", revoked.elapsed());
    assert!(b.text("#keys").await.contains("Revoked"), "the key is listed as revoked");

    // The calls show on the application's usage page once the gateway reported them (it
    // does every 10 s).
    let started = Instant::now();
    loop {
        b.go(&format!("{base}/devportal/applications/{application}/usage")).await;
        if b.count("#requests-chart").await == 1 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no usage shown: {}", b.text("main").await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("the application's calls were charted {:?} after the key was revoked", started.elapsed());
    assert!(b.text("#breakdown").await.contains("Pets v1"), "{}", b.text("#breakdown").await);
    b.screenshot("portal-usage").await;
    b.check_accessibility("application's usage").await;

    // A subscriber cannot use the publisher's pages.
    b.go(&format!("{base}/publisher")).await;
    assert_eq!(b.text("h1").await, "Not allowed");
    let session = b.client.get_all_cookies().await.unwrap();
    let session = session.iter().find(|c| c.name() == "portico_session").expect("the session cookie");
    assert!(session.http_only().unwrap_or(false), "HttpOnly");
    let cookie = format!("portico_session={}", session.value());
    let reply = http.get(&format!("{base}/publisher"), &[("cookie", &cookie)]).await.unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let policy = reply.header("content-security-policy").unwrap_or_default().to_owned();
    assert!(policy.contains("script-src 'self'") && !policy.contains("unsafe-inline"), "{policy}");

    // A forged form (no token, or another one) is refused, and makes nothing.
    let form = [("cookie", cookie.as_str()), ("content-type", "application/x-www-form-urlencoded")];
    for body in ["name=forged", "name=forged&csrf=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        let reply = http.send(Method::POST, &format!("{base}/devportal/applications"), &form, body).await.unwrap();
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{body}: {}", reply.text());
        assert!(reply.text().contains("anti-forgery"), "{}", reply.text());
    }
    let applications = cp.ok(Method::GET, "/api/v1/applications", Some(&alice), Value::Null).await;
    assert_eq!(applications.as_array().unwrap().len(), 1, "nothing forged was saved: {applications}");

    // The pages on a phone-sized screen: none is wider than the screen.
    b.client.set_window_size(390, 844).await.unwrap();
    let (application_page, usage_page) =
        (format!("/devportal/applications/{application}"), format!("/devportal/applications/{application}/usage"));
    for page in ["/devportal", "/devportal/applications", application_page.as_str(), usage_page.as_str()] {
        b.go(&format!("{base}{page}")).await;
        b.assert_fits(page).await;
    }
    b.go(&format!("{base}/devportal/apis/{api}")).await;
    b.assert_fits("the API page").await;
    b.screenshot("portal-api-phone").await;
    b.check_accessibility("API page on a phone").await;
    b.client.set_window_size(1280, 800).await.unwrap();
    b.go(&format!("{base}/devportal/apis/{api}")).await;
    b.screenshot("portal-api").await;
    b.check_accessibility("API page").await;

    // Logging out ends the session.
    b.follow("form[action='/logout'] button").await;
    assert_eq!(b.path().await, "/login");
    let reply = http.get(&format!("{base}/devportal"), &[("cookie", &cookie)]).await.unwrap();
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "the old cookie is worth nothing");

    // The publisher's and the admin's pages on a phone-sized screen too.
    b.client.set_window_size(390, 844).await.unwrap();
    b.fill("#username", "admin").await;
    b.fill("#password", "console-admin-1").await;
    b.follow("main button[type=submit]").await;
    let edit = format!("{orders_page}/edit");
    let pages = [
        "/publisher",
        orders_page.as_str(),
        edit.as_str(),
        "/publisher/new",
        "/publisher/import",
        "/publisher/policies",
        "/admin/users",
        "/admin/tiers",
        "/admin/environments",
        "/admin/gateways",
        "/admin/blocking",
    ];
    for page in pages {
        b.go(&format!("{base}{page}")).await;
        b.assert_fits(page).await;
        b.check_accessibility(&format!("{page} on a phone")).await;
    }
    b.screenshot("admin-blocking-phone").await;

    let report = serde_json::to_string_pretty(&b.findings).unwrap();
    std::fs::write(artifacts().join("accessibility.json"), &report).unwrap();
    assert!(b.findings.is_empty(), "serious or critical accessibility findings: {report}");
    browser.client.clone().close().await.unwrap();
}
