//! End to end: a real `portico serve` process on loopback in front of a mock upstream.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use portico_tests::{
    ALLOW_LOOPBACK_UPSTREAMS, HttpClient, LegitimateLoad, MockUpstream, OtlpReceiver, PorticoProcess, ReceivedSpan, TestCertificate,
    TestIssuer, check_config, eventually, indent, policies, tls_get, tls_handshake, tls_request, unix_now, until_closed,
};

fn api(name: &str, context: &str, upstream: &MockUpstream, policies: &str) -> String {
    format!(
        "  - name: {name}\n    context: {context}\n    upstream:\n      endpoints: [\"{}/base\"]\n      timeout: 1s\n    policies:\n{policies}\n",
        upstream.url()
    )
}

fn gateway_config(apis: &str, extra: &str) -> String {
    format!("listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\n{ALLOW_LOOPBACK_UPSTREAMS}{extra}\napis:\n{apis}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_forwards_the_normalised_request_and_strips_the_context() {
    let upstream = MockUpstream::start().await;
    let limits = "limits: {max_body_bytes: 1KiB}\n";
    let gateway = PorticoProcess::start(&gateway_config(&api("echo", "/echo/v1", &upstream, "      []"), limits)).unwrap();
    let client = HttpClient::default();

    let reply =
        client.get(&gateway.url("/echo/v1/items/7?x=1&y=two"), &[("connection", "keep-alive, x-drop"), ("x-drop", "1")]).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let seen = reply.json();
    assert_eq!(seen["path"], "/base/items/7");
    assert_eq!(seen["query"], "x=1&y=two");
    assert_eq!(reply.upstream_header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(reply.upstream_header("host").as_deref(), Some(upstream.addr.to_string().as_str()));
    assert_eq!(reply.upstream_header("x-drop"), None, "headers named in Connection are hop-by-hop");
    assert_eq!(reply.header("x-upstream"), Some("mock"));

    let reply = client.send(Method::POST, &gateway.url("/echo/v1/orders"), &[("content-type", "text/plain")], "hello").await.unwrap();
    assert_eq!(reply.json()["body"], "hello");
    assert_eq!(reply.json()["method"], "POST");

    // The path is normalised once, and that path is routed and forwarded.
    let reply = client.get(&gateway.url("//echo/v1/./x/../items//8"), &[]).await.unwrap();
    assert_eq!(reply.json()["path"], "/base/items/8");
    let reply = client.get(&gateway.url("/echo/v1/%69tems"), &[]).await.unwrap();
    assert_eq!(reply.json()["path"], "/base/items");
    let reply = client.get(&gateway.url("/echo/v1/a%2Fb"), &[]).await.unwrap();
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.header("content-type"), Some("application/problem+json"));
    let reply = client.get(&gateway.url("/echo/v1/../../elsewhere"), &[]).await.unwrap();
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.json()["status"], 404);

    // Upstream failures are the gateway's problems to report, as problem+json.
    let reply = client.get(&gateway.url("/echo/v1/slow"), &[]).await.unwrap();
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(reply.header("content-type"), Some("application/problem+json"));

    let reply = client.send(Method::POST, &gateway.url("/echo/v1/orders"), &[], vec![b'x'; 2048]).await.unwrap();
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);

    let admin = gateway.admin.unwrap();
    assert_eq!(client.get(&format!("http://{admin}/healthz"), &[]).await.unwrap().status, StatusCode::OK);
    let ready = client.get(&format!("http://{admin}/readyz"), &[]).await.unwrap();
    assert!(ready.text().starts_with("ready "), "{}", ready.text());
    let metrics = client.get(&format!("http://{admin}/metrics"), &[]).await.unwrap().text();
    assert!(metrics.contains("portico_responses_total{api=\"echo\",version=\"v1\",class=\"2xx\"} 4"), "{metrics}");
    assert!(metrics.contains("portico_responses_total{api=\"echo\",version=\"v1\",class=\"5xx\"} 1"), "{metrics}");
    // Refused after routing (413), counted under its API; the 400 and 404 above matched none.
    assert!(metrics.contains("portico_responses_total{api=\"echo\",version=\"v1\",class=\"4xx\"} 1"), "{metrics}");
    assert!(metrics.contains("portico_responses_total{api=\"\",version=\"\",class=\"4xx\"} 2"), "{metrics}");
}

/// What a load balancer needs at shutdown: `/readyz` turns 503 as soon as SIGTERM arrives,
/// API traffic is still served through the drain delay, and a second signal ends the delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_readyz_503_and_serves_through_the_drain_delay() {
    let upstream = MockUpstream::start().await;
    // Far longer than the test takes: the process is still up below only because of it.
    let config = gateway_config(&api("echo", "/echo", &upstream, "      []"), "drain_delay: 10m\n");
    let mut gateway = PorticoProcess::start(&config).unwrap();
    let client = HttpClient::default();
    let readyz = format!("http://{}/readyz", gateway.admin.unwrap());
    assert_eq!(client.get(&readyz, &[]).await.unwrap().status, StatusCode::OK);

    gateway.terminate();
    portico_tests::eventually("/readyz answering 503", Duration::from_secs(10), async || {
        client.get(&readyz, &[]).await.is_ok_and(|reply| reply.status == StatusCode::SERVICE_UNAVAILABLE)
    })
    .await;
    assert_eq!(client.get(&readyz, &[]).await.unwrap().text(), "shutting down\n");
    assert!(gateway.wait_for_log("not ready, still serving", Duration::from_secs(10)), "{:?}", gateway.logs());
    let reply = client.get(&gateway.url("/echo/x"), &[]).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "API traffic is served during the drain delay");
    assert!(gateway.is_running());

    gateway.terminate();
    assert!(wait_until(Duration::from_secs(60), || !gateway.is_running()), "a second SIGTERM ends the drain delay");
    assert!(gateway.logs().iter().any(|line| line.contains("draining connections")), "{:?}", gateway.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_a_502_problem() {
    let upstream = MockUpstream::start().await;
    let config = gateway_config(&api("gone", "/gone", &upstream, "      []"), "");
    drop(upstream);
    let gateway = PorticoProcess::start(&config).unwrap();
    let reply = HttpClient::default().get(&gateway.url("/gone/x"), &[]).await.unwrap();
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.json()["status"], 502);
}

fn secured_config(upstream: &MockUpstream, issuer: &TestIssuer, extra_policies: &str) -> String {
    let policies = format!("      - policy: key-auth\n        config: {{api_key: {{header: apikey, query: apikey}}}}\n{extra_policies}");
    let extra = format!(
        "consumers:\n  - name: shop\n    tier: Silver\n    api_keys: [\"key-shop-0001\"]\njwt_issuers:\n  - issuer: {}\n    audiences: [portico]\n    algorithms: [ES256]\n    keys:\n      - pem: |\n{}\n",
        issuer.issuer,
        indent(&issuer.public_pem, 10)
    );
    gateway_config(&api("secure", "/secure", upstream, &policies), &extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_auth_accepts_api_keys_and_jwts_and_refuses_the_rest() {
    let upstream = MockUpstream::start().await;
    let issuer = TestIssuer::new("https://idp.test");
    let gateway = PorticoProcess::start(&secured_config(&upstream, &issuer, "")).unwrap();
    let client = HttpClient::default();
    let url = gateway.url("/secure/things");

    let reply = client.get(&url, &[]).await.unwrap();
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.header("www-authenticate").unwrap().starts_with("Bearer"), "{:?}", reply.headers);
    assert_eq!(client.get(&url, &[("apikey", "key-wrong-0001")]).await.unwrap().status, StatusCode::UNAUTHORIZED);

    let reply = client.get(&url, &[("apikey", "key-shop-0001")]).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.upstream_header("apikey"), None, "the credential is not forwarded");
    let reply = client.get(&format!("{url}?apikey=key-shop-0001&page=2"), &[]).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["query"], "page=2");

    let bearer = |token: &str| format!("Bearer {token}");
    let good = issuer.sign(&issuer.claims("portico"));
    let reply = client.get(&url, &[("authorization", &bearer(&good))]).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    let mut expired = issuer.claims("portico");
    expired["exp"] = (unix_now() - 3600).into();
    let mut wrong_aud = issuer.claims("portico");
    wrong_aud["aud"] = "someone-else".into();
    let mut exp_as_string = issuer.claims("portico");
    exp_as_string["exp"] = (unix_now() + 3600).to_string().into();
    let other_issuer = TestIssuer::new("https://evil.test");
    let header_b64 = |json: &str| base64_url(json.as_bytes());
    let claims_b64 = base64_url(issuer.claims("portico").to_string().as_bytes());
    let alg_none = format!("{}.{}.", header_b64(r#"{"alg":"none","typ":"JWT"}"#), claims_b64);
    let hs256_with_public_key = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &issuer.claims("portico"),
        &jsonwebtoken::EncodingKey::from_secret(issuer.public_pem.as_bytes()),
    )
    .unwrap();
    let mut not_yet = issuer.claims("portico");
    not_yet["nbf"] = (unix_now() + 3600).into();
    let mut no_exp = issuer.claims("portico");
    no_exp.as_object_mut().unwrap().remove("exp");
    let mut wrong_issuer_claim = issuer.claims("portico");
    wrong_issuer_claim["iss"] = "https://evil.test".into();
    // An attacker's key: named by a hostile `kid`, or offered by `jku`/`x5u` on a listener
    // that counts who connects (nobody may).
    let attacker = TestIssuer::new("https://idp.test");
    let attacker_key = jsonwebtoken::EncodingKey::from_ec_pem(attacker.private_pem.as_bytes()).unwrap();
    let with_header = |header: jsonwebtoken::Header| jsonwebtoken::encode(&header, &issuer.claims("portico"), &attacker_key).unwrap();
    let mut hostile_kid = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    hostile_kid.kid = Some("../../../../etc/passwd\u{0}' OR '1'='1".to_owned());
    let counting = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    counting.set_nonblocking(true).unwrap();
    let at = counting.local_addr().unwrap();
    let mut fetch_me = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    fetch_me.jku = Some(format!("http://{at}/jwks.json"));
    fetch_me.x5u = Some(format!("http://{at}/cert.pem"));
    let fetch_me = jsonwebtoken::encode(&fetch_me, &issuer.claims("portico"), &attacker_key).unwrap();
    let es384 = {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let key = jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
        jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES384), &issuer.claims("portico"), &key).unwrap()
    };
    let cases = [
        ("expired", issuer.sign(&expired)),
        ("not yet valid", issuer.sign(&not_yet)),
        ("no exp", issuer.sign(&no_exp)),
        ("wrong iss claim", issuer.sign(&wrong_issuer_claim)),
        ("hostile kid", with_header(hostile_kid)),
        ("jku and x5u to an attacker's key", fetch_me),
        ("an algorithm not allowed (ES384)", es384),
        ("wrong audience", issuer.sign(&wrong_aud)),
        ("exp as a string", issuer.sign(&exp_as_string)),
        ("unknown issuer", other_issuer.sign(&other_issuer.claims("portico"))),
        ("signed by another key", other_issuer.sign(&issuer.claims("portico"))),
        ("alg none", alg_none),
        ("HS256 signed with the public key", hs256_with_public_key),
        ("garbage", "not.a.token".to_owned()),
    ];
    for (case, token) in cases {
        let reply = client.get(&url, &[("authorization", &bearer(&token))]).await.unwrap();
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{case}: {}", reply.text());
        assert!(!reply.text().contains(&token), "{case}: the token is echoed");
    }
    assert_eq!(std::iter::from_fn(|| counting.accept().ok()).count(), 0, "the gateway fetched what a token pointed at");
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_answers_429_with_retry_after_over_the_limit() {
    let upstream = MockUpstream::start().await;
    let issuer = TestIssuer::new("https://idp.test");
    // Four throttles: the response tells the tightest quota (2 per minute), reported after
    // looser ones and before another.
    let throttle = |limit: &str| format!("      - policy: throttle\n        config:\n          limits: [{limit}]\n");
    let limits = ["{requests: 100, per: 1h}", "{requests: 3, per: 1m}", "{requests: 2, per: 1m}", "{requests: 50, per: 1h}"];
    let gateway = PorticoProcess::start(&secured_config(&upstream, &issuer, &limits.map(throttle).concat())).unwrap();
    let client = HttpClient::default();
    let url = gateway.url("/secure/limited");
    for remaining in ["1", "0"] {
        let reply = client.get(&url, &[("apikey", "key-shop-0001")]).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!((reply.header("ratelimit-limit"), reply.header("ratelimit-remaining")), (Some("2"), Some(remaining)));
        let reset: u64 = reply.header("ratelimit-reset").unwrap().parse().unwrap();
        // As for `retry-after` below: up to one bucket past the window.
        assert!((1..=60 + 3).contains(&reset), "ratelimit-reset {reset}");
    }
    // The 3-per-minute throttle lets its last request through (0 left), the 2-per-minute one
    // refuses: the 429 names the limit that refused.
    let reply = client.get(&url, &[("apikey", "key-shop-0001")]).await.unwrap();
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "{}", reply.text());
    let retry_after: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    // The window is judged in 20 buckets, so the wait may exceed the window by one bucket.
    assert!((1..=60 + 3).contains(&retry_after), "retry-after {retry_after}");
    assert_eq!((reply.header("ratelimit-limit"), reply.header("ratelimit-remaining")), (Some("2"), Some("0")));
    // Another caller has its own counter.
    let token = issuer.sign(&issuer.claims("portico"));
    let reply = client.get(&url, &[("authorization", &format!("Bearer {token}"))]).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_mediation_is_seen_by_the_upstream_and_the_client() {
    let upstream = MockUpstream::start().await;
    let issuer = TestIssuer::new("https://idp.test");
    let headers = "      - policy: headers\n        config:\n          request:\n            set: {x-consumer: \"{application}\"}\n            remove: [x-secret]\n            rename: {x-old: x-new}\n          response:\n            set: {x-served-by: portico}\n            remove: [x-upstream]\n";
    let gateway = PorticoProcess::start(&secured_config(&upstream, &issuer, headers)).unwrap();
    let reply = HttpClient::default()
        .get(&gateway.url("/secure/h"), &[("apikey", "key-shop-0001"), ("x-secret", "s"), ("x-old", "v")])
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.upstream_header("x-consumer").as_deref(), Some("shop"));
    assert_eq!(reply.upstream_header("x-secret"), None);
    assert_eq!(reply.upstream_header("x-new").as_deref(), Some("v"));
    assert_eq!(reply.header("x-served-by"), Some("portico"));
    assert_eq!(reply.header("x-upstream"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_buffered_for_policies_that_ask() {
    let upstream = MockUpstream::start().await;
    let policies = "      - policy: mediate\n        config: {envelope: wrapped}\n";
    let extra = format!("modules:\n  mediate:\n    path: {}\n", policies::MEDIATE);
    let gateway = PorticoProcess::start(&gateway_config(&api("m", "/m", &upstream, policies), &extra)).unwrap();
    let reply = HttpClient::default().send(Method::POST, &gateway.url("/m/x"), &[], "quiet words").await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let wrapped = reply.json();
    assert_eq!(wrapped["wrapped"]["body"], "QUIET WORDS");
    assert_eq!(reply.header("content-length"), Some(reply.body.len().to_string().as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_policy_fails_closed_and_the_next_request_gets_a_fresh_instance() {
    let upstream = MockUpstream::start().await;
    let policies = "      - policy: misbehave\n        config: {mode: panic-on-header}\n";
    let extra = format!("modules:\n  misbehave:\n    path: {}\n", policies::MISBEHAVE);
    let gateway = PorticoProcess::start(&gateway_config(&api("p", "/p", &upstream, policies), &extra)).unwrap();
    let client = HttpClient::default();
    for _ in 0..3 {
        let reply = client.get(&gateway.url("/p/x"), &[("x-panic", "1")]).await.unwrap();
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", reply.text());
        assert_eq!(reply.header("x-upstream"), None, "a failed policy must not let the request through");
        assert_eq!(reply.header("x-misbehave"), None, "the 500 carries nothing the failed policy set");
        let reply = client.get(&gateway.url("/p/x"), &[]).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.upstream_header("x-misbehave").as_deref(), Some("passed"));
        assert_eq!(reply.header("x-misbehave"), Some("passed"));
    }
    assert!(gateway.wait_for_log("asked to panic", Duration::from_secs(5)), "the guest's panic message is logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_is_stopped_at_its_deadline_while_other_routes_serve() {
    let upstream = MockUpstream::start().await;
    let spin = "      - policy: misbehave\n        config: {mode: loop}\n        timeout: 50ms\n";
    let apis = format!("{}{}", api("spin", "/spin", &upstream, spin), api("fine", "/fine", &upstream, "      []"));
    let extra = format!("modules:\n  misbehave:\n    path: {}\n", policies::MISBEHAVE);
    let gateway = PorticoProcess::start(&gateway_config(&apis, &extra)).unwrap();
    let client = HttpClient::default();

    let spinning = {
        let client = client.clone();
        let url = gateway.url("/spin/x");
        tokio::spawn(async move {
            let mut took = Vec::new();
            for _ in 0..5 {
                let started = Instant::now();
                let reply = client.get(&url, &[]).await.unwrap();
                took.push(started.elapsed());
                assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
                assert!(reply.text().contains("misbehave"), "{}", reply.text());
            }
            took
        })
    };
    let mut fine = 0;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && fine < 200 {
        let reply = client.get(&gateway.url("/fine/x"), &[]).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        fine += 1;
    }
    let took = spinning.await.unwrap();
    println!("endless loop answered 500 after {took:?} (budget 50ms); {fine} requests served meanwhile");
    // The behaviour under test is the deadline itself: without it the call never returns.
    // 20x the budget leaves room for a loaded machine.
    let slowest = took.iter().max().unwrap();
    assert!(*slowest < Duration::from_millis(50) * 20, "the deadline did not stop the loop in time: {took:?}");
    // The log is read by another thread: give it a moment to catch up.
    assert!(wait_until(Duration::from_secs(5), || gateway.count_logs("deadline exceeded") >= 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_hungry_and_recursive_policies_are_stopped() {
    let upstream = MockUpstream::start().await;
    // A second of time, so that on a loaded machine the memory limit, not the deadline, is
    // what stops the growth.
    let grow = "      - policy: misbehave\n        config: {mode: grow}\n        memory: 32MiB\n        timeout: 1s\n";
    let recurse = "      - policy: misbehave\n        config: {mode: recurse}\n";
    let apis = format!(
        "{}{}{}",
        api("grow", "/grow", &upstream, grow),
        api("recurse", "/recurse", &upstream, recurse),
        api("fine", "/fine", &upstream, "      []")
    );
    let extra = format!("modules:\n  misbehave:\n    path: {}\n", policies::MISBEHAVE);
    let mut gateway = PorticoProcess::start(&gateway_config(&apis, &extra)).unwrap();
    let client = HttpClient::default();
    let before = gateway.rss_kib();
    for _ in 0..5 {
        assert_eq!(client.get(&gateway.url("/grow/x"), &[]).await.unwrap().status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(client.get(&gateway.url("/recurse/x"), &[]).await.unwrap().status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(client.get(&gateway.url("/fine/x"), &[]).await.unwrap().status, StatusCode::OK);
    }
    assert!(wait_until(Duration::from_secs(5), || gateway.count_logs("memory limit exceeded") >= 5), "{}", gateway.logs().join("\n"));
    assert!(gateway.is_running());
    // A figure, not a pass mark: what five 32 MiB-capped growths and five stack overflows left.
    println!("gateway RSS before the grow/recurse rounds {before:?} KiB, after {:?} KiB", gateway.rss_kib());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_built_against_contract_0_1_0_runs_unchanged() {
    let component = std::fs::read(policies::CONTRACT_0_1_0).unwrap();
    let names = String::from_utf8_lossy(&component);
    assert!(names.contains("portico:policy/policy@0.1.0") && !names.contains("@0.1.1"), "not a 0.1.0 component");
    let upstream = MockUpstream::start().await;
    let extra = format!("modules:\n  old:\n    path: {}\n", policies::CONTRACT_0_1_0);
    let gateway = PorticoProcess::start(&gateway_config(&api("legacy", "/legacy", &upstream, "      - policy: old\n"), &extra)).unwrap();
    let client = HttpClient::default();
    for remaining in [99, 98] {
        let reply = client.get(&gateway.url("/legacy/x"), &[("x-echo", "hello")]).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.upstream_header("x-contract").as_deref(), Some("0.1.0"));
        assert_eq!(reply.header("x-echo"), Some("hello"));
        assert_eq!(reply.header("x-remaining"), Some(remaining.to_string().as_str()));
        assert_eq!(reply.header("x-contract-api"), Some("legacy"));
    }
}

fn stamp_config(upstream: &MockUpstream, module: &str) -> String {
    let policies = "      - policy: stamp\n";
    let extra = format!("modules:\n  stamp:\n    path: {module}\n");
    gateway_config(&api("s", "/s", upstream, policies), &extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_under_load_fails_no_request_and_never_mixes_versions() {
    let upstream = MockUpstream::start().await;
    let gateway = PorticoProcess::start(&stamp_config(&upstream, policies::STAMP_V1)).unwrap();
    let client = HttpClient::default();
    let url = gateway.url("/s/x");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen_v1 = Arc::new(AtomicUsize::new(0));
    let seen_v2 = Arc::new(AtomicUsize::new(0));
    let last_seen = Arc::new(AtomicUsize::new(1));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (client, url, stop, seen_v1, seen_v2, last_seen) =
            (client.clone(), url.clone(), stop.clone(), seen_v1.clone(), seen_v2.clone(), last_seen.clone());
        workers.push(tokio::spawn(async move {
            let mut sent = 0;
            while !stop.load(Ordering::Relaxed) && sent < 200_000 {
                let reply = client.get(&url, &[]).await.expect("no connection error");
                assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
                let upstream_saw = reply.upstream_header("x-policy-version").expect("stamped request");
                let stamp = reply.header("x-policy-version").expect("stamped response");
                assert_eq!(stamp, format!("{upstream_saw}/{upstream_saw}"), "one version per request");
                let (seen, version) = match upstream_saw.as_str() {
                    "portico-test-stamp-v1" => (&seen_v1, 1),
                    "portico-test-stamp-v2" => (&seen_v2, 2),
                    other => panic!("unexpected version {other}"),
                };
                seen.fetch_add(1, Ordering::Relaxed);
                last_seen.store(version, Ordering::Relaxed);
                sent += 1;
            }
            sent
        }));
    }
    // Each swap is awaited until requests show it (a first compilation on a loaded machine can
    // take seconds), then given a moment of load before the next.
    'swaps: for round in 0..6 {
        let (module, version) = if round % 2 == 0 { (policies::STAMP_V2, 2) } else { (policies::STAMP_V1, 1) };
        gateway.write_config(&stamp_config(&upstream, module)).unwrap();
        gateway.hangup();
        let started = Instant::now();
        while last_seen.load(Ordering::Relaxed) != version {
            if workers.iter().any(|worker| worker.is_finished()) {
                break 'swaps; // its failure is reported below
            }
            assert!(started.elapsed() < Duration::from_secs(60), "swap {round} to v{version} not served within 60 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for worker in workers {
        total += worker.await.expect("worker saw only good responses");
    }
    let (v1, v2) = (seen_v1.load(Ordering::Relaxed), seen_v2.load(Ordering::Relaxed));
    println!("{total} requests during 6 swaps: {v1} by v1, {v2} by v2");
    assert!(v1 > 0 && v2 > 0, "both versions served");
    assert!(wait_until(Duration::from_secs(5), || gateway.count_logs("configuration applied") >= 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_configuration_is_refused_while_the_old_snapshot_serves() {
    let upstream = MockUpstream::start().await;
    let good = stamp_config(&upstream, policies::STAMP_V1);
    let gateway = PorticoProcess::start(&good).unwrap();
    let client = HttpClient::default();
    // v2 pinned by v1's digest, and a copy of v2 with one byte flipped, pinned by v2's.
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    use sha2::Digest as _;
    let v1_digest = hex(&sha2::Sha256::digest(std::fs::read(policies::STAMP_V1).unwrap()));
    let mut v2 = std::fs::read(policies::STAMP_V2).unwrap();
    let v2_digest = hex(&sha2::Sha256::digest(&v2));
    let middle = v2.len() / 2;
    v2[middle] ^= 0x01;
    let flipped = gateway.dir.path().join("stamp-flipped.wasm");
    std::fs::write(&flipped, &v2).unwrap();
    let (expect_v1, expect_v2) = (format!("expected {v1_digest}"), format!("expected {v2_digest}"));
    // Each with what its refusal must name. The file watcher and the SIGHUP may both reload
    // the same file, so refusals are matched by reason, not counted.
    let bad_configs = [
        ("broken YAML", "apis: [\n".to_owned(), "did not find expected node content"),
        ("unknown field", good.replace("context: /s", "context: /s\n    colour: blue"), "apis[0].colour"),
        (
            "bad policy config",
            good.replace("      - policy: stamp\n", "      - policy: stamp\n        config: {shade: 3}\n"),
            "unknown field `shade`",
        ),
        ("missing module", good.replace(policies::STAMP_V1, "/nonexistent/stamp.wasm"), "/nonexistent/stamp.wasm"),
        ("not a policy", good.replace(policies::STAMP_V1, policies::NOT_A_POLICY), "portico:policy/policy@0.1.1"),
        (
            "wrong pin",
            good.replace(&format!("path: {}", policies::STAMP_V1), &format!("path: {}\n    sha256: {}", policies::STAMP_V2, v1_digest)),
            expect_v1.as_str(),
        ),
        (
            "a flipped byte",
            good.replace(&format!("path: {}", policies::STAMP_V1), &format!("path: {}\n    sha256: {}", flipped.display(), v2_digest)),
            expect_v2.as_str(),
        ),
    ];
    for (case, config, reason) in &bad_configs {
        gateway.write_config(config).unwrap();
        gateway.hangup();
        let refused = || gateway.logs().iter().any(|line| line.contains("configuration refused") && line.contains(reason));
        assert!(wait_until(Duration::from_secs(10), refused), "{case}: not refused for `{reason}`:\n{}", gateway.logs().join("\n"));
        let reply = client.get(&gateway.url("/s/x"), &[]).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{case}");
        assert_eq!(reply.upstream_header("x-policy-version").as_deref(), Some("portico-test-stamp-v1"), "{case}");
    }
}

fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

#[test]
fn check_config_names_every_problem_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let core_module = dir.path().join("core.wasm");
    std::fs::write(&core_module, b"\0asm\x01\0\0\0").unwrap();
    let file = dir.path().join("portico.yaml");
    std::fs::write(
        &file,
        format!(
            "listeners:\n  - address: nowhere\nmodules:\n  command:\n    path: {}\n  core:\n    path: {}\napis:\n  - name: a\n    context: pets\n    upstream:\n      endpoints: [\"ftp://x\"]\n      client_certificate: {{certificate: nope, key: nope}}\n    policies:\n      - policy: command\n      - policy: core\n      - policy: nope\n",
            policies::NOT_A_POLICY,
            core_module.display()
        ),
    )
    .unwrap();
    let (ok, output) = check_config(&file);
    assert!(!ok, "{output}");
    for expected in [
        "listeners[0].address",
        "apis[0].context",
        "apis[0].upstream.endpoints[0]",
        "apis[0].upstream.client_certificate",
        "apis[0].policies[2].policy",
    ] {
        assert!(output.contains(expected), "missing `{expected}` in:\n{output}");
    }
    assert!(output.contains(&file.display().to_string()), "{output}");

    // With the simple problems fixed, the modules themselves are checked.
    std::fs::write(
        &file,
        format!(
            "listeners:\n  - address: 127.0.0.1:0\nmodules:\n  command:\n    path: {}\n  core:\n    path: {}\napis:\n  - name: a\n    context: /pets\n    upstream:\n      endpoints: [\"http://192.0.2.1:1\"]\n    policies:\n      - policy: command\n      - policy: core\n",
            policies::NOT_A_POLICY,
            core_module.display()
        ),
    )
    .unwrap();
    let (ok, output) = check_config(&file);
    assert!(!ok, "{output}");
    assert!(output.contains("apis[0].policies[0].policy") && output.contains("no export `portico:policy/policy@0.1.1`"), "{output}");
    assert!(output.contains("apis[0].policies[1].policy") && output.contains("not a valid WebAssembly component"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_are_refused() {
    let upstream = MockUpstream::start().await;
    let extra = "limits:\n  max_header_bytes: 8KiB\n  max_body_bytes: 1KiB\n";
    let gateway = PorticoProcess::start(&gateway_config(&api("l", "/l", &upstream, "      []"), extra)).unwrap();
    let client = HttpClient::default();
    let big = "x".repeat(20_000);
    let reply = client.get(&gateway.url("/l/x"), &[("x-big", &big)]).await.unwrap();
    assert_eq!(reply.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let reply = client.send(Method::POST, &gateway.url("/l/x"), &[], Bytes::from(vec![b'a'; 4096])).await.unwrap();
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    let reply = client.send(Method::POST, &gateway.url("/l/x"), &[], "small").await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_speaks_http1_and_http2() {
    let upstream = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let certificate = TestCertificate::generate(dir.path());
    let config = format!(
        "listeners:\n  - address: 127.0.0.1:0\n    tls:\n      certificates:\n        - cert: {}\n          key: {}\n{ALLOW_LOOPBACK_UPSTREAMS}apis:\n{}",
        certificate.cert.display(),
        certificate.key.display(),
        api("t", "/t", &upstream, "      []")
    );
    std::fs::write(dir.path().join("portico.yaml"), config).unwrap();
    let gateway = PorticoProcess::start_in(dir).unwrap();
    for alpn in [&b"http/1.1"[..], &b"h2"[..]] {
        let (version, reply) = tls_get(gateway.listeners[0], &certificate.der, alpn, "/t/secure", &[]).await;
        assert_eq!(reply.0, StatusCode::OK);
        assert_eq!(version, if alpn == b"h2" { http::Version::HTTP_2 } else { http::Version::HTTP_11 });
        let seen: serde_json::Value = serde_json::from_slice(&reply.1).unwrap();
        assert_eq!(seen["headers"]["x-forwarded-proto"][0], "https");
    }

    // A renewed certificate, written over the files, is served without a restart; a key
    // that does not match is logged and the certificate in use kept.
    let address = gateway.listeners[0];
    let renewed = TestCertificate::generate(gateway.dir.path());
    let took = portico_tests::eventually("the renewed certificate served", Duration::from_secs(10), async || {
        tls_handshake(address, &renewed.der).await.is_ok()
    })
    .await;
    println!("renewed certificate served after {took:?}");
    assert!(tls_handshake(address, &certificate.der).await.is_err(), "the old one is no longer served");
    std::fs::write(&renewed.key, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
    assert!(gateway.wait_for_log("certificate files changed but cannot be used", Duration::from_secs(10)));
    assert!(tls_handshake(address, &renewed.der).await.is_ok(), "kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_listener_can_require_client_certificates() {
    let upstream = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let certificate = TestCertificate::generate(dir.path());
    let clients = tempfile::tempdir().unwrap();
    let client = TestCertificate::generate(clients.path());
    let strangers = tempfile::tempdir().unwrap();
    let stranger = TestCertificate::generate(strangers.path());
    let config = format!(
        "listeners:\n  - address: 127.0.0.1:0\n    tls:\n      certificates:\n        - cert: {}\n          key: {}\n      client_ca: {}\n{ALLOW_LOOPBACK_UPSTREAMS}apis:\n{}",
        certificate.cert.display(),
        certificate.key.display(),
        client.cert.display(),
        api("m", "/m", &upstream, "      []")
    );
    std::fs::write(dir.path().join("portico.yaml"), config).unwrap();
    let gateway = PorticoProcess::start_in(dir).unwrap();
    let address = gateway.listeners[0];
    assert_eq!(tls_request(address, &certificate.der, Some(&client), "/m/x").await, Ok(StatusCode::OK));
    for (who, presented) in [("no certificate", None), ("a certificate of another CA", Some(&stranger))] {
        let refused = tls_request(address, &certificate.der, presented, "/m/x").await;
        assert!(refused.is_err(), "{who}: {refused:?}");
    }
    assert_eq!(upstream.received().len(), 1, "only the certified client reached the upstream");

    // A new client CA, written over the file, is in force without a restart.
    std::fs::copy(&stranger.cert, &client.cert).unwrap();
    let took = portico_tests::eventually("the new client CA in force", Duration::from_secs(10), async || {
        tls_request(address, &certificate.der, Some(&stranger), "/m/x").await == Ok(StatusCode::OK)
    })
    .await;
    println!("new client CA in force after {took:?}");
    assert!(tls_request(address, &certificate.der, Some(&client), "/m/x").await.is_err(), "the old CA's client is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_open_attachment_that_fails_is_skipped_and_its_changes_discarded() {
    let upstream = MockUpstream::start().await;
    let policies = "      - policy: misbehave\n        config: {mode: panic-on-header}\n        on_failure: open\n";
    let extra = format!("modules:\n  misbehave:\n    path: {}\n", policies::MISBEHAVE);
    let gateway = PorticoProcess::start(&gateway_config(&api("o", "/o", &upstream, policies), &extra)).unwrap();
    let client = HttpClient::default();
    // The policy changes the request and the response when it passes...
    let reply = client.get(&gateway.url("/o/x"), &[]).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.upstream_header("x-misbehave").as_deref(), Some("passed"));
    assert_eq!(reply.header("x-misbehave"), Some("passed"));
    // ...and the same changes, then a panic, leave nothing behind.
    let reply = client.get(&gateway.url("/o/x"), &[("x-panic", "1")]).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.upstream_header("x-misbehave"), None, "the failed call's request changes are discarded");
    assert_eq!(reply.header("x-misbehave"), None, "the failed call's response headers are discarded");
    assert!(gateway.wait_for_log("policy failed open; skipped", Duration::from_secs(5)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_is_reloaded_without_a_signal() {
    let upstream = MockUpstream::start().await;
    let gateway = PorticoProcess::start(&stamp_config(&upstream, policies::STAMP_V1)).unwrap();
    let client = HttpClient::default();
    let version = || async { client.get(&gateway.url("/s/x"), &[]).await.unwrap().upstream_header("x-policy-version") };
    assert_eq!(version().await.as_deref(), Some("portico-test-stamp-v1"));
    gateway.write_config(&stamp_config(&upstream, policies::STAMP_V2)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while version().await.as_deref() != Some("portico-test-stamp-v2") {
        assert!(Instant::now() < deadline, "not reloaded:\n{}", gateway.logs().join("\n"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(wait_until(Duration::from_secs(5), || gateway.count_logs("file changed") >= 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_headers_get_431() {
    let upstream = MockUpstream::start().await;
    let extra = "limits:\n  max_headers: 20\n";
    let gateway = PorticoProcess::start(&gateway_config(&api("l", "/l", &upstream, "      []"), extra)).unwrap();
    let names: Vec<String> = (0..30).map(|i| format!("x-h{i}")).collect();
    let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    let client = HttpClient::default();
    assert_eq!(client.get(&gateway.url("/l/x"), &headers).await.unwrap().status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(client.get(&gateway.url("/l/x"), &headers[..5]).await.unwrap().status, StatusCode::OK);
}

/// RELIABILITY #16, in part: a slow request head, a slow buffered body, silent connections,
/// idle HTTP/1.1 and HTTP/2 connections and one connection too many are each cut (on the
/// admin listener too), and the gateway keeps serving. The timings printed are figures;
/// the bounds are 4× the configured limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_idle_and_surplus_connections_are_cut() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let upstream = MockUpstream::start().await;
    let policies = "      - policy: mediate\n        config: {envelope: wrapped}\n";
    let extra = format!(
        "limits:\n  header_read_timeout: 500ms\n  body_read_timeout: 500ms\n  idle_timeout: 500ms\n  max_connections: 3\nmodules:\n  mediate:\n    path: {}\n",
        policies::MEDIATE
    );
    let mut gateway = PorticoProcess::start(&gateway_config(&api("m", "/m", &upstream, policies), &extra)).unwrap();
    let address = gateway.listeners[0];
    let bound = Duration::from_secs(2);

    // A head that never ends.
    let mut slow_head = TcpStream::connect(address).await.unwrap();
    slow_head.write_all(b"GET /m/x HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
    let (closed, _) = until_closed(&mut slow_head, bound).await;
    let head_cut = closed.expect("a slow head is cut");

    // Connections that send nothing, or stop inside HTTP/2's preface (the protocol is not
    // known yet), on the API listener and the admin one; a slow head on the admin one.
    let admin = gateway.admin.unwrap();
    let opened = async |address, first: &'static [u8]| {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.write_all(first).await.unwrap();
        until_closed(&mut stream, bound).await.0
    };
    let (silent, preface, admin_silent, admin_head) = tokio::join!(
        opened(address, b""),
        opened(address, b"PRI * HTTP/2.0\r\n"),
        opened(admin, b""),
        opened(admin, b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    );
    let silent_cuts = [("silent", silent), ("half a preface", preface), ("admin, silent", admin_silent), ("admin, slow head", admin_head)];
    for (what, cut) in silent_cuts {
        assert!(cut.is_some(), "{what}: still open after {bound:?}");
    }

    // A body a policy buffers that stops half-way: 408, then the connection ends.
    let mut slow_body = TcpStream::connect(address).await.unwrap();
    slow_body.write_all(b"POST /m/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b").await.unwrap();
    let started = Instant::now();
    let (_, answer) = until_closed(&mut slow_body, bound).await;
    let body_cut = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // Idle keep-alive connections, HTTP/1.1 and HTTP/2 (prior knowledge), after one request.
    let mut idle = TcpStream::connect(address).await.unwrap();
    idle.write_all(b"GET /m/x HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let (closed, answer) = until_closed(&mut idle, bound).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let h1_idle_cut = closed.expect("an idle HTTP/1.1 connection is closed");
    let tcp = TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
    let driven = tokio::spawn(async move {
        let started = Instant::now();
        let _ = connection.await;
        started.elapsed()
    });
    let request = http::Request::get(format!("http://{address}/m/x")).body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
    assert_eq!(sender.send_request(request).await.unwrap().status(), StatusCode::OK);
    let h2_idle_cut = tokio::time::timeout(bound * 2, driven).await.expect("an idle HTTP/2 connection is closed").unwrap();

    // Three connections at once at most: a fourth is closed at once, and served again once
    // one of them is gone.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(address).await.unwrap());
    }
    let mut surplus = TcpStream::connect(address).await.unwrap();
    let (closed, _) = until_closed(&mut surplus, bound).await;
    assert!(closed.is_some(), "the connection over the cap is closed");
    drop(held);
    // The gateway frees their places once it sees them closed: a moment after.
    let client = HttpClient::default();
    portico_tests::eventually("a request served once the held connections are gone", bound, async || {
        client.get(&gateway.url("/m/x"), &[]).await.is_ok_and(|reply| reply.status == StatusCode::OK)
    })
    .await;
    assert!(gateway.is_running());

    println!(
        "cut after: slow head {head_cut:?}, slow body (408) {body_cut:?}, idle HTTP/1.1 {h1_idle_cut:?}, idle HTTP/2 {h2_idle_cut:?}, {silent_cuts:?} (limits 500ms)"
    );
    for (what, took) in [("slow head", head_cut), ("slow body", body_cut), ("idle HTTP/1.1", h1_idle_cut), ("idle HTTP/2", h2_idle_cut)] {
        assert!(took < bound, "{what}: {took:?}");
    }
}

/// A policy that floods the host with headers or attributes is refused past the host's caps
/// (an error to the policy, or a failed call), and the gateway keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_flooding_the_host_is_refused_and_the_gateway_serves_on() {
    let upstream = MockUpstream::start().await;
    let flood = |mode: &str| format!("      - policy: misbehave\n        config: {{mode: {mode}}}\n        timeout: 1s\n");
    let apis = format!(
        "{}{}{}",
        api("headers", "/headers", &upstream, &flood("flood-headers")),
        api("attributes", "/attributes", &upstream, &flood("flood-attributes")),
        api("fine", "/fine", &upstream, "      []")
    );
    let extra = format!("modules:\n  misbehave:\n    path: {}\n", policies::MISBEHAVE);
    let mut gateway = PorticoProcess::start(&gateway_config(&apis, &extra)).unwrap();
    let client = HttpClient::default();

    let reply = client.get(&gateway.url("/headers/x"), &[]).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let refused: usize = reply.upstream_header("x-flood-refused").unwrap().parse().unwrap();
    println!("5000 headers set on one request: {refused} refused");
    assert!(refused > 4_000, "{refused} refused");

    let reply = client.get(&gateway.url("/attributes/x"), &[]).await.unwrap();
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", reply.text());
    assert!(gateway.wait_for_log("at most 256 attributes", Duration::from_secs(5)), "{}", gateway.logs().join("\n"));

    assert_eq!(client.get(&gateway.url("/fine/x"), &[]).await.unwrap().status, StatusCode::OK);
    assert!(gateway.is_running());
}

/// Each policy counts in its own namespace: two modules counting under the same key (here
/// one component named twice) do not share a counter, and neither can reach another's; one
/// module on two APIs (two publishers' APIs, say) counts apart on each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_count_in_their_own_namespace() {
    let upstream = MockUpstream::start().await;
    let count = |module: &str| format!("      - policy: {module}\n        config: {{mode: count-shared}}\n");
    let apis = format!(
        "{}{}{}",
        api("a", "/a", &upstream, &count("counter-a")),
        api("b", "/b", &upstream, &count("counter-b")),
        api("c", "/c", &upstream, &count("counter-a"))
    );
    let extra = format!("modules:\n  counter-a:\n    path: {0}\n  counter-b:\n    path: {0}\n", policies::MISBEHAVE);
    let gateway = PorticoProcess::start(&gateway_config(&apis, &extra)).unwrap();
    let client = HttpClient::default();
    // One a minute under `shared`, for each of them.
    assert_eq!(client.get(&gateway.url("/a/x"), &[]).await.unwrap().status, StatusCode::OK);
    assert_eq!(client.get(&gateway.url("/b/x"), &[]).await.unwrap().status, StatusCode::OK, "b has its own `shared`");
    assert_eq!(client.get(&gateway.url("/a/x"), &[]).await.unwrap().status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(client.get(&gateway.url("/b/x"), &[]).await.unwrap().status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(client.get(&gateway.url("/c/x"), &[]).await.unwrap().status, StatusCode::OK, "counter-a on c counts apart from a");
    assert_eq!(client.get(&gateway.url("/c/x"), &[]).await.unwrap().status, StatusCode::TOO_MANY_REQUESTS);
}

/// A client's `Connection` header cannot remove a header a policy adds, and a client's
/// `X-Forwarded-Host` is replaced by the host the request was routed on, over HTTP/1.1
/// and over HTTP/2 (where the host is the `:authority`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_strip_policy_headers_or_forge_the_forwarded_host() {
    let upstream = MockUpstream::start().await;
    let policies = "      - policy: headers\n        config:\n          request:\n            set: {x-added: \"yes\"}\n";
    let gateway = PorticoProcess::start(&gateway_config(&api("c", "/c", &upstream, policies), "")).unwrap();
    let address = gateway.listeners[0];
    let reply =
        HttpClient::default().get(&gateway.url("/c/x"), &[("connection", "x-added"), ("x-forwarded-host", "evil.test")]).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.upstream_header("x-added").as_deref(), Some("yes"));
    assert_eq!(reply.upstream_header("x-forwarded-host"), Some(address.to_string()));

    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::get(format!("http://{address}/c/x"))
        .header("x-forwarded-host", "evil.test")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    use http_body_util::BodyExt;
    let echoed: serde_json::Value = serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(echoed["headers"]["x-forwarded-host"], serde_json::json!([address.to_string()]), "{echoed}");
}

/// RELIABILITY #17: path tricks sent without credentials to an API behind key-auth, next to
/// an open one. Whatever the gateway makes of each, the protected API's upstream sees none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_never_reach_a_protected_upstream() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = MockUpstream::start().await;
    let key_auth = "      - policy: key-auth\n";
    let apis = format!(
        "  - name: secure\n    context: /secure\n    upstream:\n      endpoints: [\"{0}/protected\"]\n    policies:\n{key_auth}\n  - name: open\n    context: /open\n    upstream:\n      endpoints: [\"{0}/public\"]\n    policies: []\n",
        upstream.url()
    );
    let gateway = PorticoProcess::start(&gateway_config(&apis, "consumers:\n  - name: shop\n    api_keys: [\"key-shop-0001\"]\n")).unwrap();
    let tricks = [
        "/secure/x",
        "/SECURE/x",
        "/Secure/x",
        "/%73ecure/x",
        "/%53ECURE/x",
        "/secure%2fx",
        "/secure%2Fx",
        "/secure;p=1/x",
        "/secure/x;p",
        "/secure/x%00",
        "/secure%00/x",
        "//secure/x",
        "/secure//x",
        "/./secure/x",
        "/open/../secure/x",
        "/open/%2e%2e/secure/x",
        "/open/%2E%2E/secure/x",
        "/open/.%2e/secure/x",
        "/open/%252e%252e/secure/x",
        "/open/..;/secure/x",
        "/open/x/../../secure/x",
        "/open/..%2fsecure/x",
        "/open/..%5csecure/x",
        "/open\\..\\secure/x",
        "/secure/x/..",
        "/secure/%2e%2e/open/x",
        "/secure/../open/x",
        "http://localhost/secure/x",
        "/secure/x#frag",
        "/secure/x?apikey=",
        "/secure/./x",
        "/secure/x/.",
        "/%2fsecure/x",
        "/open/%2e%2e%2fsecure/x",
        "/secure/x%20",
        "/sec%75re/x",
    ];
    let mut answers = Vec::new();
    for path in tricks {
        let mut stream = tokio::net::TcpStream::connect(gateway.listeners[0]).await.unwrap();
        stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
        let mut answer = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer)).await;
        answers.push(format!("{path} -> {}", answer.lines().next().unwrap_or("(closed)")));
    }
    let reached: Vec<String> = upstream.received().into_iter().filter(|p| p.starts_with("/protected")).collect();
    println!(
        "{} path tricks sent without credentials; the protected upstream saw {}:\n{}",
        tricks.len(),
        reached.len(),
        answers.join("\n")
    );
    assert!(reached.is_empty(), "{reached:?}\n{}", answers.join("\n"));
    // The open API does answer (so the tricks were routed, not all dropped at the door).
    assert!(upstream.received().iter().any(|p| p.starts_with("/public")), "{}", answers.join("\n"));
}

/// Raw HTTP/2 (prior knowledge) for the abuse cases hyper's client will not produce.
mod raw_h2 {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const GOAWAY: u8 = 0x7;
    pub const CONTINUATION: u8 = 0x9;
    /// `GET /` on `localhost`, HPACK: three static entries and one literal.
    pub const GET_ROOT: &[u8] = b"\x82\x86\x84\x41\x09localhost";

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// A connection with the preface and empty SETTINGS sent.
    pub async fn connect(address: std::net::SocketAddr) -> TcpStream {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
        stream.write_all(&frame(0x4, 0, 0, &[])).await.unwrap();
        stream
    }

    /// Read frames until the server closes the connection or `limit` passes: the kinds seen
    /// (with the error code of RST_STREAM and GOAWAY frames), and whether it closed.
    pub async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<(u8, u32)>, bool) {
        let deadline = tokio::time::Instant::now() + limit;
        let mut buffer = Vec::new();
        let mut frames = Vec::new();
        let mut chunk = [0u8; 65536];
        loop {
            while buffer.len() >= 9 {
                let len = (usize::from(buffer[0]) << 16) | (usize::from(buffer[1]) << 8) | usize::from(buffer[2]);
                if buffer.len() < 9 + len {
                    break;
                }
                let kind = buffer[3];
                let code = match kind {
                    RST_STREAM if len >= 4 => u32::from_be_bytes(buffer[9..13].try_into().unwrap()),
                    GOAWAY if len >= 8 => u32::from_be_bytes(buffer[13..17].try_into().unwrap()),
                    _ => 0,
                };
                frames.push((kind, code));
                buffer.drain(..9 + len);
            }
            match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return (frames, true),
                Ok(Ok(n)) => buffer.extend_from_slice(&chunk[..n]),
                Err(_) => return (frames, false),
            }
        }
    }
}

/// RELIABILITY #16, HTTP/2: a rapid-reset flood, a CONTINUATION flood and more streams than
/// allowed are each cut, and the gateway keeps serving: a legitimate client sending all
/// along gets every answer. Its RSS before and after, the times to cut, and the legitimate
/// client's p50/p99 alone and during the attacks are printed as figures (measured, not
/// asserted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_floods_are_cut_and_the_gateway_serves_on() {
    use raw_h2::*;
    use tokio::io::AsyncWriteExt;
    let upstream = MockUpstream::start().await;
    let gateway = PorticoProcess::start(&gateway_config(&api("m", "/m", &upstream, "      []"), "")).unwrap();
    let address = gateway.listeners[0];
    let before = gateway.rss_kib();
    let limit = Duration::from_secs(5);
    // Legitimate traffic alone for a second, then beside each attack.
    let quiet = LegitimateLoad::start(gateway.url("/m/x"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let quiet = quiet.stop().await;
    let load = LegitimateLoad::start(gateway.url("/m/x"));

    // Rapid reset: 20,000 streams opened and cancelled at once.
    let mut flood = connect(address).await;
    let mut burst = Vec::new();
    for i in 0..20_000u32 {
        let stream = 2 * i + 1;
        burst.extend(frame(HEADERS, 0x5, stream, GET_ROOT));
        burst.extend(frame(RST_STREAM, 0, stream, &8u32.to_be_bytes()));
    }
    let started = Instant::now();
    let _ = flood.write_all(&burst).await;
    let (frames, closed) = read_until_closed(&mut flood, limit).await;
    let reset_cut = started.elapsed();
    assert!(
        closed && frames.iter().any(|(kind, _)| *kind == GOAWAY),
        "rapid reset not cut: {:?}",
        &frames[frames.len().saturating_sub(5)..]
    );

    // CONTINUATION flood: a header block that never ends.
    let mut flood = connect(address).await;
    let started = Instant::now();
    let _ = flood.write_all(&frame(HEADERS, 0x0, 1, GET_ROOT)).await;
    let filler = vec![0x40u8; 16 * 1024];
    for _ in 0..1_000 {
        if flood.write_all(&frame(CONTINUATION, 0x0, 1, &filler)).await.is_err() {
            break;
        }
    }
    let (frames, closed) = read_until_closed(&mut flood, limit).await;
    let continuation_cut = started.elapsed();
    assert!(closed || frames.iter().any(|(kind, _)| *kind == GOAWAY), "CONTINUATION flood not cut: {frames:?}");

    // Too many streams: 300 left open (no END_STREAM) where 256 are allowed.
    let mut many = connect(address).await;
    let mut burst = Vec::new();
    for i in 0..300u32 {
        burst.extend(frame(HEADERS, 0x4, 2 * i + 1, GET_ROOT));
    }
    many.write_all(&burst).await.unwrap();
    let (frames, _) = read_until_closed(&mut many, Duration::from_secs(2)).await;
    let refused = frames.iter().filter(|(kind, code)| *kind == RST_STREAM && *code == 0x7).count()
        + usize::from(frames.iter().any(|(kind, _)| *kind == GOAWAY));
    assert!(refused > 0, "streams over the limit were not refused: {} frames", frames.len());
    drop(many);

    let reply = HttpClient::default().get(&gateway.url("/m/x"), &[]).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let attacked = load.stop().await;
    assert_eq!((quiet.failures, attacked.failures), (0, 0), "legitimate requests failed: alone {quiet}; during the attacks {attacked}");
    let after = gateway.rss_kib();
    println!(
        "HTTP/2: rapid reset (20000 streams) cut after {reset_cut:?}, CONTINUATION flood after {continuation_cut:?}, {refused} refusal(s) past 256 streams; RSS {before:?} KiB -> {after:?} KiB; legitimate traffic alone: {quiet}; during the attacks: {attacked}"
    );
}

/// RELIABILITY #15: a request-smuggling corpus over raw TCP against a key-auth route. Each
/// case hides a second request, without credentials, for `/secure/smuggled`; the recording
/// upstream must never receive it, whatever the gateway answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smuggling_corpus_never_reaches_the_upstream_unauthenticated() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = MockUpstream::start().await;
    let apis = format!(
        "  - name: secure\n    context: /secure\n    upstream:\n      endpoints: [\"{}/protected\"]\n    policies:\n      - policy: key-auth\n",
        upstream.url()
    );
    let mut gateway =
        PorticoProcess::start(&gateway_config(&apis, "consumers:\n  - name: shop\n    api_keys: [\"key-shop-0001\"]\n")).unwrap();
    let smuggled = "GET /secure/smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let chunked_body = format!("0\r\n\r\n{smuggled}");
    let head = |headers: &str, body: &str| format!("POST /secure/x HTTP/1.1\r\nHost: a\r\napikey: key-shop-0001\r\n{headers}\r\n{body}");
    let n = chunked_body.len();
    let corpus: Vec<(&str, String)> = vec![
        ("CL then TE", head(&format!("Content-Length: {n}\r\nTransfer-Encoding: chunked\r\n"), &chunked_body)),
        ("TE then CL", head(&format!("Transfer-Encoding: chunked\r\nContent-Length: {n}\r\n"), &chunked_body)),
        ("CL.CL", head(&format!("Content-Length: 0\r\nContent-Length: {}\r\n", smuggled.len()), smuggled)),
        ("signed CL", head(&format!("Content-Length: +{}\r\n", smuggled.len()), smuggled)),
        ("CL with spaces", head(&format!("Content-Length: 0 {}\r\n", smuggled.len()), smuggled)),
        ("TE list", head("Transfer-Encoding: chunked, identity\r\n", &chunked_body)),
        ("TE identity, chunked", head("Transfer-Encoding: identity, chunked\r\n", &chunked_body)),
        ("TE space before colon", head(&format!("Transfer-Encoding : chunked\r\nContent-Length: {n}\r\n"), &chunked_body)),
        ("TE xchunked", head(&format!("Transfer-Encoding: xchunked\r\nContent-Length: {n}\r\n"), &chunked_body)),
        ("TE tab", head(&format!("Transfer-Encoding:\tchunked\r\nContent-Length: {n}\r\n"), &chunked_body)),
        ("TE twice", head(&format!("Transfer-Encoding: chunked\r\nTransfer-encoding: cow\r\nContent-Length: {n}\r\n"), &chunked_body)),
        ("TE obs-fold", head(&format!("Transfer-Encoding:\r\n chunked\r\nContent-Length: {n}\r\n"), &chunked_body)),
        ("bare LF", head(&format!("Content-Length: {n}\nTransfer-Encoding: chunked\n"), &chunked_body).replace("\r\n", "\n")),
        ("huge chunk size", head("Transfer-Encoding: chunked\r\n", &format!("ffffffffffffffffffff\r\n{smuggled}"))),
        ("chunk extension", head("Transfer-Encoding: chunked\r\n", &format!("0;a=\"b\r\n\r\n{smuggled}"))),
        ("LF-only chunk", head("Transfer-Encoding: chunked\r\n", &format!("0\n\n{smuggled}"))),
        ("pipelined after CL 0", head("Content-Length: 0\r\n", smuggled)),
        ("absolute-form vs Host", "GET http://other.test/secure/smuggled HTTP/1.1\r\nHost: a\r\n\r\n".to_owned()),
        (
            "absolute-form with key elsewhere",
            format!("GET http://a/secure/x HTTP/1.1\r\nHost: b\r\napikey: key-shop-0001\r\nContent-Length: 0\r\n\r\n{smuggled}"),
        ),
    ];
    let mut answers = Vec::new();
    for (name, raw) in &corpus {
        let mut stream = tokio::net::TcpStream::connect(gateway.listeners[0]).await.unwrap();
        let _ = stream.write_all(raw.as_bytes()).await;
        let mut answer = Vec::new();
        let mut buffer = [0u8; 8192];
        let deadline = tokio::time::Instant::now() + Duration::from_millis(700);
        while let Ok(Ok(read)) = tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            if read == 0 {
                break;
            }
            answer.extend_from_slice(&buffer[..read]);
        }
        let text = String::from_utf8_lossy(&answer);
        let statuses: Vec<&str> = text.lines().filter(|l| l.starts_with("HTTP/1.1 ")).map(|l| &l[9..12]).collect();
        answers.push(format!("{name}: {}", if statuses.is_empty() { "closed".to_owned() } else { statuses.join(", ") }));
    }
    let received = upstream.received();
    let reached: Vec<&String> = received.iter().filter(|p| p.contains("smuggled")).collect();
    println!(
        "{} smuggling cases; the upstream received {} request(s), none smuggled:\n{}",
        corpus.len(),
        received.len(),
        answers.join("\n")
    );
    assert!(reached.is_empty(), "smuggled through: {reached:?}\n{}", answers.join("\n"));
    assert!(received.iter().all(|p| p == "/protected/x"), "{received:?}");
    assert!(gateway.is_running());
}

/// Traces: the gateway's server span continues the client's trace, each policy call and the
/// upstream call are its children, and the upstream gets the trace's context; a trace the
/// client did not sample is followed upstream but not recorded; one the client did not
/// start is started here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_continue_the_client_s_and_reach_the_upstream() {
    let upstream = MockUpstream::start().await;
    let receiver = OtlpReceiver::start().await;
    let policies =
        "      - policy: key-auth\n      - policy: headers\n        config:\n          response:\n            set: {x-traced: \"yes\"}\n";
    let traces = format!(
        "traces:\n  endpoint: {}\n  sampling_ratio: 1\n  resource: {{deployment.environment: test}}\nanalytics: {{report_every: 100ms}}\n",
        receiver.endpoint()
    );
    let config = gateway_config(
        &api("traced", "/traced", &upstream, policies),
        &format!("{traces}consumers:\n  - name: shop\n    api_keys: [\"key-shop-0001\"]\n"),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("portico.yaml"), config).unwrap();
    let file = dir.path().join("portico.yaml").display().to_string();
    // Spans leave in batches every 100 ms rather than the SDK's default 5 s.
    let gateway = PorticoProcess::spawn(dir, &["serve", "--config", &file], &[("OTEL_BSP_SCHEDULE_DELAY", "100")]).unwrap();
    let client = HttpClient::default();

    let (trace, parent) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let headers = [("apikey", "key-shop-0001"), ("traceparent", &format!("00-{trace}-{parent}-01")), ("tracestate", "vendor=1")];
    let reply = client.get(&gateway.url("/traced/items"), &headers).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let sent_upstream = reply.upstream_header("traceparent").unwrap();
    assert_eq!(reply.upstream_header("tracestate").as_deref(), Some("vendor=1"));
    let spans = eventually_spans(&receiver, trace, 4).await;
    let server = spans.iter().find(|s| s.kind == "SERVER").unwrap();
    assert_eq!((server.parent_span_id.as_str(), server.service.as_str()), (parent, "portico-gateway"), "{spans:#?}");
    assert_eq!(server.name, "GET /*", "no operation is declared: the API's catch-all is the route: {server:?}");
    for (key, value) in [
        ("http.route", "/*"),
        ("http.request.method", "GET"),
        ("http.response.status_code", "200"),
        ("url.path", "/traced/items"),
        ("portico.api", "traced"),
        ("portico.application", "shop"),
        ("url.scheme", "http"),
    ] {
        assert_eq!(server.attributes.get(key).map(String::as_str), Some(value), "{key}: {server:?}");
    }
    let mut policies: Vec<(&str, &str, &str)> = spans
        .iter()
        .filter(|s| s.name.starts_with("policy "))
        .map(|s| (s.name.as_str(), s.attributes["portico.policy.phase"].as_str(), s.attributes["portico.policy.outcome"].as_str()))
        .collect();
    policies.sort();
    assert_eq!(
        policies,
        [("policy headers", "request", "continue"), ("policy headers", "response", "continue"), ("policy key-auth", "request", "continue")]
    );
    let children: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.kind != "SERVER").collect();
    assert!(children.iter().all(|s| s.parent_span_id == server.span_id && s.trace_id == trace), "{spans:#?}");
    assert!(
        spans.iter().filter(|s| s.name.starts_with("policy ")).all(|s| s.attributes["portico.policy.digest"].len() == 64),
        "{spans:#?}"
    );
    let client_span = spans.iter().find(|s| s.kind == "CLIENT").unwrap();
    assert_eq!(client_span.attributes.get("http.response.status_code").map(String::as_str), Some("200"));
    assert_eq!(sent_upstream, format!("00-{trace}-{}-01", client_span.span_id), "the upstream's parent is the upstream call's span");

    // A refusal by a policy is recorded as that policy's outcome.
    let (refused_trace, refused_parent) = ("5bf92f3577b34da6a3ce929d0e0e4736", "10f067aa0ba902b7");
    let reply =
        client.get(&gateway.url("/traced/items"), &[("traceparent", &format!("00-{refused_trace}-{refused_parent}-01"))]).await.unwrap();
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let spans = eventually_spans(&receiver, refused_trace, 2).await;
    let key_auth = spans.iter().find(|s| s.name == "policy key-auth").unwrap();
    assert_eq!(key_auth.attributes["portico.policy.outcome"], "respond 401");
    assert!(!spans.iter().any(|s| s.kind == "CLIENT"), "nothing went upstream: {spans:#?}");

    // Not sampled by the client: followed upstream, not recorded.
    let unsampled = "6bf92f3577b34da6a3ce929d0e0e4736";
    let reply = client
        .get(&gateway.url("/traced/items"), &[("apikey", "key-shop-0001"), ("traceparent", &format!("00-{unsampled}-{parent}-00"))])
        .await
        .unwrap();
    let forwarded = reply.upstream_header("traceparent").unwrap();
    assert!(forwarded.starts_with(&format!("00-{unsampled}-")) && forwarded.ends_with("-00") && !forwarded.contains(parent), "{forwarded}");

    // None from the client: a new trace, recorded (a ratio of 1), its id sent upstream.
    let reply = client.get(&gateway.url("/traced/items"), &[("apikey", "key-shop-0001")]).await.unwrap();
    let started = reply.upstream_header("traceparent").unwrap();
    let new_trace = started.split('-').nth(1).unwrap().to_owned();
    let spans = eventually_spans(&receiver, &new_trace, 4).await;
    assert_eq!(spans.iter().find(|s| s.kind == "SERVER").unwrap().parent_span_id, "", "a root span");
    // By now the batch with the unsampled request went too: it held nothing of its trace.
    assert!(receiver.spans().iter().all(|s| s.trace_id != unsampled));

    // Its file asks for usage analytics: without a control plane, they are logged.
    let usage = || -> Vec<(String, u64)> {
        let mut counted: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
        for event in gateway.events().into_iter().filter(|e| e["message"] == "usage") {
            let report: serde_json::Value = serde_json::from_str(event["report"].as_str().unwrap()).unwrap();
            for row in report["rows"].as_array().unwrap() {
                *counted.entry(format!("{} {}xx", row["api"].as_str().unwrap(), row["class"])).or_default() +=
                    row["requests"].as_u64().unwrap();
            }
        }
        counted.into_iter().collect()
    };
    eventually("the usage logged", Duration::from_secs(10), async || usage().iter().map(|(_, n)| n).sum::<u64>() == 4).await;
    assert_eq!(usage(), [("traced 2xx".to_owned(), 3), ("traced 4xx".to_owned(), 1)]);
}

/// The spans of `trace` the receiver has once it has at least `count`.
async fn eventually_spans(receiver: &OtlpReceiver, trace: &str, count: usize) -> Vec<ReceivedSpan> {
    eventually("the spans of a trace", Duration::from_secs(10), async || {
        receiver.spans().iter().filter(|s| s.trace_id == trace).count() >= count
    })
    .await;
    receiver.spans().into_iter().filter(|s| s.trace_id == trace).collect()
}

/// An OpenID provider that takes `delay` to answer any introspection, for which every token
/// is active for the client `shop`. Returns its issuer.
async fn slow_provider(delay: Duration) -> String {
    use http_body_util::Full;
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = key.public_key_raw().to_vec();
    let b64 = |bytes: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes);
    let jwks = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k", "x": b64(&point[1..33]), "y": b64(&point[33..65])}]});
    let document = serde_json::json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks"), "introspection_endpoint": format!("{issuer}/introspect")});
    let answer = serde_json::json!({"active": true, "client_id": "shop", "exp": unix_now() + 600});
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (jwks, document, answer) = (jwks.clone(), document.clone(), answer.clone());
            let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let body = match request.uri().path() {
                    "/jwks" => Some(jwks.clone()),
                    "/.well-known/openid-configuration" => Some(document.clone()),
                    "/introspect" => None,
                    _ => Some(serde_json::json!({})),
                };
                let answer = answer.clone();
                async move {
                    let body = match body {
                        Some(body) => body,
                        None => {
                            tokio::time::sleep(delay).await;
                            answer
                        }
                    };
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(body.to_string()))))
                }
            });
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    issuer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_slow_provider_does_not_count_against_key_auth_s_deadline() {
    let upstream = MockUpstream::start().await;
    // The provider takes six times key-auth's whole budget to answer.
    let issuer = slow_provider(Duration::from_millis(300)).await;
    let key_auth = "      - policy: key-auth\n        config: {api_key: false}\n        timeout: 50ms\n";
    let issuers = format!(
        "jwt_issuers:\n  - issuer: {issuer}\n    audiences: [portico]\n    discovery:\n      introspection: {{client_id: gw, client_secret: gw-secret, cache_ttl: 60s}}\n"
    );
    let gateway = PorticoProcess::start(&gateway_config(&api("outside", "/outside", &upstream, key_auth), &issuers)).unwrap();
    let client = HttpClient::default();
    let reply = client.get(&gateway.url("/outside/x"), &[("authorization", "Bearer slow-token")]).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}
