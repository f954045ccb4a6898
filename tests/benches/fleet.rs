//! Fleet figures (issue #4), with real processes on loopback: a control plane and two
//! gateways (`portico control-plane`, `portico gateway`).
//!
//! - deploy → acknowledged by both gateways (another revision, with the other policy version,
//!   timed from the deploy request to the rollout being done), median and max;
//! - latency at a fixed request rate, steady and with a policy swap every second
//!   (p50/p99/p99.9 measured from each request's scheduled start, so a stall is not
//!   hidden), and the failed requests;
//! - a gateway's cold start from its disk cache while the control plane is down.
//!
//! `cargo bench -p portico-tests --bench fleet` (release build). Numbers only; nothing is
//! asserted about speed.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::{Method, StatusCode};
use portico_tests::{ControlPlaneClient, HttpClient, MockUpstream, PorticoProcess, policies};
use serde_json::{Value, json};

const ADMIN_PASSWORD: &str = "bench-admin-pass-1";
const RATE: u64 = 400;
const PHASE: Duration = Duration::from_secs(10);
const DEPLOYS: usize = 20;
const COLD_STARTS: usize = 5;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(run());
}

fn start_gateway(control_plane: &str, token: &str, cache: &Path, ready: &str) -> PorticoProcess {
    PorticoProcess::spawn_until(
        tempfile::tempdir().unwrap(),
        &[
            "gateway",
            "--control-plane",
            control_plane,
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

/// A revision of `api` with `policy` attached.
async fn revision_with(cp: &ControlPlaneClient, admin: &str, api: &str, upstream: &str, policy: &str) -> String {
    let body = json!({"name": "stamped", "version": "v1", "context": "/stamped", "endpoints": [upstream],
        "operations": [{"method": "GET", "path": "/hello"}], "policies": [{"policy": policy}]});
    cp.ok(Method::PUT, &format!("/api/v1/apis/{api}"), Some(admin), body).await;
    let revision = cp.ok(Method::POST, &format!("/api/v1/apis/{api}/revisions"), Some(admin), json!({})).await;
    revision["id"].as_str().unwrap().to_owned()
}

async fn deploy(cp: &ControlPlaneClient, admin: &str, api: &str, revision: &str) {
    cp.ok(
        Method::POST,
        &format!("/api/v1/apis/{api}/deployments"),
        Some(admin),
        json!({"revision_id": revision, "environments": ["default"]}),
    )
    .await;
}

async fn rolled_out(cp: &ControlPlaneClient, admin: &str, previous: &str) -> String {
    loop {
        let rollout = cp.ok(Method::GET, "/api/v1/environments/default/rollout?wait_ms=5000", Some(admin), Value::Null).await;
        let version = rollout["version"].as_str().unwrap().to_owned();
        if rollout["done"] == true
            && version != previous
            && rollout["gateways"].as_array().unwrap().iter().filter(|g| g["healthy"] == true).count() == 2
        {
            return version;
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Requests at `RATE` per second, alternately to each URL, for `PHASE`; latencies from the
/// scheduled start.
async fn fixed_rate(urls: &[String], key: &str) -> (Vec<Duration>, usize) {
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(Mutex::new(0usize));
    let client = HttpClient::default();
    let started = tokio::time::Instant::now();
    let total = RATE * PHASE.as_secs();
    let mut tasks = Vec::new();
    for i in 0..total {
        let scheduled = started + Duration::from_nanos(i * 1_000_000_000 / RATE);
        tokio::time::sleep_until(scheduled).await;
        let (client, url, key, latencies, failed) =
            (client.clone(), urls[i as usize % urls.len()].clone(), key.to_owned(), latencies.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let ok = matches!(client.get(&url, &[("apikey", &key)]).await, Ok(reply) if reply.status == StatusCode::OK);
            latencies.lock().unwrap().push(scheduled.elapsed());
            if !ok {
                *failed.lock().unwrap() += 1;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut latencies = latencies.lock().unwrap().clone();
    latencies.sort();
    let failed = *failed.lock().unwrap();
    (latencies, failed)
}

fn describe(name: &str, latencies: &[Duration], failed: usize) -> String {
    format!(
        "{name}: {} requests, {failed} failed; p50 {:?}, p99 {:?}, p99.9 {:?}, max {:?}",
        latencies.len(),
        percentile(latencies, 0.50),
        percentile(latencies, 0.99),
        percentile(latencies, 0.999),
        latencies.last().unwrap()
    )
}

async fn run() {
    let upstream = MockUpstream::start().await;
    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cp_url = format!("http://127.0.0.1:{port}");
    let mut control_plane = PorticoProcess::spawn_until(
        tempfile::tempdir().unwrap(),
        &["control-plane", "--data-dir", &data.path().display().to_string(), "--api", &format!("127.0.0.1:{port}")],
        &[("PORTICO_ADMIN_PASSWORD", ADMIN_PASSWORD)],
        &["control plane listening"],
    )
    .unwrap();
    let cp = ControlPlaneClient::new(control_plane.control_plane.unwrap());
    let admin = cp.login("admin", ADMIN_PASSWORD).await;
    cp.allow_loopback_upstreams(&admin).await;
    for (version, path) in [("1.0.0", policies::STAMP_V1), ("2.0.0", policies::STAMP_V2)] {
        let component = base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap());
        cp.ok(Method::POST, "/api/v1/policies", Some(&admin), json!({"name": "stamp", "version": version, "component": component})).await;
    }
    let api = cp
        .ok(
            Method::POST,
            "/api/v1/apis",
            Some(&admin),
            json!({"name": "stamped", "version": "v1", "context": "/stamped", "endpoints": [upstream.url()],
            "operations": [{"method": "GET", "path": "/hello"}], "policies": [{"policy": "stamp@1.0.0"}]}),
        )
        .await;
    let api = api["id"].as_str().unwrap().to_owned();
    cp.ok(Method::POST, &format!("/api/v1/apis/{api}/lifecycle"), Some(&admin), json!({"action": "publish"})).await;
    let key = cp.subscribed_key(&admin, "bench", &api).await.key;
    let revisions = [
        revision_with(&cp, &admin, &api, &upstream.url(), "stamp@1.0.0").await,
        revision_with(&cp, &admin, &api, &upstream.url(), "stamp@2.0.0").await,
    ];
    deploy(&cp, &admin, &api, &revisions[0]).await;
    let token = cp.ok(Method::POST, "/api/v1/environments/default/gateway-tokens", Some(&admin), json!({})).await;
    let token = token["token"].as_str().unwrap().to_owned();
    let caches = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut gateways: Vec<PorticoProcess> = caches.iter().map(|c| start_gateway(&cp_url, &token, c.path(), "snapshot applied")).collect();
    let mut version = rolled_out(&cp, &admin, "").await;

    // Deploy → acknowledged by both gateways.
    let mut times = Vec::new();
    for i in 0..DEPLOYS {
        let started = Instant::now();
        deploy(&cp, &admin, &api, &revisions[(i + 1) % 2]).await;
        version = rolled_out(&cp, &admin, &version).await;
        times.push(started.elapsed());
    }
    times.sort();
    println!(
        "deploy -> acknowledged by 2 gateways, {DEPLOYS} deploys: median {:?}, max {:?}",
        percentile(&times, 0.5),
        times.last().unwrap()
    );

    // Latency at a fixed rate: steady, then with a swap every second.
    let urls: Vec<String> = gateways.iter().map(|g| g.url("/stamped/v1/hello")).collect();
    let (steady, steady_failed) = fixed_rate(&urls, &key).await;
    println!("{}", describe(&format!("steady at {RATE}/s"), &steady, steady_failed));
    let swapping = {
        let (cp, admin, api, revisions) =
            (ControlPlaneClient::new(control_plane.control_plane.unwrap()), admin.clone(), api.clone(), revisions.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let mut swaps = 0;
            while started.elapsed() < PHASE {
                let tick = Instant::now();
                deploy(&cp, &admin, &api, &revisions[(swaps + 1) % 2]).await;
                swaps += 1;
                tokio::time::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed())).await;
            }
            swaps
        })
    };
    let (during, during_failed) = fixed_rate(&urls, &key).await;
    let swaps = swapping.await.unwrap();
    println!("{}", describe(&format!("at {RATE}/s with {swaps} policy swaps, one a second"), &during, during_failed));
    println!("p99.9 during swaps / steady: {:.2}", percentile(&during, 0.999).as_secs_f64() / percentile(&steady, 0.999).as_secs_f64());

    // Cold start from the disk cache, control plane down.
    control_plane.kill();
    let mut starts = Vec::new();
    for _ in 0..COLD_STARTS {
        drop(gateways.remove(0));
        let started = Instant::now();
        let gateway = start_gateway(&cp_url, &token, caches[0].path(), "serving the last-known-good snapshot from the cache");
        let client = HttpClient::default();
        while !matches!(client.get(&gateway.url("/stamped/v1/hello"), &[("apikey", &key)]).await, Ok(reply) if reply.status == StatusCode::OK)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        starts.push(started.elapsed());
        gateways.insert(0, gateway);
    }
    starts.sort();
    println!(
        "cold start from the disk cache (process start to first 200, control plane down), {COLD_STARTS} starts: median {:?}, max {:?}",
        percentile(&starts, 0.5),
        starts.last().unwrap()
    );
}
