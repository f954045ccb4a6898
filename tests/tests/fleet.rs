//! WSO2 pattern 2 with real processes on loopback: a control plane and two gateways fed
//! over the network; pattern 1: two all-in-one nodes on one PostgreSQL; pattern 3 with a
//! traffic manager; pattern 4: key-manager nodes apart from the control plane; pattern 5: an
//! outside OpenID provider as the key manager.

use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::{Method, StatusCode};
use portico_tests::{
    ApiKey, ControlPlaneClient, HttpClient, Link, MockUpstream, OpenIdProvider, OtlpReceiver, PorticoProcess, PostgresTlsServer,
    RedisServer, TestCertificate, TestIssuer, eventually, policies, tls_get, until_closed,
};
use serde_json::{Value, json};

const ADMIN_PASSWORD: &str = "fleet-admin-pass-1";

/// A control plane on `port` (0 the first time: the process picks one and logs it; the
/// same one again after a restart, as the gateways know it by that URL).
fn start_control_plane(data: &Path, port: u16) -> PorticoProcess {
    start_control_plane_on(data, port, None)
}

/// [`start_control_plane`] on the database at `database_url` instead of SQLite in `data`.
fn start_control_plane_on(data: &Path, port: u16, database_url: Option<&str>) -> PorticoProcess {
    let environment: Vec<_> = database_url.map(|url| ("PORTICO_DATABASE_URL", url)).into_iter().collect();
    start_control_plane_with(data, port, &[], &environment)
}

/// [`start_control_plane`] with more arguments and environment variables.
fn start_control_plane_with(data: &Path, port: u16, args: &[&str], environment: &[(&str, &str)]) -> PorticoProcess {
    let (data, api) = (data.display().to_string(), format!("127.0.0.1:{port}"));
    let mut all_args = vec!["control-plane", "--data-dir", &data, "--api", &api];
    all_args.extend_from_slice(args);
    let mut all_environment = vec![("PORTICO_ADMIN_PASSWORD", ADMIN_PASSWORD)];
    all_environment.extend_from_slice(environment);
    PorticoProcess::spawn_until(tempfile::tempdir().unwrap(), &all_args, &all_environment, &["control plane listening"]).unwrap()
}

fn start_gateway(control_plane: &str, token: &str, cache: &Path, ready: &str) -> PorticoProcess {
    PorticoProcess::spawn_until(
        tempfile::tempdir().unwrap(),
        &[
            "gateway",
            "--control-plane",
            control_plane,
            "--environment",
            "default",
            "--cache-dir",
            &cache.display().to_string(),
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ],
        &[("PORTICO_GATEWAY_TOKEN", token)],
        &[ready],
    )
    .unwrap()
}

/// A fleet gateway in `dir` with the settings `yaml` (written there, so that certificates
/// it names are found next to it), following `control_plane` with `token`; `extra` are
/// more arguments. Ready once `ready` is logged.
fn start_gateway_with_settings(
    dir: tempfile::TempDir,
    yaml: &str,
    control_plane: &str,
    extra: &[&str],
    token: &str,
    ready: &str,
) -> PorticoProcess {
    let settings = dir.path().join("gateway.yaml");
    std::fs::write(&settings, yaml).unwrap();
    let cache = dir.path().join("cache").display().to_string();
    let settings = settings.display().to_string();
    let mut args = vec!["gateway", "--control-plane", control_plane, "--cache-dir", &cache, "--settings", &settings];
    args.extend_from_slice(extra);
    PorticoProcess::spawn_until(dir, &args, &[("PORTICO_GATEWAY_TOKEN", token)], &[ready]).unwrap()
}

fn component(path: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap())
}

/// What answered: the policy version stamped on the request the upstream saw.
async fn version_at(client: &HttpClient, gateway: &PorticoProcess, key: &str) -> Result<String, String> {
    match client.get(&gateway.url("/stamped/v1/hello"), &[("apikey", key)]).await {
        Ok(reply) if reply.status == StatusCode::OK => reply.upstream_header("x-policy-version").ok_or_else(|| "no stamp".to_owned()),
        Ok(reply) => Err(format!("{} {}", reply.status, reply.text())),
        Err(error) => Err(error.to_string()),
    }
}

/// Deploy a new revision of `api` with `policy` attached; returns the revision id.
async fn deploy_with(cp: &ControlPlaneClient, token: &str, api: &str, upstream: &str, policy: &str) -> String {
    cp.ok(
        Method::PUT,
        &format!("/api/v1/apis/{api}"),
        Some(token),
        json!({"name": "stamped", "version": "v1", "context": "/stamped", "endpoints": [upstream], "operations": [{"method": "GET", "path": "/hello"}], "policies": [{"policy": policy}], "tiers": ["Unlimited"]}),
    )
    .await;
    let revision = cp.ok(Method::POST, &format!("/api/v1/apis/{api}/revisions"), Some(token), json!({})).await;
    cp.ok(
        Method::POST,
        &format!("/api/v1/apis/{api}/deployments"),
        Some(token),
        json!({"revision_id": revision["id"], "environments": ["default"]}),
    )
    .await;
    revision["id"].as_str().unwrap().to_owned()
}

/// Wait for the rollout of `default` to be acknowledged by `gateways` healthy gateways.
async fn rolled_out(cp: &ControlPlaneClient, token: &str, gateways: usize) -> (Duration, Value) {
    let started = Instant::now();
    loop {
        let rollout = cp.ok(Method::GET, "/api/v1/environments/default/rollout?wait_ms=3000", Some(token), Value::Null).await;
        let healthy = rollout["gateways"].as_array().unwrap().iter().filter(|g| g["healthy"] == true).count();
        if rollout["done"] == true && healthy == gateways {
            return (started.elapsed(), rollout);
        }
        assert!(started.elapsed() < Duration::from_secs(10), "rollout not done: {rollout}");
    }
}

/// Requests to every gateway in a loop until stopped; counts successes and failures.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(urls: Vec<String>, key: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let tasks = urls
            .into_iter()
            .map(|url| {
                let (stop, ok, failed, key) = (stop.clone(), ok.clone(), failed.clone(), key.to_owned());
                tokio::spawn(async move {
                    let client = HttpClient::default();
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        match client.get(&url, &[("apikey", &key)]).await {
                            Ok(reply) if reply.status == StatusCode::OK => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(reply) => failed.lock().unwrap().push(format!("{} {}", reply.status, reply.text())),
                            Err(error) => failed.lock().unwrap().push(error.to_string()),
                        }
                    }
                })
            })
            .collect();
        Self { stop, ok, failed, tasks }
    }

    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        (self.ok.load(Ordering::Relaxed), self.failed.lock().unwrap().clone())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pattern_2_control_plane_and_two_gateways() {
    let upstream = MockUpstream::start().await;
    let client = HttpClient::default();
    let data = tempfile::tempdir().unwrap();
    let mut control_plane = start_control_plane(data.path(), 0);
    let port = control_plane.control_plane.unwrap().port();
    let cp_url = format!("http://127.0.0.1:{port}");
    let cp = ControlPlaneClient::new(control_plane.control_plane.unwrap());
    let admin = cp.login("admin", ADMIN_PASSWORD).await;
    cp.allow_loopback_upstreams(&admin).await;

    // The registry: two versions of a policy; bad uploads are refused with the reason.
    for (version, path) in [("1.0.0", policies::STAMP_V1), ("2.0.0", policies::STAMP_V2)] {
        let uploaded = cp
            .ok(Method::POST, "/api/v1/policies", Some(&admin), json!({"name": "stamp", "version": version, "component": component(path)}))
            .await;
        assert_eq!(uploaded["reference"], format!("stamp@{version}"));
        assert_eq!(uploaded["digest"].as_str().unwrap().len(), 64);
    }
    let again = cp
        .call(
            Method::POST,
            "/api/v1/policies",
            Some(&admin),
            Some(json!({"name": "stamp", "version": "1.0.0", "component": component(policies::STAMP_V2)})),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text());
    let bad_uploads = [
        (component(policies::NOT_A_POLICY), "not a policy of the portico:policy@0.1.1 world"),
        (component(policies::FUTURE_WORLD), "0.2.0"),
        (base64::engine::general_purpose::STANDARD.encode(b"\0asm garbage"), "not a WebAssembly component"),
        ("%%%".to_owned(), "not base64"),
    ];
    for (bytes, reason) in bad_uploads {
        let reply = cp
            .call(Method::POST, "/api/v1/policies", Some(&admin), Some(json!({"name": "bad", "version": "1.0.0", "component": bytes})))
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
        assert_eq!(reply.json()["field"], "component");
        assert!(reply.json()["detail"].as_str().unwrap().contains(reason), "{reason}: {}", reply.text());
    }
    let listed = cp.ok(Method::GET, "/api/v1/policies", Some(&admin), Value::Null).await;
    let references: Vec<&str> = listed.as_array().unwrap().iter().map(|p| p["reference"].as_str().unwrap()).collect();
    assert_eq!(references, ["key-auth", "throttle", "headers", "stamp@1.0.0", "stamp@2.0.0"]);

    // An API using stamp@1.0.0, and an application with an API key subscribed to it.
    let api = cp
        .ok(Method::POST, "/api/v1/apis", Some(&admin), json!({"name": "stamped", "version": "v1", "context": "/stamped", "endpoints": [upstream.url()], "operations": [{"method": "GET", "path": "/hello"}], "policies": [{"policy": "stamp@1.0.0"}], "tiers": ["Unlimited"]}))
        .await;
    let api = api["id"].as_str().unwrap().to_owned();
    cp.ok(Method::POST, &format!("/api/v1/apis/{api}/lifecycle"), Some(&admin), json!({"action": "publish"})).await;
    let ApiKey { app, id: key_id, key } = cp.subscribed_key(&admin, "load", &api).await;
    let v1_revision = deploy_with(&cp, &admin, &api, &upstream.url(), "stamp@1.0.0").await;

    // Two gateways register with the environment's token.
    let token =
        cp.ok(Method::POST, "/api/v1/environments/default/gateway-tokens", Some(&admin), json!({"description": "pattern 2 test"})).await;
    let token = token["token"].as_str().unwrap().to_owned();
    let wrong = cp
        .client
        .get(
            &format!("{cp_url}/fleet/v1/stream"),
            &[
                ("authorization", "Bearer nope"),
                ("portico-protocol", portico_gateway::contract::fleet::PROTOCOL_VERSION.to_string().as_str()),
                ("portico-gateway", "x"),
                ("portico-environment", "default"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let caches = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut gateways = vec![
        start_gateway(&cp_url, &token, caches[0].path(), "snapshot applied"),
        start_gateway(&cp_url, &token, caches[1].path(), "snapshot applied"),
    ];
    let (_, rollout) = rolled_out(&cp, &admin, 2).await;
    for gateway in &gateways {
        assert_eq!(version_at(&client, gateway, &key).await.as_deref(), Ok("portico-test-stamp-v1"));
    }
    let listed = cp.ok(Method::GET, "/api/v1/gateways", Some(&admin), Value::Null).await;
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert!(listed.as_array().unwrap().iter().all(|g| g["running_version"] == rollout["version"] && g["in_sync"] == true), "{listed}");
    let metrics = client.get(&format!("{cp_url}/metrics"), &[]).await.unwrap().text();
    for series in [
        "portico_control_plane_gateways_connected{environment=\"default\"} 2\n",
        "portico_control_plane_gateways_behind{environment=\"default\"} 0\n",
    ] {
        assert!(metrics.contains(series), "{series} in {metrics}");
    }

    // A new policy version under steady load: no failed request, and both gateways on it. How
    // long that takes is a figure (reported here, measured by `benches/fleet.rs`), not a
    // pass mark: the new module compiles at a low priority behind this test's saturating load.
    let urls: Vec<String> = gateways.iter().map(|g| g.url("/stamped/v1/hello")).collect();
    let load = Load::start(urls.clone(), &key);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deployed = Instant::now();
    deploy_with(&cp, &admin, &api, &upstream.url(), "stamp@2.0.0").await;
    let (_, _) = rolled_out(&cp, &admin, 2).await;
    let acknowledged = deployed.elapsed();
    println!("deploy acknowledged by both gateways after {acknowledged:?}");
    for gateway in &gateways {
        assert_eq!(version_at(&client, gateway, &key).await.as_deref(), Ok("portico-test-stamp-v2"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (served, failed) = load.finish().await;
    println!("{served} requests served during the policy upgrade");
    assert!(served > 50, "{served}");
    assert!(failed.is_empty(), "{} failed: {:?}", failed.len(), &failed[..failed.len().min(5)]);

    // Rollback: both gateways back on v1, read back compiled from their cache folders (v2's
    // snapshot no longer held v1 in memory): a rollback compiles nothing.
    let compiles_before = [
        metric(&client, &gateways[0], "portico_policy_compiles_total").await,
        metric(&client, &gateways[1], "portico_policy_compiles_total").await,
    ];
    let rolled_back = cp.ok(Method::POST, &format!("/api/v1/apis/{api}/deployments/default/rollback"), Some(&admin), json!({})).await;
    assert_eq!(rolled_back[0]["revision_id"], v1_revision.as_str());
    rolled_out(&cp, &admin, 2).await;
    for (gateway, compiles_before) in gateways.iter().zip(compiles_before) {
        assert_eq!(version_at(&client, gateway, &key).await.as_deref(), Ok("portico-test-stamp-v1"));
        assert_eq!(metric(&client, gateway, "portico_policy_compiles_total").await, compiles_before);
        assert!(metric(&client, gateway, "portico_policy_compiled_reads_total").await >= 1);
    }

    // A bad upload changes nothing in the fleet.
    let before = cp.ok(Method::GET, "/api/v1/environments/default/rollout", Some(&admin), Value::Null).await;
    let reply = cp
        .call(
            Method::POST,
            "/api/v1/policies",
            Some(&admin),
            Some(json!({"name": "stamp", "version": "3.0.0", "component": component(policies::NOT_A_POLICY)})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let after = cp.ok(Method::GET, "/api/v1/environments/default/rollout", Some(&admin), Value::Null).await;
    assert_eq!((after["version"].clone(), after["done"].clone()), (before["version"].clone(), Value::Bool(true)));
    for gateway in &gateways {
        assert_eq!(version_at(&client, gateway, &key).await.as_deref(), Ok("portico-test-stamp-v1"));
    }

    // The registry keeps what a revision uses.
    let busy = cp.call(Method::DELETE, "/api/v1/policies/stamp/1.0.0", Some(&admin), None).await;
    assert_eq!(busy.status, StatusCode::CONFLICT, "{}", busy.text());

    // A revoked key is refused by both gateways within 1 s.
    let other = cp.ok(Method::POST, &format!("/api/v1/applications/{app}/api-keys"), Some(&admin), json!({})).await;
    let other = other["key"].as_str().unwrap().to_owned();
    eventually("the new key working everywhere", Duration::from_secs(2), async || {
        let mut all = true;
        for gateway in &gateways {
            all &= version_at(&client, gateway, &other).await.is_ok();
        }
        all
    })
    .await;
    let received_before: Vec<usize> = gateways.iter().map(|g| g.count_logs("revocations received")).collect();
    let reply = cp.call(Method::DELETE, &format!("/api/v1/applications/{app}/api-keys/{key_id}"), Some(&admin), None).await;
    assert!(reply.status.is_success(), "{}", reply.text());
    let took = eventually("the revoked key refused by both gateways", Duration::from_secs(1), async || {
        let mut all = true;
        for gateway in &gateways {
            all &= client.get(&gateway.url("/stamped/v1/hello"), &[("apikey", &key)]).await.unwrap().status == StatusCode::UNAUTHORIZED;
        }
        all
    })
    .await;
    println!("revoked key refused by both gateways after {took:?}");
    // Sent as a delta, not as the whole environment.
    eventually("the key's revocation logged as received by both gateways", Duration::from_secs(2), async || {
        gateways.iter().zip(&received_before).all(|(gateway, before)| gateway.count_logs("revocations received") > *before)
    })
    .await;
    let key = other;

    // A revoked OAuth2 access token, too.
    let oauth = cp.ok(Method::POST, &format!("/api/v1/applications/{app}/oauth-client"), Some(&admin), json!({})).await;
    let credentials = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            oauth["client_id"].as_str().unwrap(),
            oauth["client_secret"].as_str().unwrap()
        ))
    );
    let form = [("content-type", "application/x-www-form-urlencoded"), ("authorization", credentials.as_str())];
    let issued = client.send(Method::POST, &format!("{cp_url}/oauth2/token"), &form, "grant_type=client_credentials").await.unwrap();
    let access_token = issued.json()["access_token"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {access_token}");
    let status_at =
        async |gateway: &PorticoProcess| client.get(&gateway.url("/stamped/v1/hello"), &[("authorization", &bearer)]).await.unwrap().status;
    eventually("the access token working everywhere", Duration::from_secs(2), async || {
        status_at(&gateways[0]).await == StatusCode::OK && status_at(&gateways[1]).await == StatusCode::OK
    })
    .await;
    let revoked = client.send(Method::POST, &format!("{cp_url}/oauth2/revoke"), &form, format!("token={access_token}")).await.unwrap();
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.text());
    let took = eventually("the revoked access token refused by both gateways", Duration::from_secs(1), async || {
        status_at(&gateways[0]).await == StatusCode::UNAUTHORIZED && status_at(&gateways[1]).await == StatusCode::UNAUTHORIZED
    })
    .await;
    println!("revoked access token refused by both gateways after {took:?}");
    for gateway in &gateways {
        assert!(gateway.count_logs("revocations received") >= 1, "sent as a revocations event, not the whole environment");
    }

    // Blocking conditions (application, client network, API) reach both gateways within 1 s,
    // and so does their removal.
    for (kind, value) in [("application", app.clone()), ("ip", "127.0.0.0/8".to_owned()), ("api", api.clone())] {
        let condition = cp.ok(Method::POST, "/api/v1/blocking-conditions", Some(&admin), json!({"kind": kind, "value": value})).await;
        let took = eventually(&format!("the {kind} blocked by both gateways"), Duration::from_secs(1), async || {
            let mut all = true;
            for gateway in &gateways {
                all &= client.get(&gateway.url("/stamped/v1/hello"), &[("apikey", &key)]).await.unwrap().status == StatusCode::FORBIDDEN;
            }
            all
        })
        .await;
        println!("{kind} blocked at both gateways after {took:?}");
        let id = condition["id"].as_str().unwrap();
        let reply = cp.call(Method::DELETE, &format!("/api/v1/blocking-conditions/{id}"), Some(&admin), None).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        eventually(&format!("the {kind} unblocked"), Duration::from_secs(1), async || {
            let mut all = true;
            for gateway in &gateways {
                all &= version_at(&client, gateway, &key).await.is_ok();
            }
            all
        })
        .await;
    }
    let reply =
        cp.call(Method::POST, "/api/v1/blocking-conditions", Some(&admin), Some(json!({"kind": "ip", "value": "10.0.0.0/40"}))).await;
    assert_eq!((reply.status, reply.json()["field"].as_str()), (StatusCode::BAD_REQUEST, Some("value")), "{}", reply.text());

    // The control plane dies: both gateways keep serving.
    control_plane.kill();
    let load = Load::start(gateways.iter().map(|g| g.url("/stamped/v1/hello")).collect(), &key);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (served, failed) = load.finish().await;
    assert!(served > 20 && failed.is_empty(), "{served} served, failed: {failed:?}");

    // A gateway restarted while the control plane is down starts from its cache.
    drop(gateways.remove(0));
    let restarted = start_gateway(&cp_url, &token, caches[0].path(), "serving the last-known-good snapshot from the cache");
    assert_eq!(version_at(&client, &restarted, &key).await.as_deref(), Ok("portico-test-stamp-v1"));
    // It compiled nothing: every policy it runs was read back compiled.
    assert_eq!(metric(&client, &restarted, "portico_policy_compiles_total").await, 0);
    assert!(metric(&client, &restarted, "portico_policy_compiled_reads_total").await >= 1);

    // A corrupt cache is refused with a clear error; the gateway waits for the control plane.
    drop(gateways.remove(0));
    let snapshot_file = caches[1].path().join("snapshot.json");
    let mut bytes = std::fs::read(&snapshot_file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&snapshot_file, bytes).unwrap();
    let corrupt = start_gateway(&cp_url, &token, caches[1].path(), "last-known-good cache refused; waiting for the control plane");
    assert!(corrupt.logs().iter().any(|l| l.contains("snapshot.json is corrupt")), "{:?}", corrupt.logs());
    let reply = client.get(&corrupt.url("/stamped/v1/hello"), &[("apikey", &key)]).await.unwrap();
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);

    // The control plane returns: the gateway with the corrupt cache converges.
    let control_plane = start_control_plane(data.path(), port);
    let took = eventually("the gateway with the corrupt cache converging", Duration::from_secs(10), async || {
        version_at(&client, &corrupt, &key).await.as_deref() == Ok("portico-test-stamp-v1")
    })
    .await;
    println!("converged {took:?} after the control plane came back");
    assert_eq!(version_at(&client, &restarted, &key).await.as_deref(), Ok("portico-test-stamp-v1"));
    drop(control_plane);
}

/// The value of a counter without labels on `gateway`'s `/metrics`.
async fn metric(client: &HttpClient, gateway: &PorticoProcess, name: &str) -> u64 {
    let metrics = client.get(&format!("http://{}/metrics", gateway.admin.unwrap()), &[]).await.unwrap().text();
    let line = metrics.lines().find(|line| line.split_once(' ').is_some_and(|(n, _)| n == name));
    line.and_then(|line| line.split_once(' ')?.1.parse().ok()).unwrap_or_else(|| panic!("no {name} in {metrics}"))
}

/// Pattern 3: the control plane, the Traffic Manager's store (a Redis of the test's own) and
/// two fleet gateways. The environment's store, set on the control plane while the gateways
/// run, moves them onto Redis; a tier with a day's quota in a time zone, set there too, is the
/// fleet's: requests spread over both gateways are admitted up to the quota in total, and a
/// restarted gateway finds the day's count where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pattern_3_control_plane_traffic_manager_and_two_gateways() {
    let redis = RedisServer::start();
    let upstream = MockUpstream::start().await;
    let client = HttpClient::default();
    let data = tempfile::tempdir().unwrap();
    let control_plane = start_control_plane(data.path(), 0);
    let cp_url = format!("http://{}", control_plane.control_plane.unwrap());
    let cp = ControlPlaneClient::new(control_plane.control_plane.unwrap());
    let admin = cp.login("admin", ADMIN_PASSWORD).await;
    cp.allow_loopback_upstreams(&admin).await;
    let tier = json!({"description": "6 a day", "quota_requests": 6, "quota_period": "day", "time_zone": "Asia/Kolkata"});
    cp.ok(Method::PUT, "/api/v1/tiers/subscription/Daily", Some(&admin), tier).await;
    let api = cp
        .deployed_api(
            &admin,
            json!({"name": "metered", "version": "v1", "context": "/metered",
            "endpoints": [upstream.url()], "operations": [{"method": "GET", "path": "/x"}], "tiers": ["Daily"]}),
        )
        .await;
    let ApiKey { key, app, .. } = cp.subscribed_key_on(&admin, "metered-app", &api, "Daily").await;
    let subscriptions = cp.ok(Method::GET, &format!("/api/v1/applications/{app}/subscriptions"), Some(&admin), Value::Null).await;
    let usage_path = format!("/api/v1/applications/{app}/subscriptions/{}/usage", subscriptions[0]["id"].as_str().unwrap());

    let token = cp.ok(Method::POST, "/api/v1/environments/default/gateway-tokens", Some(&admin), json!({"description": "pattern 3"})).await;
    let token = token["token"].as_str().unwrap().to_owned();
    let settings = "listeners: [{address: \"127.0.0.1:0\"}]\nadmin: {address: \"127.0.0.1:0\"}\n";
    let gateway = || {
        start_gateway_with_settings(
            tempfile::tempdir().unwrap(),
            settings,
            &cp_url,
            &["--environment", "default"],
            &token,
            "snapshot applied",
        )
    };
    let mut gateways = [gateway(), gateway()];
    rolled_out(&cp, &admin, 2).await;
    // Counted in each gateway, usage is nobody's to tell.
    let unknown = cp.call(Method::GET, &usage_path, Some(&admin), None).await;
    assert_eq!(unknown.status, StatusCode::CONFLICT, "{}", unknown.text());
    let counters = json!({"redis": {"url": redis.url(), "mode": "leased", "fleet_size": 2}});
    cp.ok(Method::PUT, "/api/v1/environments/default/counters", Some(&admin), counters).await;
    rolled_out(&cp, &admin, 2).await;
    for gateway in &gateways {
        assert!(gateway.wait_for_log("rate counters shared on Redis", Duration::from_secs(5)), "{}", gateway.logs().join("\n"));
    }

    let mut admitted = [0; 2];
    let mut refusal = None;
    for i in 0..12 {
        let reply = client.get(&gateways[i % 2].url("/metered/v1/x"), &[("apikey", &key)]).await.unwrap();
        match reply.status {
            StatusCode::OK => admitted[i % 2] += 1,
            StatusCode::TOO_MANY_REQUESTS => refusal = Some(reply),
            other => panic!("request {i}: {other} {}", reply.text()),
        }
    }
    println!("12 requests over two gateways, a quota of 6 a day: {admitted:?} admitted");
    let total = admitted[0] + admitted[1];
    // Leases of one unit: a unit a gateway took ahead and did not spend is not admitted by
    // the other, so the fleet may admit less than the quota, never more.
    assert!((4..=6).contains(&total), "one quota for the fleet: {admitted:?}");
    assert!(admitted.iter().all(|&n| n > 0), "both gateways admitted some: {admitted:?}");
    let refusal = refusal.expect("the quota refused the rest");
    assert!(refusal.text().contains("6 requests per day is used up"), "{}", refusal.text());
    let now = portico_tests::unix_now() as u64;
    let offset = 5 * 3600 + 1800;
    let until_midnight = (now + offset).div_ceil(86_400) * 86_400 - offset - now;
    let retry_after: u64 = refusal.header("retry-after").unwrap().parse().unwrap();
    assert!(retry_after.abs_diff(until_midnight) <= 2, "retry after {retry_after} s, midnight in Kolkata in {until_midnight} s");

    // The subscriber sees the day's quota used up (every unit leased to the gateways), until
    // midnight in Kolkata, read from Redis by the control plane.
    let usage = cp.ok(Method::GET, &usage_path, Some(&admin), Value::Null).await;
    let quota = &usage["limits"][0];
    assert_eq!((usage["tier"].as_str(), usage["environment"].as_str()), (Some("Daily"), Some("default")), "{usage}");
    assert_eq!((quota["kind"].as_str(), quota["limit"].as_u64(), quota["per"].as_str()), (Some("quota"), Some(6), Some("day")), "{usage}");
    assert_eq!((quota["used"].as_u64(), quota["remaining"].as_u64()), (Some(6), Some(0)), "{usage}");
    let resets_in = quota["resets_in_ms"].as_u64().unwrap() / 1000;
    assert!(resets_in.abs_diff(until_midnight) <= 2, "resets in {resets_in} s, midnight in Kolkata in {until_midnight} s");

    // A restarted gateway (ready once its snapshot is applied) finds the day's count in Redis.
    gateways[0] = gateway();
    let reply = client.get(&gateways[0].url("/metered/v1/x"), &[("apikey", &key)]).await.unwrap();
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "the day's count outlives a restart: {}", reply.text());
}

/// WSO2 pattern 4: the key manager as a layer of its own. A control plane told where the
/// key-manager layer is, two key-manager nodes behind one issuer URL on the control
/// plane's PostgreSQL, and a gateway: tokens from either node are accepted, a token revoked
/// at one node is refused by the gateway within 1 s, and with one node killed the other
/// goes on issuing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pattern_4_two_key_manager_nodes_apart_from_the_control_plane() {
    let database = portico_control_plane::test_support::fresh_postgres_database().await;
    let sealing_key = portico_control_plane::secrets::SealingKey::generate_hex();
    // The key-manager layer's load balancer, as tokens name their issuer.
    let issuer = "http://keys.portico.test";
    let environment = [("PORTICO_DATABASE_URL", database.as_str()), ("PORTICO_SECRETS_KEY", sealing_key.as_str())];
    let upstream = MockUpstream::start().await;
    let client = HttpClient::default();
    let data = tempfile::tempdir().unwrap();
    let control_plane = start_control_plane_with(data.path(), 0, &["--key-manager-url", issuer], &environment);
    let key_manager = || {
        let args = ["key-manager", "--api", "127.0.0.1:0", "--public-url", issuer];
        PorticoProcess::spawn_until(tempfile::tempdir().unwrap(), &args, &environment, &["key manager listening"]).unwrap()
    };
    let (mut first, second) = (key_manager(), key_manager());
    let cp = ControlPlaneClient::new(control_plane.control_plane.unwrap());
    let admin = cp.login("admin", ADMIN_PASSWORD).await;
    cp.allow_loopback_upstreams(&admin).await;
    let definition = json!({"name": "keyed", "version": "v1", "context": "/keyed", "endpoints": [upstream.url()], "operations": [{"method": "GET", "path": "/x"}], "tiers": ["Unlimited"]});
    let api = cp.deployed_api(&admin, definition).await;
    let app = cp.ok(Method::POST, "/api/v1/applications", Some(&admin), json!({"name": "shop"})).await;
    let app = app["id"].as_str().unwrap().to_owned();
    cp.ok(Method::POST, &format!("/api/v1/applications/{app}/subscriptions"), Some(&admin), json!({"api_id": api, "tier": "Unlimited"}))
        .await;
    let (oauth, basic) = cp.oauth_client(&admin, &app).await;
    // The developer portal sends clients to the key-manager layer; the control plane itself
    // issues nothing.
    assert_eq!(oauth["token_endpoint"], format!("{issuer}/oauth2/token"), "{oauth}");
    let form = [("content-type", "application/x-www-form-urlencoded"), ("authorization", basic.as_str())];
    let at_control_plane =
        client.send(Method::POST, &format!("{}/oauth2/token", cp.base), &form, "grant_type=client_credentials").await.unwrap();
    assert_eq!(at_control_plane.status, StatusCode::NOT_FOUND, "{}", at_control_plane.text());
    let document = client.get(&format!("{}/api/v1/openapi.json", cp.base), &[]).await.unwrap().json();
    let paths = document["paths"].as_object().unwrap();
    assert!(paths.contains_key("/api/v1/keymanager/keys") && !paths.contains_key("/oauth2/token"), "{:?}", paths.keys());
    let token_from = async |node: &PorticoProcess| {
        let url = format!("http://{}/oauth2/token", node.key_manager.unwrap());
        let reply = client.send(Method::POST, &url, &form, "grant_type=client_credentials").await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        format!("Bearer {}", reply.json()["access_token"].as_str().unwrap())
    };
    for node in [&first, &second] {
        let metadata =
            client.get(&format!("http://{}/.well-known/oauth-authorization-server", node.key_manager.unwrap()), &[]).await.unwrap();
        assert_eq!(metadata.json()["issuer"], issuer, "{}", metadata.text());
        assert_eq!(client.get(&format!("http://{}/readyz", node.key_manager.unwrap()), &[]).await.unwrap().status, StatusCode::OK);
        // A key manager serves no management API.
        let apis = client.get(&format!("http://{}/api/v1/apis", node.key_manager.unwrap()), &[]).await.unwrap();
        assert_eq!(apis.status, StatusCode::NOT_FOUND);
    }

    let token = cp.ok(Method::POST, "/api/v1/environments/default/gateway-tokens", Some(&admin), json!({"description": "pattern 4"})).await;
    let cache = tempfile::tempdir().unwrap();
    let cp_url = format!("http://{}", control_plane.control_plane.unwrap());
    let gateway = start_gateway(&cp_url, token["token"].as_str().unwrap(), cache.path(), "snapshot applied");
    let answers = async |bearer: &str| client.get(&gateway.url("/keyed/v1/x"), &[("authorization", bearer)]).await.unwrap().status;
    let (from_first, from_second) = (token_from(&first).await, token_from(&second).await);
    eventually("tokens of both key-manager nodes accepted", Duration::from_secs(10), async || {
        answers(&from_first).await == StatusCode::OK && answers(&from_second).await == StatusCode::OK
    })
    .await;

    // Issued by the second node, revoked at the first (RFC 7009): the control plane hears of
    // it from the database and pushes it to the gateway.
    let revoke = format!("http://{}/oauth2/revoke", first.key_manager.unwrap());
    let bearer_token = from_second.trim_start_matches("Bearer ");
    let reply = client.send(Method::POST, &revoke, &form, format!("token={bearer_token}")).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let took = eventually("the token revoked at the first node refused", Duration::from_secs(1), async || {
        answers(&from_second).await == StatusCode::UNAUTHORIZED
    })
    .await;
    println!("token revoked at one key-manager node refused by the gateway after {took:?}");
    assert_eq!(answers(&from_first).await, StatusCode::OK, "only the revoked token is refused");

    // One node down: the other goes on issuing, and its tokens are accepted.
    first.kill();
    let after = token_from(&second).await;
    assert_eq!(answers(&after).await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pattern_5_an_outside_openid_provider_as_the_key_manager() {
    let (app_client, other_client, gateway_client) =
        (("shop", "shop-secret"), ("stranger", "stranger-secret"), ("portico", "portico-secret"));
    let mut provider = OpenIdProvider::start(&[app_client, other_client, gateway_client], "key-1");
    let upstream = MockUpstream::start().await;
    let client = HttpClient::default();
    let data = tempfile::tempdir().unwrap();
    let control_plane = start_control_plane(data.path(), 0);
    let cp = ControlPlaneClient::new(control_plane.control_plane.unwrap());
    let admin = cp.login("admin", ADMIN_PASSWORD).await;
    cp.allow_loopback_upstreams(&admin).await;
    let definition = json!({"name": "outside", "version": "v1", "context": "/outside", "endpoints": [upstream.url()], "operations": [{"method": "GET", "path": "/x"}], "tiers": ["Unlimited"]});
    let api = cp.deployed_api(&admin, definition).await;

    // The admin makes the provider the key manager of `default`: a bad setting is named.
    let mut settings = json!({
        "issuer": provider.issuer(), "environments": ["default"], "audiences": [OpenIdProvider::RESOURCE],
        "discovery": {"unknown_kid_interval": "1s", "introspection": {"client_id": gateway_client.0, "client_secret": gateway_client.1, "cache_ttl": "2s"}},
    });
    for (field, bad) in [("issuer", json!("ftp://idp.test")), ("environments", json!(["nowhere"])), ("algorithms", json!(["HS256"]))] {
        let mut wrong = settings.clone();
        wrong[field] = bad;
        let reply = cp.call(Method::PUT, "/api/v1/key-managers/corp", Some(&admin), Some(wrong)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{field}: {}", reply.text());
        assert!(reply.json()["field"].as_str().unwrap().starts_with(field), "{}", reply.text());
    }
    let stored = cp.ok(Method::PUT, "/api/v1/key-managers/corp", Some(&admin), settings.clone()).await;
    assert_eq!(stored["discovery"]["introspection"]["client_secret"], "***", "{stored}");

    // An application maps the client the provider gave it, proving it holds it.
    let app = cp.ok(Method::POST, "/api/v1/applications", Some(&admin), json!({"name": "shop"})).await;
    let app = app["id"].as_str().unwrap().to_owned();
    cp.ok(Method::POST, &format!("/api/v1/applications/{app}/subscriptions"), Some(&admin), json!({"api_id": api, "tier": "Unlimited"}))
        .await;
    let map = format!("/api/v1/applications/{app}/external-clients/corp");
    let wrong_secret = cp.call(Method::PUT, &map, Some(&admin), Some(json!({"client_id": app_client.0, "client_secret": "guess"}))).await;
    assert_eq!(wrong_secret.status, StatusCode::BAD_REQUEST, "{}", wrong_secret.text());
    assert_eq!(wrong_secret.json()["field"], "client_secret");
    cp.ok(Method::PUT, &map, Some(&admin), json!({"client_id": app_client.0, "client_secret": app_client.1})).await;
    let rival = cp.ok(Method::POST, "/api/v1/applications", Some(&admin), json!({"name": "rival"})).await;
    let taken = format!("/api/v1/applications/{}/external-clients/corp", rival["id"].as_str().unwrap());
    let taken = cp.call(Method::PUT, &taken, Some(&admin), Some(json!({"client_id": app_client.0, "client_secret": app_client.1}))).await;
    assert_eq!(taken.status, StatusCode::CONFLICT, "{}", taken.text());
    // Settings shown with `***` keep the secret when given back; a second key manager of the
    // same provider in the same environment is refused.
    let twin = cp.call(Method::PUT, "/api/v1/key-managers/twin", Some(&admin), Some(settings.clone())).await;
    assert_eq!((twin.status, twin.json()["field"].as_str()), (StatusCode::BAD_REQUEST, Some("issuer")), "{}", twin.text());
    settings["discovery"]["introspection"]["client_secret"] = json!("***");
    cp.ok(Method::PUT, "/api/v1/key-managers/corp", Some(&admin), settings).await;

    let token = cp.ok(Method::POST, "/api/v1/environments/default/gateway-tokens", Some(&admin), json!({"description": "pattern 5"})).await;
    let cache = tempfile::tempdir().unwrap();
    let cp_url = format!("http://{}", control_plane.control_plane.unwrap());
    let gateway = start_gateway(&cp_url, token["token"].as_str().unwrap(), cache.path(), "snapshot applied");
    let answers = async |gateway: &PorticoProcess, token: &str| {
        let reply = client.get(&gateway.url("/outside/v1/x"), &[("authorization", &format!("Bearer {token}"))]).await.unwrap();
        reply.status
    };

    // A JWT checked with the provider's keys, an opaque token by introspection.
    let jwt = provider.token(app_client, true).await;
    let opaque = provider.token(app_client, false).await;
    eventually("the provider's JWT accepted", Duration::from_secs(10), async || answers(&gateway, &jwt).await == StatusCode::OK).await;
    assert_eq!(answers(&gateway, &opaque).await, StatusCode::OK);
    // A client no application maps is refused, JWT or opaque, and so is a made-up token.
    assert_eq!(answers(&gateway, &provider.token(other_client, true).await).await, StatusCode::UNAUTHORIZED);
    assert_eq!(answers(&gateway, &provider.token(other_client, false).await).await, StatusCode::UNAUTHORIZED);
    assert_eq!(answers(&gateway, "made-up-opaque-token").await, StatusCode::UNAUTHORIZED);

    // Revoked at the provider: refused once the gateway's cached answer is older than its
    // two seconds.
    provider.revoke(app_client, &opaque).await;
    let took = eventually("the revoked opaque token refused", Duration::from_secs(5), async || {
        answers(&gateway, &opaque).await == StatusCode::UNAUTHORIZED
    })
    .await;
    println!("opaque token revoked at the provider refused after {took:?}");

    // Key rotation: the provider signs with a new key (publishing the old one too); the
    // gateway fetches its keys when it first sees the new `kid`.
    provider.restart_signing_with(&["key-2", "key-1"]);
    let rotated = provider.token(app_client, true).await;
    assert_eq!(answers(&gateway, &rotated).await, StatusCode::OK, "a token of the new key");
    assert_eq!(answers(&gateway, &jwt).await, StatusCode::OK, "a token of the old key, still published");
    let opaque = provider.token(app_client, false).await;
    assert_eq!(answers(&gateway, &opaque).await, StatusCode::OK);

    // The provider down: known keys and answers keep valid tokens working past the cache
    // time; what was never answered is refused, never accepted for want of an answer.
    provider.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(answers(&gateway, &rotated).await, StatusCode::OK);
    assert_eq!(answers(&gateway, &opaque).await, StatusCode::OK);
    assert_eq!(answers(&gateway, "another-made-up-opaque-token").await, StatusCode::UNAUTHORIZED);
    // A gateway restarted meanwhile starts from the keys it kept in its cache folder (its
    // cached answers are gone: the opaque token is refused until the provider is back).
    let mut gateway = gateway;
    gateway.kill();
    let ready = "serving the last-known-good snapshot from the cache";
    let gateway = start_gateway(&cp_url, token["token"].as_str().unwrap(), cache.path(), ready);
    assert_eq!(answers(&gateway, &rotated).await, StatusCode::OK, "a known key, kept across the restart");
    assert_eq!(answers(&gateway, &opaque).await, StatusCode::UNAUTHORIZED);
    let forged = TestIssuer::new(&provider.issuer());
    let mut claims = forged.claims(OpenIdProvider::RESOURCE);
    claims["client_id"] = json!(app_client.0);
    assert_eq!(answers(&gateway, &forged.sign(&claims)).await, StatusCode::UNAUTHORIZED, "a key the provider never published");

    // Back, and the mapping removed: the client's tokens are refused.
    provider.restart_signing_with(&["key-2", "key-1"]);
    let reply = cp.call(Method::DELETE, &map, Some(&admin), None).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text());
    eventually("the unmapped client's tokens refused", Duration::from_secs(5), async || {
        answers(&gateway, &rotated).await == StatusCode::UNAUTHORIZED
    })
    .await;
}

/// The control plane's database over TLS (every pattern on PostgreSQL, and the other
/// region's database in active-active): a server that takes TLS connections only, reached
/// with `sslmode=verify-full` and its CA. Without TLS the server refuses; a server the CA
/// given does not vouch for is refused.
#[tokio::test]
async fn the_control_plane_reaches_postgresql_over_verified_tls() {
    let server = PostgresTlsServer::start();
    let data = tempfile::tempdir().unwrap();
    let control_plane = start_control_plane_with(data.path(), 0, &["--database-url", &server.url("verify-full")], &[]);
    let cp = ControlPlaneClient::new(control_plane.control_plane.unwrap());
    let admin = cp.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(cp.call(Method::GET, "/api/v1/apis", Some(&admin), None).await.status, StatusCode::OK);
    drop(control_plane);

    let other = TestCertificate::generate(data.path());
    let another_ca = server.url("verify-full").replace(server.certificate.cert.to_str().unwrap(), other.cert.to_str().unwrap());
    for (url, refusal) in [(server.url("disable"), "pg_hba.conf"), (another_ca, "certificate")] {
        let output = std::process::Command::new(portico_tests::portico_binary())
            .args(["control-plane", "--api", "127.0.0.1:0", "--database-url", &url, "--data-dir"])
            .arg(data.path())
            .env("PORTICO_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && stderr.to_lowercase().contains(refusal), "{url}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pattern_1_two_all_in_one_nodes_on_postgres() {
    let database = portico_control_plane::test_support::fresh_postgres_database().await;
    let upstream = MockUpstream::start().await;
    let client = HttpClient::default();
    // Both nodes share one issuer URL, as they would behind a load balancer.
    let public_url = "http://portico.example";
    // And one sealing key: the database's secrets are sealed with it.
    let sealing_key = portico_control_plane::secrets::SealingKey::generate_hex();
    let node = |name: &str| {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data").display().to_string();
        PorticoProcess::spawn(
            dir,
            &[
                "all-in-one",
                "--data-dir",
                &data,
                "--database-url",
                &database,
                "--public-url",
                public_url,
                "--gateway",
                "127.0.0.1:0",
                "--api",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                "--gateway-id",
                name,
            ],
            &[("PORTICO_ADMIN_PASSWORD", ADMIN_PASSWORD), ("PORTICO_SECRETS_KEY", &sealing_key)],
        )
        .unwrap()
    };
    let first = node("node-1");
    let second = node("node-2");
    let cp1 = ControlPlaneClient::new(first.control_plane.unwrap());
    let cp2 = ControlPlaneClient::new(second.control_plane.unwrap());
    let admin = cp1.login("admin", ADMIN_PASSWORD).await;
    cp1.allow_loopback_upstreams(&admin).await;

    // Published and deployed on node 1: served by node 2's gateway too.
    let api = cp1.ok(Method::POST, "/api/v1/apis", Some(&admin), json!({"name": "shared", "version": "v1", "context": "/shared", "endpoints": [upstream.url()], "operations": [{"method": "GET", "path": "/x"}], "tiers": ["Unlimited"]})).await;
    let api = api["id"].as_str().unwrap().to_owned();
    cp1.ok(Method::POST, &format!("/api/v1/apis/{api}/lifecycle"), Some(&admin), json!({"action": "publish"})).await;
    let ApiKey { app, id: key_id, key } = cp1.subscribed_key(&admin, "both", &api).await;
    let revision = cp1.ok(Method::POST, &format!("/api/v1/apis/{api}/revisions"), Some(&admin), json!({})).await;
    cp1.ok(
        Method::POST,
        &format!("/api/v1/apis/{api}/deployments"),
        Some(&admin),
        json!({"revision_id": revision["id"], "environments": ["default"]}),
    )
    .await;
    // The first deployment also compiles the built-in policies on each node; the revocation
    // below is the pure push, bounded at 1 s (the periodic rebuild alone would take 30 s).
    let took = eventually("the deployment served by both nodes", Duration::from_secs(5), async || {
        every_node_answers(&client, [&first, &second], &key, StatusCode::OK).await
    })
    .await;
    println!("deployment on node 1 served by both nodes after {took:?}");
    let rollout = cp2.ok(Method::GET, "/api/v1/environments/default/rollout?wait_ms=3000", Some(&admin), Value::Null).await;
    assert_eq!(rollout["done"], true, "{rollout}");
    assert_eq!(rollout["gateways"].as_array().unwrap().len(), 2, "{rollout}");

    // Revoked on node 2: refused by both nodes, within milliseconds when the machine is idle
    // (printed); the bound leaves room for a loaded CI machine.
    let reply = cp2.call(Method::DELETE, &format!("/api/v1/applications/{app}/api-keys/{key_id}"), Some(&admin), None).await;
    assert!(reply.status.is_success(), "{}", reply.text());
    let took = eventually("the revoked key refused by both nodes", Duration::from_secs(5), async || {
        every_node_answers(&client, [&first, &second], &key, StatusCode::UNAUTHORIZED).await
    })
    .await;
    println!("key revoked on node 2 refused by both nodes after {took:?}");
}

/// Whether every node answers `GET /shared/v1/x` with `key` by `status`.
async fn every_node_answers(client: &HttpClient, nodes: [&PorticoProcess; 2], key: &str, status: StatusCode) -> bool {
    for node in nodes {
        if client.get(&node.url("/shared/v1/x"), &[("apikey", key)]).await.unwrap().status != status {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_gateway_takes_its_tls_listener_and_limits_from_its_own_settings() {
    let data = tempfile::tempdir().unwrap();
    let control_plane = start_control_plane(data.path(), 0);
    let cp = ControlPlaneClient::new(control_plane.control_plane.unwrap());
    let admin = cp.login("admin", ADMIN_PASSWORD).await;
    cp.allow_loopback_upstreams(&admin).await;
    let token = cp.ok(Method::POST, "/api/v1/environments/default/gateway-tokens", Some(&admin), json!({"description": "tls"})).await;
    let dir = tempfile::tempdir().unwrap();
    let certificate = TestCertificate::generate(dir.path());
    let yaml = "listeners:\n  - address: 127.0.0.1:0\n    tls:\n      certificates:\n        - {cert: server.pem, key: server.key}\nlimits:\n  max_headers: 20\n";
    let control_plane_url = format!("http://{}", control_plane.control_plane.unwrap());
    let gateway = start_gateway_with_settings(dir, yaml, &control_plane_url, &[], token["token"].as_str().unwrap(), "snapshot applied");
    // TLS, with the certificate its settings name (relative to the settings file): nothing
    // is deployed, so the gateway itself answers 404.
    let (_, (status, _)) = tls_get(gateway.listeners[0], &certificate.der, b"http/1.1", "/nothing", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Its own limits: 30 headers are more than the 20 it allows.
    let names: Vec<String> = (0..30).map(|i| format!("x-h{i}")).collect();
    let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    let (_, (status, _)) = tls_get(gateway.listeners[0], &certificate.der, b"http/1.1", "/nothing", &headers).await;
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
}

/// An API a gateway cannot load (here, an attachment over that gateway's own ceiling)
/// answers 503 there, while the rest of its environment is served and later changes still
/// arrive; the control plane shows the failure on its gateway list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_a_gateway_cannot_load_fails_alone() {
    let upstream = MockUpstream::start().await;
    let client = HttpClient::default();
    let data = tempfile::tempdir().unwrap();
    let control_plane = start_control_plane(data.path(), 0);
    let cp = ControlPlaneClient::new(control_plane.control_plane.unwrap());
    let admin = cp.login("admin", ADMIN_PASSWORD).await;
    cp.allow_loopback_upstreams(&admin).await;
    // The control plane allows a policy 1 s (its default); the gateway below, 200 ms.
    let mut apis = Vec::new();
    for (name, timeout) in [("fine", "50ms"), ("greedy", "500ms")] {
        let definition = json!({"name": name, "version": "v1", "context": format!("/{name}"), "endpoints": [upstream.url()],
            "operations": [{"method": "GET", "path": "/hello"}], "policies": [{"policy": "headers", "config": {}, "timeout": timeout}],
            "tiers": ["Unlimited"]});
        apis.push(cp.deployed_api(&admin, definition).await);
    }
    let ApiKey { app, id: key_id, key } = cp.subscribed_key(&admin, "both", &apis[0]).await;
    let subscription = json!({"api_id": apis[1], "tier": "Unlimited"});
    cp.ok(Method::POST, &format!("/api/v1/applications/{app}/subscriptions"), Some(&admin), subscription).await;

    let token = cp.ok(Method::POST, "/api/v1/environments/default/gateway-tokens", Some(&admin), json!({})).await;
    let yaml = "listeners:\n  - address: 127.0.0.1:0\nlimits:\n  max_policy_timeout: 200ms\n";
    let control_plane_url = format!("http://{}", control_plane.control_plane.unwrap());
    let token = token["token"].as_str().unwrap();
    let gateway = start_gateway_with_settings(tempfile::tempdir().unwrap(), yaml, &control_plane_url, &[], token, "snapshot applied");

    let fine = client.get(&gateway.url("/fine/v1/hello"), &[("apikey", &key)]).await.unwrap();
    assert_eq!(fine.status, StatusCode::OK, "{}", fine.text());
    let greedy = client.get(&gateway.url("/greedy/v1/hello"), &[("apikey", &key)]).await.unwrap();
    assert_eq!(greedy.status, StatusCode::SERVICE_UNAVAILABLE, "{}", greedy.text());
    assert_eq!(greedy.header("content-type"), Some("application/problem+json"));
    assert!(greedy.text().contains("unavailable on this gateway"), "{}", greedy.text());

    // "snapshot applied" is logged before the acknowledgement reaches the control plane.
    rolled_out(&cp, &admin, 1).await;
    let listed = cp.ok(Method::GET, "/api/v1/gateways", Some(&admin), Value::Null).await;
    let failed = &listed[0]["failed_apis"];
    assert_eq!(failed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!((failed[0]["name"].as_str(), failed[0]["version"].as_str()), (Some("greedy"), Some("v1")), "{listed}");
    let problem = failed[0]["problems"][0].as_str().unwrap();
    assert!(problem.contains(".timeout") && problem.contains("ceiling of 200ms"), "{problem}");
    assert_eq!(listed[0]["in_sync"], true, "the snapshot was applied, one API short: {listed}");

    // Later changes still reach the gateway: a revoked key is refused within 1 s.
    let reply = cp.call(Method::DELETE, &format!("/api/v1/applications/{app}/api-keys/{key_id}"), Some(&admin), None).await;
    assert!(reply.status.is_success(), "{}", reply.text());
    let took = eventually("the revoked key refused", Duration::from_secs(1), async || {
        client.get(&gateway.url("/fine/v1/hello"), &[("apikey", &key)]).await.unwrap().status == StatusCode::UNAUTHORIZED
    })
    .await;
    println!("revoked key refused after {took:?}, next to an API the gateway could not load");
}

/// Pattern 2 over TLS: the control plane serves HTTPS, the gateway follows it over
/// `https://` trusting its certificate and serves HTTPS itself; a gateway that does not
/// trust the control plane's certificate gets nothing from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pattern_2_over_tls_and_an_untrusted_control_plane_refused() {
    let dir = tempfile::tempdir().unwrap();
    let certificate = TestCertificate::generate(dir.path());
    let upstream = MockUpstream::start_tls(&certificate).await;
    let certificate_pem = std::fs::read_to_string(&certificate.cert).unwrap();
    // Gateways also present a client certificate (its own CA here): mutual TLS on the fleet link.
    let client_dir = tempfile::tempdir().unwrap();
    let client = TestCertificate::generate(client_dir.path());
    let data = tempfile::tempdir().unwrap();
    let (cert, key, client_ca) =
        (certificate.cert.display().to_string(), certificate.key.display().to_string(), client.cert.display().to_string());
    let control_plane =
        start_control_plane_with(data.path(), 0, &["--tls-cert", &cert, "--tls-key", &key, "--fleet-client-ca", &client_ca], &[]);
    let address = control_plane.control_plane.unwrap();
    let cp = ControlPlaneClient::https(address, &certificate.der);
    let admin = cp.login("admin", ADMIN_PASSWORD).await;
    cp.allow_loopback_upstreams(&admin).await;
    let plain = HttpClient::default().get(&format!("http://{address}/api/v1/openapi.json"), &[]).await;
    assert!(plain.is_err() || plain.unwrap().status != StatusCode::OK, "the control plane does not answer plain HTTP");

    // The upstream speaks https: one API trusts its certificate, one leaves it to the
    // gateway's system roots (which do not know it).
    let bad_ca = cp
        .call(
            Method::POST,
            "/api/v1/apis",
            Some(&admin),
            Some(json!({"name": "x", "version": "v1", "context": "/x", "endpoints": [upstream.url()], "endpoint_ca": "not PEM"})),
        )
        .await;
    assert_eq!((bad_ca.status, bad_ca.json()["field"].as_str()), (StatusCode::BAD_REQUEST, Some("endpoint_ca")), "{}", bad_ca.text());
    // Another asks its clients for a certificate (mutual TLS): one API presents one, one
    // does not.
    let upstream_client_dir = tempfile::tempdir().unwrap();
    let upstream_client = TestCertificate::generate(upstream_client_dir.path());
    let mutual = MockUpstream::start_tls_for_clients_of(&certificate, &upstream_client).await;
    let presented = json!({"certificate": std::fs::read_to_string(&upstream_client.cert).unwrap(),
        "key": std::fs::read_to_string(&upstream_client.key).unwrap()});
    let mut apis = Vec::new();
    for (name, ca, endpoint, client_certificate) in [
        ("secure", Some(certificate_pem.as_str()), upstream.url(), Value::Null),
        ("unverified", None, upstream.url(), Value::Null),
        ("mutual", Some(certificate_pem.as_str()), mutual.url(), presented),
        ("anonymous", Some(certificate_pem.as_str()), mutual.url(), Value::Null),
    ] {
        let definition = json!({"name": name, "version": "v1", "context": format!("/{name}"), "endpoints": [endpoint],
            "endpoint_ca": ca, "endpoint_client_certificate": client_certificate,
            "operations": [{"method": "GET", "path": "/hello"}], "tiers": ["Unlimited"]});
        apis.push(cp.deployed_api(&admin, definition).await);
    }
    let ApiKey { app, id: key_id, key } = cp.subscribed_key(&admin, "secure-app", &apis[0]).await;
    for api in &apis[1..] {
        let subscription = json!({"api_id": api, "tier": "Unlimited"});
        cp.ok(Method::POST, &format!("/api/v1/applications/{app}/subscriptions"), Some(&admin), subscription).await;
    }
    let token = cp.ok(Method::POST, "/api/v1/environments/default/gateway-tokens", Some(&admin), json!({})).await;
    let token = token["token"].as_str().unwrap().to_owned();

    let (client_cert, client_key) = (client.cert.display().to_string(), client.key.display().to_string());
    let gateway = |ca: &Path, certified: bool| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(&certificate.cert, dir.path().join("server.pem")).unwrap();
        std::fs::copy(&certificate.key, dir.path().join("server.key")).unwrap();
        let yaml = "listeners:\n  - address: 127.0.0.1:0\n    tls:\n      certificates:\n        - {cert: server.pem, key: server.key}\n";
        let ca = ca.display().to_string();
        let mut extra = vec!["--control-plane-ca", ca.as_str()];
        if certified {
            extra.extend(["--client-cert", client_cert.as_str(), "--client-key", client_key.as_str()]);
        }
        start_gateway_with_settings(dir, yaml, &format!("https://{address}"), &extra, &token, "listening")
    };
    // One trusts the control plane's certificate (pinned); another trusts another one; a
    // third trusts it but presents no client certificate.
    let trusting = gateway(&certificate.cert, true);
    let elsewhere = tempfile::tempdir().unwrap();
    let stranger = gateway(&TestCertificate::generate(elsewhere.path()).cert, true);
    let uncertified = gateway(&certificate.cert, false);

    assert!(trusting.wait_for_log("snapshot applied", Duration::from_secs(10)), "{}", trusting.logs().join("\n"));
    let (_, (status, body)) = tls_get(trusting.listeners[0], &certificate.der, b"h2", "/secure/v1/hello", &[("apikey", &key)]).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let echoed: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echoed["path"], "/hello", "the https upstream answered");
    let (_, (status, body)) = tls_get(trusting.listeners[0], &certificate.der, b"h2", "/unverified/v1/hello", &[("apikey", &key)]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "an upstream certificate nobody vouches for: {}", String::from_utf8_lossy(&body));
    assert!(trusting.wait_for_log("invalid peer certificate", Duration::from_secs(5)), "{}", trusting.logs().join("\n"));
    let (_, (status, body)) = tls_get(trusting.listeners[0], &certificate.der, b"h2", "/mutual/v1/hello", &[("apikey", &key)]).await;
    assert_eq!(status, StatusCode::OK, "the API's client certificate opens the mutual-TLS upstream: {}", String::from_utf8_lossy(&body));
    assert_eq!(mutual.received(), ["/hello"]);
    let (_, (status, body)) = tls_get(trusting.listeners[0], &certificate.der, b"h2", "/anonymous/v1/hello", &[("apikey", &key)]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "no client certificate, no upstream: {}", String::from_utf8_lossy(&body));
    assert_eq!(mutual.received(), ["/hello"], "the upstream served nobody without a certificate");

    // Revocation travels the TLS link within 1 s.
    let reply = cp.call(Method::DELETE, &format!("/api/v1/applications/{app}/api-keys/{key_id}"), Some(&admin), None).await;
    assert!(reply.status.is_success(), "{}", reply.text());
    let took = eventually("the revoked key refused over TLS", Duration::from_secs(1), async || {
        tls_get(trusting.listeners[0], &certificate.der, b"http/1.1", "/secure/v1/hello", &[("apikey", &key)]).await.1.0
            == StatusCode::UNAUTHORIZED
    })
    .await;
    println!("revoked key refused after {took:?} over an https fleet link");

    assert!(stranger.wait_for_log("invalid peer certificate", Duration::from_secs(10)), "{}", stranger.logs().join("\n"));
    assert_eq!(stranger.count_logs("snapshot applied"), 0, "{}", stranger.logs().join("\n"));
    assert!(
        uncertified.wait_for_log("requires gateways to present a client certificate", Duration::from_secs(10)),
        "{}",
        uncertified.logs().join("\n")
    );
    assert_eq!(uncertified.count_logs("snapshot applied"), 0, "{}", uncertified.logs().join("\n"));
    let listed = cp.ok(Method::GET, "/api/v1/gateways", Some(&admin), Value::Null).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "only the trusting, certified gateway reached the control plane: {listed}");
}

/// RELIABILITY #8: the control plane is killed with SIGKILL in the middle of publishing
/// (saves, revisions, deployments in a loop), five times, on each engine. After each kill
/// the database is whole (SQLite's integrity check, no deployment of a missing revision,
/// every revision readable); after the last restart a gateway converges on what the
/// database says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_control_plane_mid_publish_leaves_a_whole_sqlite_database() {
    killed_mid_publish(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_control_plane_mid_publish_leaves_a_whole_postgresql_database() {
    killed_mid_publish(Some(portico_control_plane::test_support::fresh_postgres_database().await)).await;
}

async fn killed_mid_publish(database_url: Option<String>) {
    let upstream = MockUpstream::start().await;
    let data = tempfile::tempdir().unwrap();
    let mut control_plane = start_control_plane_on(data.path(), 0, database_url.as_deref());
    let port = control_plane.control_plane.unwrap().port();
    let cp = ControlPlaneClient::new(control_plane.control_plane.unwrap());
    let admin = cp.login("admin", ADMIN_PASSWORD).await;
    cp.allow_loopback_upstreams(&admin).await;
    let endpoint = upstream.url();
    let definition = Arc::new(move |i: usize| {
        json!({"name": "churn", "version": "v1", "context": "/churn", "endpoints": [endpoint], "description": format!("round {i}"),
            "operations": [{"method": "GET", "path": "/x"}], "tiers": ["Unlimited"]})
    });
    let api = cp.ok(Method::POST, "/api/v1/apis", Some(&admin), definition(0)).await;
    let api = api["id"].as_str().unwrap().to_owned();
    cp.ok(Method::POST, &format!("/api/v1/apis/{api}/lifecycle"), Some(&admin), json!({"action": "publish"})).await;

    let mut published = 0;
    for round in 0..5u64 {
        let cp = ControlPlaneClient::new(control_plane.control_plane.unwrap());
        let admin = cp.login("admin", ADMIN_PASSWORD).await;
        let (api, stop) = (api.clone(), Arc::new(AtomicBool::new(false)));
        let churn = {
            let (stop, definition) = (stop.clone(), definition.clone());
            tokio::spawn(async move {
                // A killed control plane is an error here, not a panic: the loop just ends.
                let bearer = format!("Bearer {admin}");
                let call = async |method: Method, path: String, body: Option<Value>| {
                    let headers = [("content-type", "application/json"), ("authorization", bearer.as_str())];
                    let body = body.map(|b| b.to_string()).unwrap_or_default();
                    cp.client.send(method, &format!("{}{path}", cp.base), &headers, body).await.ok().filter(|r| r.status.as_u16() < 500)
                };
                let mut done = 0;
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Some(saved) = call(Method::PUT, format!("/api/v1/apis/{api}"), Some(definition(i))).await else { break };
                    assert!(saved.status.is_success(), "{}", saved.text());
                    let Some(revision) = call(Method::POST, format!("/api/v1/apis/{api}/revisions"), Some(json!({}))).await else { break };
                    if revision.status == StatusCode::CONFLICT {
                        // At most 20 revisions: make room by deleting undeployed ones.
                        let Some(list) = call(Method::GET, format!("/api/v1/apis/{api}/revisions"), None).await else { break };
                        for old in
                            list.json().as_array().into_iter().flatten().filter(|r| r["environments"].as_array().is_some_and(Vec::is_empty))
                        {
                            let id = old["id"].as_str().unwrap_or_default().to_owned();
                            call(Method::DELETE, format!("/api/v1/apis/{api}/revisions/{id}"), None).await;
                        }
                        continue;
                    }
                    let deploy = json!({"revision_id": revision.json()["id"], "environments": ["default"]});
                    let Some(deployed) = call(Method::POST, format!("/api/v1/apis/{api}/deployments"), Some(deploy)).await else { break };
                    assert!(deployed.status.is_success(), "{}", deployed.text());
                    done += 1;
                }
                done
            })
        };
        // Kill it at a moment that moves from round to round.
        tokio::time::sleep(Duration::from_millis(300 + 170 * round)).await;
        control_plane.kill();
        stop.store(true, Ordering::Relaxed);
        published += churn.await.unwrap();

        let sealing = portico_control_plane::secrets::SealingKey::from_file_or_new(&data.path().join("secrets.key")).unwrap();
        let url = database_url.clone().unwrap_or_else(|| format!("sqlite://{}/portico.db", data.path().display()));
        let db = portico_control_plane::db::Db::connect(&url, sealing).await.unwrap();
        if database_url.is_none() {
            let integrity: String = sqlx::query_scalar("PRAGMA integrity_check").fetch_one(&db.pool).await.unwrap();
            assert_eq!(integrity, "ok", "round {round}");
        }
        let dangling: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM deployments d LEFT JOIN revisions r ON r.id = d.revision_id WHERE r.id IS NULL")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!(dangling, 0, "round {round}: a deployment of a missing revision");
        let contents: Vec<String> = sqlx::query_scalar("SELECT content FROM revisions").fetch_all(&db.pool).await.unwrap();
        for content in &contents {
            let parsed: Value = serde_json::from_str(content).expect("a whole revision");
            assert_eq!(parsed["name"], "churn", "round {round}");
        }
        db.pool.close().await;
        control_plane = start_control_plane_on(data.path(), port, database_url.as_deref());
    }
    let engine = if database_url.is_some() { "PostgreSQL" } else { "SQLite" };
    println!("5 kills in the middle of publishing on {engine} ({published} deployments made): the database was whole each time");

    // The last state converges at a gateway.
    let cp = ControlPlaneClient::new(control_plane.control_plane.unwrap());
    let admin = cp.login("admin", ADMIN_PASSWORD).await;
    cp.allow_loopback_upstreams(&admin).await;
    let token = cp.ok(Method::POST, "/api/v1/environments/default/gateway-tokens", Some(&admin), json!({})).await;
    let cache = tempfile::tempdir().unwrap();
    let _gateway = start_gateway(&format!("http://127.0.0.1:{port}"), token["token"].as_str().unwrap(), cache.path(), "snapshot applied");
    let (took, _) = rolled_out(&cp, &admin, 1).await;
    println!("a gateway converged on the last deployment after {took:?}");
}

/// RELIABILITY #16 on the control plane: a connection that sends nothing, one that stops
/// inside HTTP/2's preface and one whose request head never ends are each cut once their
/// 10 s are up, and other clients are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_cuts_silent_and_slow_connections() {
    use tokio::io::AsyncWriteExt;
    let data = tempfile::tempdir().unwrap();
    let control_plane = start_control_plane(data.path(), 0);
    let address = control_plane.control_plane.unwrap();
    let bound = Duration::from_secs(30);
    let opened = async |first: &'static [u8]| {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.write_all(first).await.unwrap();
        until_closed(&mut stream, bound).await.0
    };
    let served = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        ControlPlaneClient::new(address).login("admin", ADMIN_PASSWORD).await
    };
    let (silent, preface, head, _) =
        tokio::join!(opened(b""), opened(b"PRI * HTTP/2.0\r\n"), opened(b"GET /api/v1/apis HTTP/1.1\r\nHost: x\r\nX-Slow: "), served);
    let cuts = [("silent", silent), ("half a preface", preface), ("slow head", head)];
    println!("control plane cut: {cuts:?} (limit 10 s)");
    for (what, cut) in cuts {
        assert!(cut.is_some(), "{what}: still open after {bound:?}");
    }
}

/// A control plane that sends what the test pushes and checks nothing: the first event of
/// every stream is `first`, then each pushed event; acknowledgements are recorded.
struct FakeControlPlane {
    url: String,
    first: Arc<Mutex<String>>,
    push: tokio::sync::broadcast::Sender<String>,
    acks: Arc<Mutex<Vec<Value>>>,
    streams: Arc<AtomicUsize>,
}

/// A response body fed by a channel.
struct ChannelBody(tokio::sync::mpsc::Receiver<bytes::Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|bytes| Ok(hyper::body::Frame::data(bytes))))
    }
}

impl FakeControlPlane {
    async fn start(first: String) -> Self {
        use http_body_util::BodyExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (push, _) = tokio::sync::broadcast::channel::<String>(16);
        let fake = Self { url, first: Arc::new(Mutex::new(first)), push, acks: Arc::default(), streams: Arc::default() };
        let (first, push, acks, streams) = (fake.first.clone(), fake.push.clone(), fake.acks.clone(), fake.streams.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (first, push, acks, streams) = (first.clone(), push.clone(), acks.clone(), streams.clone());
                let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let (first, push, acks, streams) = (first.clone(), push.clone(), acks.clone(), streams.clone());
                    async move {
                        let (sender, receiver) = tokio::sync::mpsc::channel(16);
                        if request.uri().path() == "/fleet/v1/stream" {
                            streams.fetch_add(1, Ordering::SeqCst);
                            let mut pushed = push.subscribe();
                            let first = first.lock().unwrap().clone();
                            tokio::spawn(async move {
                                let _ = sender.send(bytes::Bytes::from(first)).await;
                                while let Ok(event) = pushed.recv().await {
                                    if sender.send(bytes::Bytes::from(event)).await.is_err() {
                                        return;
                                    }
                                }
                            });
                            return Ok::<_, std::convert::Infallible>(http::Response::new(ChannelBody(receiver)));
                        }
                        let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        if let Ok(ack) = serde_json::from_slice::<Value>(&body) {
                            acks.lock().unwrap().push(ack);
                        }
                        drop(sender);
                        let mut response = http::Response::new(ChannelBody(receiver));
                        *response.status_mut() = StatusCode::NO_CONTENT;
                        Ok(response)
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(tcp), service).await;
                });
            }
        });
        fake
    }

    fn last_ack(&self) -> Value {
        self.acks.lock().unwrap().last().cloned().unwrap_or(Value::Null)
    }
}

/// An environment message for `content`, as a stream event.
fn environment_event(content: &portico_gateway::contract::environment::Environment, version: Option<&str>) -> (String, String) {
    use portico_gateway::contract::fleet::{ENVIRONMENT_EVENT, EnvironmentMessage, PROTOCOL_VERSION, event};
    let version = version.map(str::to_owned).unwrap_or_else(|| content.version());
    let message = EnvironmentMessage {
        protocol: PROTOCOL_VERSION,
        environment: "default".into(),
        version: version.clone(),
        content: content.clone(),
        traceparent: None,
    };
    (version, event(ENVIRONMENT_EVENT, &serde_json::to_string(&message).unwrap()))
}

/// RELIABILITY #7: what a running fleet gateway is sent and cannot take is refused whole,
/// acknowledged as refused, and the last good snapshot keeps serving; revocations that do
/// not apply to what it was sent make it reconnect for the whole environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_a_running_gateway_refuses_leaves_the_last_good_one_serving() {
    use portico_gateway::contract::environment::{Environment, RevokedToken};
    use portico_gateway::contract::fleet::{PROTOCOL_VERSION, REVOCATIONS_EVENT, RevocationsMessage, event};
    let upstream = MockUpstream::start().await;
    let good: Environment = serde_json::from_value(json!({
        "upstream_networks": {"allow": ["127.0.0.1"]},
        "apis": [{"name": "a", "context": "/a", "upstream": {"endpoints": [upstream.url()]}}],
    }))
    .unwrap();
    let (good_version, good_event) = environment_event(&good, None);
    let fake = FakeControlPlane::start(good_event).await;
    let yaml = "listeners:\n  - address: 127.0.0.1:0\n";
    let gateway = start_gateway_with_settings(tempfile::tempdir().unwrap(), yaml, &fake.url, &[], "pgw_fake", "snapshot applied");
    let client = HttpClient::default();
    let serves = async || client.get(&gateway.url("/a/x"), &[]).await.unwrap().status == StatusCode::OK;
    assert!(serves().await);

    // Refused whole: a problem of the environment itself, and a version that lies.
    let mut bad = good.clone();
    bad.upstream_networks.allow = vec!["not-a-network".into()];
    let (bad_version, bad_event) = environment_event(&bad, None);
    let (_, lying_event) = environment_event(&good, Some("0123456789abcdef"));
    for (event, version, reason) in
        [(bad_event, bad_version.as_str(), "upstream_networks"), (lying_event, "0123456789abcdef", "its configuration has version")]
    {
        let before = gateway.count_logs("snapshot refused");
        fake.push.send(event).unwrap();
        eventually("the refusal acknowledged", Duration::from_secs(5), async || fake.last_ack()["refused"]["version"] == version).await;
        let ack = fake.last_ack();
        assert!(ack["refused"]["reason"].as_str().unwrap().contains(reason), "{ack}");
        assert_eq!(ack["running"], good_version.as_str(), "{ack}");
        assert!(gateway.count_logs("snapshot refused") > before);
        assert!(serves().await, "the last good snapshot serves");
    }

    // Revocations for a version the gateway was not sent: it reconnects for the whole.
    let stray = RevocationsMessage {
        protocol: PROTOCOL_VERSION,
        environment: "default".into(),
        base: "ffffffffffffffff".into(),
        version: "eeeeeeeeeeeeeeee".into(),
        revoked: vec![RevokedToken { jti: "j-1".into(), expires_at: u64::MAX }],
        forgotten: Vec::new(),
        revoked_before: Default::default(),
        revoked_api_keys: Vec::new(),
    };
    fake.push.send(event(REVOCATIONS_EVENT, &serde_json::to_string(&stray).unwrap())).unwrap();
    eventually("a new stream", Duration::from_secs(10), async || fake.streams.load(Ordering::SeqCst) >= 2).await;
    assert!(gateway.count_logs("revocations not applicable") >= 1);

    // Revocations for what it runs are taken.
    let mut revoked = good.clone();
    revoked.revoked_tokens.push(RevokedToken { jti: "j-1".into(), expires_at: u64::MAX });
    let (revoked_version, _) = environment_event(&revoked, None);
    let from = portico_gateway::contract::fleet::EnvironmentMessage {
        protocol: PROTOCOL_VERSION,
        environment: "default".into(),
        version: good_version.clone(),
        content: good.clone(),
        traceparent: None,
    };
    let to = portico_gateway::contract::fleet::EnvironmentMessage {
        protocol: PROTOCOL_VERSION,
        environment: "default".into(),
        version: revoked_version.clone(),
        content: revoked,
        traceparent: None,
    };
    let delta = RevocationsMessage::between(&from, &to).expect("revocations only");
    fake.push.send(event(REVOCATIONS_EVENT, &serde_json::to_string(&delta).unwrap())).unwrap();
    eventually("the revocations acknowledged", Duration::from_secs(5), async || fake.last_ack()["running"] == revoked_version.as_str())
        .await;
    assert!(serves().await);
    println!(
        "refused whole twice, reconnected once for stray revocations, took one delta; {} acknowledgements",
        fake.acks.lock().unwrap().len()
    );
}

/// Usage analytics: a known mix of calls through two gateways is counted exactly, per API
/// for its publisher and per application for its owner, each seeing only what is theirs;
/// calls made while the control plane is down reach it once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_analytics_through_two_gateways_are_exact_and_outlast_an_outage() {
    let upstream = MockUpstream::start().await;
    let client = HttpClient::default();
    let data = tempfile::tempdir().unwrap();
    let mut control_plane = start_control_plane(data.path(), 0);
    let port = control_plane.control_plane.unwrap().port();
    let cp_url = format!("http://127.0.0.1:{port}");
    let cp = ControlPlaneClient::new(control_plane.control_plane.unwrap());
    let admin = cp.login("admin", ADMIN_PASSWORD).await;
    cp.allow_loopback_upstreams(&admin).await;
    let mut sessions = Vec::new();
    for (name, role) in [("pat", "publisher"), ("quinn", "publisher"), ("sam", "subscriber"), ("tess", "subscriber")] {
        let password = format!("{name}-password-1");
        cp.ok(Method::POST, "/api/v1/users", Some(&admin), json!({"username": name, "password": password, "role": role})).await;
        sessions.push(cp.login(name, &password).await);
    }
    let [pat, quinn, sam, tess] = <[String; 4]>::try_from(sessions).unwrap();
    let api = cp
        .deployed_api(
            &pat,
            json!({"name": "shop", "version": "v1", "context": "/shop", "endpoints": [upstream.url()],
            "operations": [{"method": "GET", "path": "/items"}, {"method": "GET", "path": "/status/{code}"}], "tiers": ["Unlimited"]}),
        )
        .await;
    let a = cp.subscribed_key(&sam, "sams-app", &api).await;
    let b = cp.subscribed_key(&tess, "tess-app", &api).await;
    let token = cp.ok(Method::POST, "/api/v1/environments/default/gateway-tokens", Some(&admin), json!({"description": "analytics"})).await;
    let token = token["token"].as_str().unwrap();
    let yaml = "listeners: [{address: 127.0.0.1:0}]\nadmin: {address: 127.0.0.1:0}\nanalytics: {report_every: 200ms}\n";
    let gateways = [
        start_gateway_with_settings(tempfile::tempdir().unwrap(), yaml, &cp_url, &[], token, "snapshot applied"),
        start_gateway_with_settings(tempfile::tempdir().unwrap(), yaml, &cp_url, &[], token, "snapshot applied"),
    ];
    rolled_out(&cp, &admin, 2).await;

    // The mix: (gateway, key, path, status expected, times).
    let mix = [
        (0, Some(&a.key), "/shop/v1/items", 200, 3),
        (0, Some(&a.key), "/shop/v1/status/500", 500, 2),
        (0, Some(&b.key), "/shop/v1/status/404", 404, 1),
        (1, Some(&a.key), "/shop/v1/items", 200, 2),
        (1, Some(&b.key), "/shop/v1/items", 200, 4),
        (1, None, "/shop/v1/items", 401, 3),
    ];
    for (gateway, key, path, status, times) in mix {
        for _ in 0..times {
            let headers: Vec<(&str, &str)> = key.iter().map(|key| ("apikey", key.as_str())).collect();
            let reply = client.get(&gateways[gateway].url(path), &headers).await.unwrap();
            assert_eq!(reply.status.as_u16(), status, "{path}: {}", reply.text());
        }
    }
    let api_usage = format!("/api/v1/analytics/apis/{api}?interval=minute");
    let requests_of =
        async |path: &str, session: &str| cp.ok(Method::GET, path, Some(session), Value::Null).await["totals"]["requests"].clone();
    eventually("both gateways' reports", Duration::from_secs(10), async || requests_of(&api_usage, &pat).await == 15).await;
    // Reports are sent every 200 ms: a report counted twice would show by now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let usage = cp.ok(Method::GET, &api_usage, Some(&pat), Value::Null).await;
    let totals = &usage["totals"];
    assert_eq!((&totals["requests"], &totals["errors"]), (&json!(15), &json!(6)), "{usage}");
    assert_eq!(totals["classes"], json!({"2xx": 9, "4xx": 4, "5xx": 2}), "{usage}");
    let bucketed: u64 = totals["latency_buckets"].as_array().unwrap().iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(bucketed, 15, "{usage}");
    let points: u64 = usage["series"].as_array().unwrap().iter().map(|p| p["requests"].as_u64().unwrap()).sum();
    assert_eq!(points, 15, "{usage}");
    let breakdown: Vec<(String, Value, Value)> = usage["breakdown"]
        .as_array()
        .unwrap()
        .iter()
        .map(|part| (part["operation"].as_str().unwrap().to_owned(), part["application_name"].clone(), part["classes"].clone()))
        .collect();
    assert_eq!(
        breakdown,
        [
            ("GET /items".to_owned(), json!("sams-app"), json!({"2xx": 5})),
            ("GET /items".to_owned(), json!("tess-app"), json!({"2xx": 4})),
            ("GET /items".to_owned(), Value::Null, json!({"4xx": 3})),
            ("GET /status/{code}".to_owned(), json!("sams-app"), json!({"5xx": 2})),
            ("GET /status/{code}".to_owned(), json!("tess-app"), json!({"4xx": 1})),
        ],
        "{usage}"
    );
    assert_eq!(usage["dropped_by_gateways"], 0);
    let own = |app: &str| format!("/api/v1/analytics/applications/{app}");
    let sams = cp.ok(Method::GET, &own(&a.app), Some(&sam), Value::Null).await;
    assert_eq!((&sams["totals"]["requests"], &sams["totals"]["classes"]), (&json!(7), &json!({"2xx": 5, "5xx": 2})), "{sams}");
    let tess_usage = cp.ok(Method::GET, &own(&b.app), Some(&tess), Value::Null).await;
    assert_eq!(tess_usage["totals"]["classes"], json!({"2xx": 4, "4xx": 1}), "{tess_usage}");
    assert_eq!(cp.ok(Method::GET, &api_usage, Some(&admin), Value::Null).await["totals"]["requests"], 15);

    // Each sees only what is theirs.
    for (path, session, status) in [
        (api_usage.as_str(), &quinn, StatusCode::NOT_FOUND),
        (api_usage.as_str(), &sam, StatusCode::FORBIDDEN),
        (own(&a.app).as_str(), &tess, StatusCode::NOT_FOUND),
        (own(&a.app).as_str(), &pat, StatusCode::FORBIDDEN),
    ] {
        let reply = cp.call(Method::GET, path, Some(session), None).await;
        assert_eq!(reply.status, status, "{path}: {}", reply.text());
    }
    let reply = cp.call(Method::GET, &format!("/api/v1/analytics/apis/{api}?interval=week"), Some(&pat), None).await;
    assert_eq!((reply.status, reply.json()["field"].as_str()), (StatusCode::BAD_REQUEST, Some("interval")), "{}", reply.text());
    let reply = cp.call(Method::GET, &format!("/api/v1/analytics/apis/{api}?from=100&to=100"), Some(&pat), None).await;
    assert_eq!((reply.status, reply.json()["field"].as_str()), (StatusCode::BAD_REQUEST, Some("from")), "{}", reply.text());

    // The control plane goes away: calls go on, and their tallies wait at the gateway.
    control_plane.kill();
    for _ in 0..2 {
        let reply = client.get(&gateways[0].url("/shop/v1/items"), &[("apikey", &a.key)]).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
    }
    assert!(gateways[0].wait_for_log("usage analytics not taken; kept to send again", Duration::from_secs(10)), "{:?}", gateways[0].logs());
    let _control_plane = start_control_plane(data.path(), port);
    eventually("the kept report", Duration::from_secs(10), async || requests_of(&own(&a.app), &sam).await == 9).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(requests_of(&api_usage, &pat).await, 17);
    assert_eq!(requests_of(&own(&a.app), &sam).await, 9);
}

/// Traces across the fleet link: a deploy traced by its caller is a span of the control
/// plane, and a gateway that traces records applying the snapshot it made as a child of
/// that span, even at a sampling ratio of 0 (the deploy's trace was sampled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_s_trace_continues_in_the_gateway_that_applies_it() {
    let upstream = MockUpstream::start().await;
    let receiver = OtlpReceiver::start().await;
    let client = HttpClient::default();
    let data = tempfile::tempdir().unwrap();
    let batches = ("OTEL_BSP_SCHEDULE_DELAY", "100");
    let control_plane = start_control_plane_with(data.path(), 0, &["--traces-endpoint", &receiver.endpoint()], &[batches]);
    let cp_url = format!("http://{}", control_plane.control_plane.unwrap());
    let cp = ControlPlaneClient::new(control_plane.control_plane.unwrap());
    let admin = cp.login("admin", ADMIN_PASSWORD).await;
    cp.allow_loopback_upstreams(&admin).await;
    let token = cp.ok(Method::POST, "/api/v1/environments/default/gateway-tokens", Some(&admin), json!({"description": "traced"})).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("gateway.yaml");
    let yaml = format!("listeners: [{{address: 127.0.0.1:0}}]\ntraces: {{endpoint: '{}', sampling_ratio: 0}}\n", receiver.endpoint());
    std::fs::write(&settings, yaml).unwrap();
    let (cache, settings) = (dir.path().join("cache").display().to_string(), settings.display().to_string());
    let gateway = PorticoProcess::spawn_until(
        dir,
        &["gateway", "--control-plane", &cp_url, "--cache-dir", &cache, "--settings", &settings],
        &[("PORTICO_GATEWAY_TOKEN", token["token"].as_str().unwrap()), batches],
        &["snapshot applied"],
    )
    .unwrap();

    let api = cp
        .ok(Method::POST, "/api/v1/apis", Some(&admin), json!({"name": "traced", "version": "v1", "context": "/traced", "endpoints": [upstream.url()], "operations": [{"method": "GET", "path": "/x"}]}))
        .await;
    let api = api["id"].as_str().unwrap();
    cp.ok(Method::POST, &format!("/api/v1/apis/{api}/lifecycle"), Some(&admin), json!({"action": "publish"})).await;
    let revision = cp.ok(Method::POST, &format!("/api/v1/apis/{api}/revisions"), Some(&admin), json!({})).await;
    let (trace, parent) = ("7bf92f3577b34da6a3ce929d0e0e4736", "20f067aa0ba902b7");
    let traceparent = format!("00-{trace}-{parent}-01");
    let deploy = json!({"revision_id": revision["id"], "environments": ["default"]});
    let headers = [("authorization", format!("Bearer {admin}")), ("content-type", "application/json".into()), ("traceparent", traceparent)];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(name, value)| (*name, value.as_str())).collect();
    let reply = client
        .send(Method::POST, &format!("{cp_url}/api/v1/apis/{api}/deployments?wait_ms=5000"), &headers, deploy.to_string())
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());

    eventually("the deploy's and the gateway's spans", Duration::from_secs(10), async || {
        receiver.spans().iter().filter(|s| s.trace_id == trace).count() >= 2
    })
    .await;
    let spans: Vec<_> = receiver.spans().into_iter().filter(|s| s.trace_id == trace).collect();
    let deployed = spans.iter().find(|s| s.kind == "SERVER").unwrap();
    assert_eq!(
        (deployed.service.as_str(), deployed.name.as_str()),
        ("portico-control-plane", "POST /api/v1/apis/{id}/deployments"),
        "{spans:#?}"
    );
    assert_eq!((deployed.parent_span_id.as_str(), deployed.attributes["http.response.status_code"].as_str()), (parent, "201"));
    let applied = spans.iter().find(|s| s.name == "apply snapshot").unwrap();
    assert_eq!((applied.service.as_str(), applied.parent_span_id.as_str()), ("portico-gateway", deployed.span_id.as_str()), "{spans:#?}");
    assert_eq!(applied.attributes["portico.outcome"], "applied");
    assert_eq!(applied.attributes["portico.environment"], "default");
    // Its own requests are not recorded at a ratio of 0 (the gateway started their traces).
    let reply = client.get(&gateway.url("/traced/v1/x"), &[]).await.unwrap();
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    // The control plane records its own requests (a ratio of 1 by default): the login is a root span.
    assert!(receiver.spans().iter().any(|s| s.name == "POST /api/v1/auth/login" && s.parent_span_id.is_empty()));
    // Five batch intervals: a span of the gateway's request would have been exported by then.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!receiver.spans().iter().any(|s| s.service == "portico-gateway" && s.kind == "SERVER"));
}

/// Multi-datacenter, active-passive (#16): region A runs the control plane (over TLS);
/// region B runs a gateway fed from A across a link the test cuts, and its own Redis for
/// rate counters. Cut off from A, B goes on serving and counting, also after a gateway
/// restart (from its cache), while A goes on publishing; once the link heals, B converges
/// on what A published meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_dc_active_passive_region_b_serves_through_a_partition_and_converges() {
    let dir = tempfile::tempdir().unwrap();
    let certificate = TestCertificate::generate(dir.path());
    let (cert, key) = (certificate.cert.display().to_string(), certificate.key.display().to_string());
    let redis_b = RedisServer::start();
    let upstream = MockUpstream::start().await;
    let client = HttpClient::default();
    let data = tempfile::tempdir().unwrap();
    let control_plane = start_control_plane_with(data.path(), 0, &["--tls-cert", &cert, "--tls-key", &key], &[]);
    let cp = ControlPlaneClient::https(control_plane.control_plane.unwrap(), &certificate.der);
    let admin = cp.login("admin", ADMIN_PASSWORD).await;
    cp.allow_loopback_upstreams(&admin).await;
    cp.ok(Method::PUT, "/api/v1/tiers/subscription/Five", Some(&admin), json!({"requests": 5, "per_ms": 3_600_000})).await;
    let mut definition = json!({"name": "regional", "version": "v1", "context": "/regional", "endpoints": [upstream.url()],
        "operations": [{"method": "GET", "path": "/x"}], "tiers": ["Five", "Unlimited"]});
    let api = cp.deployed_api(&admin, definition.clone()).await;
    let limited = cp.subscribed_key_on(&admin, "limited-app", &api, "Five").await;
    let other = cp.subscribed_key(&admin, "other-app", &api).await;
    // The longest timeout allowed: this test is about where the counts live, and on a loaded machine
    // an answer later than the default 20 ms sends a hit to the in-process counters.
    let counters = json!({"redis": {"url": redis_b.url(), "mode": "exact", "timeout": "1s"}});
    cp.ok(Method::PUT, "/api/v1/environments/default/counters", Some(&admin), counters).await;
    let token = cp.ok(Method::POST, "/api/v1/environments/default/gateway-tokens", Some(&admin), json!({})).await;
    let token = token["token"].as_str().unwrap().to_owned();

    // Region B's gateway reaches A only through the link.
    let link = Link::start(control_plane.control_plane.unwrap()).await;
    let cache = tempfile::tempdir().unwrap();
    let (link_url, cache_dir) = (format!("https://{}", link.address), cache.path().display().to_string());
    let region_b = |ready: &str| {
        let args = [
            "gateway",
            "--control-plane",
            &link_url,
            "--environment",
            "default",
            "--control-plane-ca",
            &cert,
            "--cache-dir",
            &cache_dir,
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ];
        PorticoProcess::spawn_until(tempfile::tempdir().unwrap(), &args, &[("PORTICO_GATEWAY_TOKEN", token.as_str())], &[ready]).unwrap()
    };
    let mut gateway = region_b("snapshot applied");
    assert!(gateway.wait_for_log("rate counters shared on Redis", Duration::from_secs(5)), "{}", gateway.logs().join("\n"));
    let call =
        async |gateway: &PorticoProcess, path: &str, key: &str| client.get(&gateway.url(path), &[("apikey", key)]).await.unwrap().status;
    for _ in 0..2 {
        assert_eq!(call(&gateway, "/regional/v1/x", &limited.key).await, StatusCode::OK);
    }

    // The partition: B serves on, and counts on in its own Redis (5 an hour: 3 more, then 429).
    link.cut();
    let mut admitted = 0;
    while call(&gateway, "/regional/v1/x", &limited.key).await == StatusCode::OK {
        admitted += 1;
        assert!(admitted <= 3, "the limit holds through the partition");
    }
    assert_eq!(admitted, 3, "B counted the hits before the partition and through it");
    assert_eq!(call(&gateway, "/regional/v1/x", &other.key).await, StatusCode::OK);

    // A publishes meanwhile: a key revoked, an operation added.
    let revoke = format!("/api/v1/applications/{}/api-keys/{}", other.app, other.id);
    assert!(cp.call(Method::DELETE, &revoke, Some(&admin), None).await.status.is_success());
    let fresh = cp.subscribed_key(&admin, "fresh-app", &api).await;
    definition["operations"] = json!([{"method": "GET", "path": "/x"}, {"method": "GET", "path": "/y"}]);
    cp.ok(Method::PUT, &format!("/api/v1/apis/{api}"), Some(&admin), definition).await;
    let revision = cp.ok(Method::POST, &format!("/api/v1/apis/{api}/revisions"), Some(&admin), json!({})).await;
    let deployment = json!({"revision_id": revision["id"], "environments": ["default"]});
    cp.ok(Method::POST, &format!("/api/v1/apis/{api}/deployments"), Some(&admin), deployment).await;
    // Connected, B would refuse the key within about 50 ms (the revocation tests); cut off,
    // it hears nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(call(&gateway, "/regional/v1/x", &other.key).await, StatusCode::OK, "B knows nothing of the revocation");

    // B restarted while cut off starts from its cache and serves what it knew.
    gateway.kill();
    let gateway = region_b("serving the last-known-good snapshot from the cache");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(call(&gateway, "/regional/v1/x", &other.key).await, StatusCode::OK, "B still knows nothing of the revocation");
    assert_eq!(call(&gateway, "/regional/v1/y", &other.key).await, StatusCode::NOT_FOUND, "nor of the new operation");

    // Healed, B converges on what A published.
    link.heal();
    let took = eventually("region B converged", Duration::from_secs(30), async || {
        call(&gateway, "/regional/v1/x", &other.key).await == StatusCode::UNAUTHORIZED
            && call(&gateway, "/regional/v1/y", &fresh.key).await == StatusCode::OK
    })
    .await;
    println!("region B converged {took:?} after the link healed");
    assert_eq!(call(&gateway, "/regional/v1/x", &limited.key).await, StatusCode::TOO_MANY_REQUESTS, "the hour's count is in B's Redis");
}

/// Multi-DC active-active (issue #16): each region has its own control plane (its own key
/// manager) on its own PostgreSQL database, replicating with the other region's through a
/// link the test can cut, and its own gateway. Both answer for one issuer, as a global
/// name in front of both would.
#[tokio::test]
async fn multi_dc_active_active_regions_serve_each_other_s_changes_and_converge_after_a_partition() {
    use portico_control_plane::test_support::{copy_postgres_database, fresh_postgres_database, postgres_url};
    let upstream = MockUpstream::start().await;
    let client = HttpClient::default();
    let sealing_key = portico_control_plane::secrets::SealingKey::generate_hex();
    let issuer = "http://portico.global.test";
    // The second region's database starts as a copy of the first's: the same admin, the
    // same defaults.
    let east_db = fresh_postgres_database().await;
    drop(start_control_plane_with(
        tempfile::tempdir().unwrap().path(),
        0,
        &[],
        &[("PORTICO_DATABASE_URL", east_db.as_str()), ("PORTICO_SECRETS_KEY", sealing_key.as_str())],
    ));
    let west_db = copy_postgres_database(&east_db).await;
    let server: std::net::SocketAddr = "127.0.0.1:5432".parse().unwrap();
    assert!(postgres_url().contains("127.0.0.1:5432"), "the links lead to the test server");
    let (to_west, to_east) = (Link::start(server).await, Link::start(server).await);
    let through = |link: &Link, database: &str| format!("postgres://postgres@{}/{}", link.address, database.rsplit('/').next().unwrap());
    let (east_peer, west_peer) = (through(&to_west, &west_db), through(&to_east, &east_db));
    let (east_data, west_data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let region = |name: &str, data: &Path, database: &str, peer: &str| {
        let args = ["--region", name, "--peer-database-url", peer, "--public-url", issuer];
        start_control_plane_with(data, 0, &args, &[("PORTICO_DATABASE_URL", database), ("PORTICO_SECRETS_KEY", sealing_key.as_str())])
    };
    let east_cp = region("east", east_data.path(), &east_db, &east_peer);
    let west_cp = region("west", west_data.path(), &west_db, &west_peer);
    let (east, west) = (ControlPlaneClient::new(east_cp.control_plane.unwrap()), ControlPlaneClient::new(west_cp.control_plane.unwrap()));
    let (east_admin, west_admin) = (east.login("admin", ADMIN_PASSWORD).await, west.login("admin", ADMIN_PASSWORD).await);

    // East publishes and deploys; west serves it.
    east.allow_loopback_upstreams(&east_admin).await;
    let mut definition = json!({"name": "global", "version": "v1", "context": "/global", "endpoints": [upstream.url()],
        "operations": [{"method": "GET", "path": "/x"}], "tiers": ["Unlimited"]});
    // (The token first: west has it once it has the API, which east logged after it.)
    let token = east.ok(Method::POST, "/api/v1/environments/default/gateway-tokens", Some(&east_admin), json!({})).await;
    let token = token["token"].as_str().unwrap().to_owned();
    let api = east.deployed_api(&east_admin, definition.clone()).await;
    let api_path = format!("/api/v1/apis/{api}");
    let took = eventually("west heard of the API", Duration::from_secs(10), async || {
        west.call(Method::GET, &api_path, Some(&west_admin), None).await.status == StatusCode::OK
    })
    .await;
    println!("an API published and deployed in east known in west {took:?} after");
    let caches = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let east_gateway = start_gateway(&format!("http://{}", east_cp.control_plane.unwrap()), &token, caches.0.path(), "snapshot applied");
    let west_gateway = start_gateway(&format!("http://{}", west_cp.control_plane.unwrap()), &token, caches.1.path(), "snapshot applied");
    let call =
        async |gateway: &PorticoProcess, path: &str, header: (&str, &str)| client.get(&gateway.url(path), &[header]).await.unwrap().status;
    // The deployment is a change of its own after the API's: west's gateway may get a
    // snapshot with the API before the one that deploys it.
    eventually("west serves the API, to key holders", Duration::from_secs(10), async || {
        call(&west_gateway, "/global/v1/x", ("x-none", "")).await == StatusCode::UNAUTHORIZED
    })
    .await;

    // West subscribes: its key works in east; east revokes it: it is refused in west.
    let west_key = west.subscribed_key(&west_admin, "west-app", &api).await;
    let made = Instant::now();
    eventually("west accepts its own key", Duration::from_secs(10), async || {
        call(&west_gateway, "/global/v1/x", ("apikey", &west_key.key)).await == StatusCode::OK
    })
    .await;
    eventually("east accepts west's key", Duration::from_secs(10), async || {
        call(&east_gateway, "/global/v1/x", ("apikey", &west_key.key)).await == StatusCode::OK
    })
    .await;
    println!("a subscription and key made in west accepted by east's gateway {:?} after", made.elapsed());
    let revoke = format!("/api/v1/applications/{}/api-keys/{}", west_key.app, west_key.id);
    assert!(east.call(Method::DELETE, &revoke, Some(&east_admin), None).await.status.is_success());
    let took = eventually("west refuses the key east revoked", Duration::from_secs(10), async || {
        call(&west_gateway, "/global/v1/x", ("apikey", &west_key.key)).await == StatusCode::UNAUTHORIZED
    })
    .await;
    println!("a revocation in east refused in west {took:?} after");

    // A token issued by west's key manager is accepted by east's gateway.
    let (_, basic) = west.oauth_client(&west_admin, &west_key.app).await;
    let form = [("content-type", "application/x-www-form-urlencoded"), ("authorization", basic.as_str())];
    let issue = async || {
        let url = format!("{}/oauth2/token", west.base);
        let issued = client.send(Method::POST, &url, &form, "grant_type=client_credentials").await.unwrap();
        assert_eq!(issued.status, StatusCode::OK, "{}", issued.text());
        format!("Bearer {}", issued.json()["access_token"].as_str().unwrap())
    };
    let bearer = issue().await;
    eventually("east accepts west's token", Duration::from_secs(10), async || {
        call(&east_gateway, "/global/v1/x", ("authorization", &bearer)).await == StatusCode::OK
    })
    .await;

    // Apart, each region goes on: east adds an operation, west a subscriber.
    to_west.cut();
    to_east.cut();
    definition["operations"] = json!([{"method": "GET", "path": "/x"}, {"method": "GET", "path": "/y"}]);
    east.ok(Method::PUT, &api_path, Some(&east_admin), definition).await;
    east.redeploy(&east_admin, &api).await;
    let apart_key = west.subscribed_key(&west_admin, "made-apart", &api).await;
    eventually("each region serves its own change", Duration::from_secs(10), async || {
        call(&east_gateway, "/global/v1/y", ("authorization", &bearer)).await == StatusCode::OK
            && call(&west_gateway, "/global/v1/x", ("apikey", &apart_key.key)).await == StatusCode::OK
    })
    .await;
    // West's key manager issues on, and its tokens are good in both (east knows its keys).
    let apart_bearer = issue().await;
    for gateway in [&east_gateway, &west_gateway] {
        assert_eq!(call(gateway, "/global/v1/x", ("authorization", &apart_bearer)).await, StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(call(&west_gateway, "/global/v1/y", ("authorization", &bearer)).await, StatusCode::NOT_FOUND, "west knows nothing of /y");
    assert_eq!(call(&east_gateway, "/global/v1/x", ("apikey", &apart_key.key)).await, StatusCode::UNAUTHORIZED, "east knows no such key");

    // Healed, both have both changes.
    to_west.heal();
    to_east.heal();
    let took = eventually("the regions converged", Duration::from_secs(30), async || {
        call(&west_gateway, "/global/v1/y", ("apikey", &apart_key.key)).await == StatusCode::OK
            && call(&east_gateway, "/global/v1/y", ("apikey", &apart_key.key)).await == StatusCode::OK
    })
    .await;
    println!("the regions converged {took:?} after the partition healed");
}
