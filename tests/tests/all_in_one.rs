//! The all-in-one profile end to end, in one process on embedded SQLite:
//! publish an API, sign up, create an application, subscribe, get a token, call through
//! the gateway, hit the limit, revoke the token; and a tier change reaching the gateway.

use std::path::Path;
use std::time::Duration;

use http::{Method, StatusCode};
use portico_tests::{
    ControlPlaneClient, HttpClient, MockUpstream, PorticoProcess, PrometheusServer, TestCertificate, tls_get, tls_request,
};
use serde_json::{Value, json};

fn basic(client_id: &str, secret: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{secret}")))
}

/// `POST /oauth2/token` with the client credentials grant, for the OAuth client `oauth`
/// (as the control plane made it).
async fn client_credentials(client: &HttpClient, cp: &ControlPlaneClient, oauth: &Value) -> portico_tests::Reply {
    let authorization = basic(oauth["client_id"].as_str().unwrap(), oauth["client_secret"].as_str().unwrap());
    let headers = [("content-type", "application/x-www-form-urlencoded"), ("authorization", authorization.as_str())];
    client.send(Method::POST, &format!("{}/oauth2/token", cp.base), &headers, "grant_type=client_credentials").await.unwrap()
}

async fn eventually(what: &str, check: impl AsyncFnMut() -> bool) -> Duration {
    portico_tests::eventually(what, Duration::from_secs(5), check).await
}

/// An all-in-one process on embedded SQLite in a fresh folder, on ports it picks.
fn start_all_in_one(admin_password: &str) -> PorticoProcess {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    PorticoProcess::spawn(
        dir,
        &["all-in-one", "--data-dir", &data, "--gateway", "127.0.0.1:0", "--api", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
        &[("PORTICO_ADMIN_PASSWORD", admin_password)],
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_subscribe_call_hit_the_limit_and_revoke() {
    let upstream = MockUpstream::start().await;
    let process = start_all_in_one("walkthrough-admin-1");
    assert_eq!(process.count_logs("non-loopback"), 0, "plain HTTP on loopback is not warned about");
    let data = process.dir.path().join("data").display().to_string();
    let cp = ControlPlaneClient::new(process.control_plane.unwrap());
    let gateway = |path: &str| process.url(path);
    let client = HttpClient::default();

    // Admin: a publisher account and a small tier to hit.
    let admin = cp.login("admin", "walkthrough-admin-1").await;
    cp.allow_loopback_upstreams(&admin).await;
    cp.ok(Method::POST, "/api/v1/users", Some(&admin), json!({"username": "pat", "password": "publisher-pass-1", "role": "publisher"}))
        .await;
    cp.ok(
        Method::PUT,
        "/api/v1/tiers/subscription/Tiny",
        Some(&admin),
        json!({"description": "4 per minute", "requests": 4, "per_ms": 60000}),
    )
    .await;

    // Publisher: create, publish, snapshot and deploy an API.
    let pat = cp.login("pat", "publisher-pass-1").await;
    let api = cp
        .ok(
            Method::POST,
            "/api/v1/apis",
            Some(&pat),
            json!({
                "name": "pets", "version": "v1", "context": "/pets",
                "endpoints": [format!("{}/backend", upstream.url())],
                "operations": [{"method": "GET", "path": "/items/{id}"}, {"method": "DELETE", "path": "/items/{id}", "scopes": ["pets:write"]}],
                "tiers": ["Tiny", "Unlimited"],
                "scopes": [{"name": "pets:write", "description": "change pets", "roles": ["subscriber"]}],
            }),
        )
        .await;
    let api_id = api["id"].as_str().unwrap().to_owned();
    cp.ok(Method::POST, &format!("/api/v1/apis/{api_id}/lifecycle"), Some(&pat), json!({"action": "publish"})).await;
    let revision = cp.ok(Method::POST, &format!("/api/v1/apis/{api_id}/revisions"), Some(&pat), json!({})).await;
    cp.ok(
        Method::POST,
        &format!("/api/v1/apis/{api_id}/deployments"),
        Some(&pat),
        json!({"revision_id": revision["id"], "environments": ["default"]}),
    )
    .await;

    // Subscriber: sign up, create an application, subscribe, get credentials.
    cp.ok(Method::POST, "/api/v1/signup", None, json!({"username": "alice", "password": "alice-password-1"})).await;
    let alice = cp.login("alice", "alice-password-1").await;
    let app = cp.ok(Method::POST, "/api/v1/applications", Some(&alice), json!({"name": "shop"})).await;
    let app_id = app["id"].as_str().unwrap().to_owned();
    cp.ok(Method::POST, &format!("/api/v1/applications/{app_id}/subscriptions"), Some(&alice), json!({"api_id": api_id, "tier": "Tiny"}))
        .await;
    let oauth = cp.ok(Method::POST, &format!("/api/v1/applications/{app_id}/oauth-client"), Some(&alice), json!({})).await;
    let (client_id, secret) = (oauth["client_id"].as_str().unwrap().to_owned(), oauth["client_secret"].as_str().unwrap().to_owned());
    let token = client
        .send(
            Method::POST,
            &format!("{}/oauth2/token", cp.base),
            &[("content-type", "application/x-www-form-urlencoded"), ("authorization", &basic(&client_id, &secret))],
            "grant_type=client_credentials",
        )
        .await
        .unwrap();
    assert_eq!(token.status, StatusCode::OK, "{}", token.text());
    let access_token = token.json()["access_token"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {access_token}");

    // Through the gateway: the deploy reached it without a restart.
    let took = eventually("the deployment reaching the gateway", async || {
        client.get(&gateway("/pets/v1/items/1"), &[("authorization", &bearer)]).await.unwrap().status == StatusCode::OK
    })
    .await;
    println!("deployed API answered through the gateway after {took:?}");
    let reply = client.get(&gateway("/pets/v1/items/2"), &[]).await.unwrap();
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let mut tampered = access_token.clone();
    tampered.pop();
    tampered.push(if access_token.ends_with('A') { 'B' } else { 'A' });
    let reply = client.get(&gateway("/pets/v1/items/2"), &[("authorization", &format!("Bearer {tampered}"))]).await.unwrap();
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

    // Tokens signed with the key manager's real key but expired, or for another audience.
    // The database holds the private key sealed; the data folder holds the sealing key.
    let sealing = portico_control_plane::secrets::SealingKey::from_file_or_new(&Path::new(&data).join("secrets.key")).unwrap();
    let db = portico_control_plane::db::Db::connect(&format!("sqlite://{}/portico.db", data), sealing.clone()).await.unwrap();
    let (kid, sealed): (String, String) =
        sqlx::query_as("SELECT kid, private_pem FROM signing_keys WHERE active = 1").fetch_one(&db.pool).await.unwrap();
    assert!(sealed.starts_with("sealed:v1:") && !sealed.contains("PRIVATE KEY"), "sealed at rest");
    let private_pem =
        String::from_utf8(sealing.open(&sealed, &portico_control_plane::secrets::signing_key_context(&kid)).unwrap()).unwrap();
    let hmac: String =
        sqlx::query_scalar("SELECT value FROM settings WHERE key = 'api_key_hmac_secret'").fetch_one(&db.pool).await.unwrap();
    assert!(hmac.starts_with("sealed:v1:"), "the API-key HMAC secret is sealed too");
    // Another key does not open this database.
    let other = portico_control_plane::secrets::SealingKey::from_hex(&portico_control_plane::secrets::SealingKey::generate_hex()).unwrap();
    let refused = portico_control_plane::db::Db::connect(&format!("sqlite://{}/portico.db", data), other).await.unwrap_err();
    assert!(refused.to_string().contains("sealed with another key"), "{refused}");
    let (header, payload) = access_token.split_once('.').map(|(h, rest)| (h, rest.split('.').next().unwrap())).unwrap();
    let _ = header;
    let claims: Value = {
        use base64::Engine;
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    };
    let key = jsonwebtoken::EncodingKey::from_ec_pem(private_pem.as_bytes()).unwrap();
    let mut jwt_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    jwt_header.kid = Some(kid);
    // Without `typ: at+jwt` the same signature is some other JWT of the key manager's.
    let untyped = jsonwebtoken::encode(&jwt_header, &claims, &key).unwrap();
    let reply = client.get(&gateway("/pets/v1/items/2"), &[("authorization", &format!("Bearer {untyped}"))]).await.unwrap();
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    assert!(reply.text().contains("`typ` must be `at+jwt`"), "{}", reply.text());
    jwt_header.typ = Some("at+jwt".to_owned());
    let resign = |claims: &Value| jsonwebtoken::encode(&jwt_header, claims, &key).unwrap();
    let genuine = resign(&claims);
    let reply = client.get(&gateway("/pets/v1/items/2"), &[("authorization", &format!("Bearer {genuine}"))]).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "the re-signed copy is valid: {}", reply.text());
    let mut expired = claims.clone();
    expired["exp"] = (portico_tests::unix_now() - 600).into();
    let mut other_audience = claims.clone();
    other_audience["aud"] = "someone-else".into();
    for (case, forged) in [("expired", &expired), ("wrong audience", &other_audience)] {
        let reply = client.get(&gateway("/pets/v1/items/2"), &[("authorization", &format!("Bearer {}", resign(forged)))]).await.unwrap();
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{case}: {}", reply.text());
    }

    // Scopes: DELETE needs `pets:write`, which the first token lacks (403, before the
    // throttle: no quota used); a token granted it passes.
    let reply = client.send(Method::DELETE, &gateway("/pets/v1/items/4"), &[("authorization", &bearer)], "").await.unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text());
    assert!(
        reply.header("www-authenticate").unwrap().contains("error=\"insufficient_scope\", scope=\"pets:write\""),
        "{:?}",
        reply.headers
    );
    let scoped = client
        .send(
            Method::POST,
            &format!("{}/oauth2/token", cp.base),
            &[("content-type", "application/x-www-form-urlencoded"), ("authorization", &basic(&client_id, &secret))],
            "grant_type=client_credentials&scope=pets%3Awrite",
        )
        .await
        .unwrap();
    assert_eq!((scoped.status, scoped.json()["scope"].as_str()), (StatusCode::OK, Some("pets:write")), "{}", scoped.text());
    let scoped = format!("Bearer {}", scoped.json()["access_token"].as_str().unwrap());
    let reply = client.send(Method::DELETE, &gateway("/pets/v1/items/4"), &[("authorization", &scoped)], "").await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    // The tier: 4 per minute, three used above.
    let reply = client.get(&gateway("/pets/v1/items/3"), &[("authorization", &bearer)]).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["path"], "/backend/items/3");
    let reply = client.get(&gateway("/pets/v1/items/5"), &[("authorization", &bearer)]).await.unwrap();
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "{}", reply.text());
    assert!(reply.header("retry-after").is_some());

    // Revocation reaches the gateway within a second.
    let revoked = client
        .send(
            Method::POST,
            &format!("{}/oauth2/revoke", cp.base),
            &[("content-type", "application/x-www-form-urlencoded"), ("authorization", &basic(&client_id, &secret))],
            format!("token={access_token}"),
        )
        .await
        .unwrap();
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.text());
    let took = eventually("the revocation reaching the gateway", async || {
        client.get(&gateway("/pets/v1/items/6"), &[("authorization", &bearer)]).await.unwrap().status == StatusCode::UNAUTHORIZED
    })
    .await;
    println!("revoked token refused by the gateway after {took:?}");
    assert!(took < Duration::from_secs(1), "revocation took {took:?}");

    // An application not subscribed to the API is refused even with a valid token.
    let other = cp.ok(Method::POST, "/api/v1/applications", Some(&alice), json!({"name": "other"})).await;
    let other_id = other["id"].as_str().unwrap();
    let other_client = cp.ok(Method::POST, &format!("/api/v1/applications/{other_id}/oauth-client"), Some(&alice), json!({})).await;
    let token = client_credentials(&client, &cp, &other_client).await;
    let other_token = token.json()["access_token"].as_str().unwrap().to_owned();
    let reply = client.get(&gateway("/pets/v1/items/7"), &[("authorization", &format!("Bearer {other_token}"))]).await.unwrap();
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text());

    // API keys work too, and are stored hashed.
    let key = cp.ok(Method::POST, &format!("/api/v1/applications/{other_id}/api-keys"), Some(&alice), json!({})).await;
    let key = key["key"].as_str().or(key["api_key"].as_str()).expect("the key is shown once").to_owned();
    cp.ok(
        Method::POST,
        &format!("/api/v1/applications/{other_id}/subscriptions"),
        Some(&alice),
        json!({"api_id": api_id, "tier": "Unlimited"}),
    )
    .await;
    eventually("the API key working", async || {
        client.get(&gateway("/pets/v1/items/8"), &[("apikey", &key)]).await.unwrap().status == StatusCode::OK
    })
    .await;
    // The application's own tier limits it across its subscriptions.
    cp.ok(Method::PUT, "/api/v1/tiers/application/TwoPerMin", Some(&admin), json!({"requests": 2, "per_ms": 60000})).await;
    let limited = cp.ok(Method::POST, "/api/v1/applications", Some(&alice), json!({"name": "limited", "tier": "TwoPerMin"})).await;
    let limited_id = limited["id"].as_str().unwrap();
    cp.ok(
        Method::POST,
        &format!("/api/v1/applications/{limited_id}/subscriptions"),
        Some(&alice),
        json!({"api_id": api_id, "tier": "Unlimited"}),
    )
    .await;
    let limited_key = cp.ok(Method::POST, &format!("/api/v1/applications/{limited_id}/api-keys"), Some(&alice), json!({})).await;
    let limited_key = limited_key["key"].as_str().unwrap().to_owned();
    eventually("the second key working", async || {
        client.get(&gateway("/pets/v1/items/9"), &[("apikey", &limited_key)]).await.unwrap().status == StatusCode::OK
    })
    .await;
    assert_eq!(client.get(&gateway("/pets/v1/items/9"), &[("apikey", &limited_key)]).await.unwrap().status, StatusCode::OK);
    let reply = client.get(&gateway("/pets/v1/items/9"), &[("apikey", &limited_key)]).await.unwrap();
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "the application tier: {}", reply.text());

    let mut database = std::fs::read(std::path::Path::new(&data).join("portico.db")).unwrap();
    database.extend(std::fs::read(std::path::Path::new(&data).join("portico.db-wal")).unwrap_or_default());
    let contains = |needle: &str| database.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(!contains(&key), "the API key is stored in plain text");
    assert!(!contains(&secret), "the client secret is stored in plain text");
    let logs = process.logs().join("\n");
    assert!(!logs.contains(&secret) && !logs.contains(&key) && !logs.contains(&access_token), "a credential was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_change_reaches_the_running_gateway_within_a_second() {
    let upstream = MockUpstream::start().await;
    let process = start_all_in_one("tier-admin-pass-1");
    let cp = ControlPlaneClient::new(process.control_plane.unwrap());
    let client = HttpClient::default();
    let admin = cp.login("admin", "tier-admin-pass-1").await;
    cp.allow_loopback_upstreams(&admin).await;
    let roomy = json!({"requests": 1_000_000, "per_ms": 60000});
    cp.ok(Method::PUT, "/api/v1/tiers/subscription/Elastic", Some(&admin), roomy).await;
    let api = cp
        .ok(
            Method::POST,
            "/api/v1/apis",
            Some(&admin),
            json!({"name": "tiered", "version": "v1", "context": "/tiered", "endpoints": [upstream.url()],
                "operations": [{"method": "GET", "path": "/x"}], "tiers": ["Elastic"]}),
        )
        .await;
    let api = api["id"].as_str().unwrap().to_owned();
    cp.ok(Method::POST, &format!("/api/v1/apis/{api}/lifecycle"), Some(&admin), json!({"action": "publish"})).await;
    let app = cp.ok(Method::POST, "/api/v1/applications", Some(&admin), json!({"name": "tiered-app"})).await;
    let app = app["id"].as_str().unwrap().to_owned();
    cp.ok(Method::POST, &format!("/api/v1/applications/{app}/subscriptions"), Some(&admin), json!({"api_id": api, "tier": "Elastic"}))
        .await;
    let key = cp.ok(Method::POST, &format!("/api/v1/applications/{app}/api-keys"), Some(&admin), json!({})).await;
    let key = key["key"].as_str().unwrap().to_owned();
    let revision = cp.ok(Method::POST, &format!("/api/v1/apis/{api}/revisions"), Some(&admin), json!({})).await;
    let deployed = cp
        .call(
            Method::POST,
            &format!("/api/v1/apis/{api}/deployments?wait_ms=10000"),
            Some(&admin),
            Some(json!({"revision_id": revision["id"], "environments": ["default"]})),
        )
        .await;
    assert_eq!(deployed.status, StatusCode::CREATED, "the deploy waits for the gateway: {}", deployed.text());
    let call = async || client.get(&process.url("/tiered/v1/x"), &[("apikey", &key)]).await.unwrap().status;
    assert_eq!(call().await, StatusCode::OK);

    // One request a minute from now on: the gateway refuses the second within a second,
    // long before the 30 s periodic rebuild.
    cp.ok(Method::PUT, "/api/v1/tiers/subscription/Elastic", Some(&admin), json!({"requests": 1, "per_ms": 60000})).await;
    let took = portico_tests::eventually("the tier change reaching the gateway", Duration::from_secs(1), async || {
        call().await == StatusCode::TOO_MANY_REQUESTS
    })
    .await;
    println!("tier change enforced by the gateway after {took:?}");
}

/// The all-in-one profile over TLS: the control plane with `--tls-cert`/`--tls-key`, the
/// gateway's listener from its `--settings`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_in_one_serves_both_planes_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certificate = TestCertificate::generate(dir.path());
    let settings = dir.path().join("gateway.yaml");
    let yaml = "listeners:\n  - address: 127.0.0.1:0\n    tls:\n      certificates:\n        - {cert: server.pem, key: server.key}\nadmin: {address: 127.0.0.1:0}\n";
    std::fs::write(&settings, yaml).unwrap();
    let data = dir.path().join("data").display().to_string();
    let (cert, key, settings) =
        (certificate.cert.display().to_string(), certificate.key.display().to_string(), settings.display().to_string());
    let process = PorticoProcess::spawn(
        dir,
        &["all-in-one", "--data-dir", &data, "--api", "127.0.0.1:0", "--tls-cert", &cert, "--tls-key", &key, "--settings", &settings],
        &[("PORTICO_ADMIN_PASSWORD", "tls-admin-pass-1")],
    )
    .unwrap();
    let cp = ControlPlaneClient::https(process.control_plane.unwrap(), &certificate.der);
    let admin = cp.login("admin", "tls-admin-pass-1").await;
    cp.allow_loopback_upstreams(&admin).await;
    let metadata = cp.ok(Method::GET, "/.well-known/oauth-authorization-server", Some(&admin), Value::Null).await;
    assert!(metadata["issuer"].as_str().unwrap().starts_with("https://"), "{metadata}");
    let (version, (status, _)) = tls_get(process.listeners[0], &certificate.der, b"h2", "/nothing", &[]).await;
    assert_eq!((version, status), (http::Version::HTTP_2, StatusCode::NOT_FOUND), "the gateway answers over TLS");

    // `policy push` speaks https too, trusting the CA it is given, the session token read
    // from a file (never from its command line); without that CA it refuses the server.
    let token_file = process.dir.path().join("session-token");
    std::fs::write(&token_file, format!("{admin}\n")).unwrap();
    let url = format!("https://{}", process.control_plane.unwrap());
    let push = |ca: Option<&Path>| {
        let mut command = std::process::Command::new(portico_tests::portico_binary());
        command.args(["policy", "push", portico_tests::policies::STAMP_V1, "--control-plane", &url, "--name", "stamp-over-tls"]);
        command.args(["--version", "1.0.0", "--token-file"]).arg(&token_file).env_remove("PORTICO_TOKEN");
        if let Some(ca) = ca {
            command.arg("--control-plane-ca").arg(ca);
        }
        let output = command.output().unwrap();
        (output.status.success(), format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
    };
    let (pushed, output) = push(None);
    assert!(!pushed && output.contains("certificate"), "a control plane whose certificate is not trusted is refused: {output}");
    let (pushed, output) = push(Some(&certificate.cert));
    assert!(pushed && output.contains("pushed stamp-over-tls@1.0.0"), "{output}");
}

/// `message` signed with the key in `key_file`, in base64, as the documentation tells an
/// application's owner to prove they hold a certificate's key.
fn sign_with_openssl(key_file: &Path, message: &str) -> String {
    use base64::Engine;
    use std::io::Write;
    let mut openssl = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key_file)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl (the Debian package `openssl`) is needed");
    openssl.stdin.take().unwrap().write_all(message.as_bytes()).unwrap();
    let output = openssl.wait_with_output().unwrap();
    assert!(output.status.success(), "openssl dgst -sign failed");
    base64::engine::general_purpose::STANDARD.encode(output.stdout)
}

/// An application known by the client certificate it registered: presented over mutual TLS
/// to a listener that verifies client certificates, it calls the application's subscribed
/// APIs as an API key would (and is refused where the application is not subscribed); a
/// certificate of the listener's CA that no application registered is refused, one of
/// another CA fails the handshake, and a removed one is refused within 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_calls_with_its_registered_client_certificate() {
    let upstream = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestCertificate::generate(dir.path());
    let client = |name: &str| {
        let folder = dir.path().join(name);
        std::fs::create_dir(&folder).unwrap();
        TestCertificate::generate(&folder)
    };
    let (partner, idle, stranger, outsider) = (client("partner"), client("idle"), client("stranger"), client("outsider"));
    // The listener's client CA: every client certificate but the outsider's.
    let bundle: String = [&partner, &idle, &stranger].iter().map(|c| std::fs::read_to_string(&c.cert).unwrap()).collect();
    std::fs::write(dir.path().join("clients.pem"), bundle).unwrap();
    let settings = dir.path().join("gateway.yaml");
    let yaml = "listeners:\n  - address: 127.0.0.1:0\n    tls:\n      certificates:\n        - {cert: server.pem, key: server.key}\n      \
                client_ca: clients.pem\n      client_certificate_optional: true\nadmin: {address: 127.0.0.1:0}\n";
    std::fs::write(&settings, yaml).unwrap();
    let (data, settings) = (dir.path().join("data").display().to_string(), settings.display().to_string());
    let process = PorticoProcess::spawn(
        dir,
        &["all-in-one", "--data-dir", &data, "--api", "127.0.0.1:0", "--settings", &settings],
        &[("PORTICO_ADMIN_PASSWORD", "mtls-admin-pass-1")],
    )
    .unwrap();
    let cp = ControlPlaneClient::new(process.control_plane.unwrap());
    let admin = cp.login("admin", "mtls-admin-pass-1").await;
    cp.allow_loopback_upstreams(&admin).await;
    let definition = json!({"name": "certs", "version": "v1", "context": "/certs", "endpoints": [upstream.url()],
        "operations": [{"method": "GET", "path": "/x"}], "tiers": ["Unlimited"]});
    let api = cp.deployed_api(&admin, definition).await;

    cp.ok(Method::POST, "/api/v1/signup", None, json!({"username": "dana", "password": "dana-password-1"})).await;
    let dana = cp.login("dana", "dana-password-1").await;
    let register = async |name: &str, certificate: &TestCertificate| {
        let app = cp.ok(Method::POST, "/api/v1/applications", Some(&dana), json!({"name": name})).await;
        let app = app["id"].as_str().unwrap().to_owned();
        let pem = std::fs::read_to_string(&certificate.cert).unwrap();
        let proof = sign_with_openssl(&certificate.key, &format!("portico-client-certificate:{app}"));
        let body = json!({"certificate": pem, "proof": proof});
        let registered = cp.ok(Method::POST, &format!("/api/v1/applications/{app}/client-certificates"), Some(&dana), body).await;
        (app, registered)
    };
    let (app, registered) = register("partner", &partner).await;
    cp.ok(Method::POST, &format!("/api/v1/applications/{app}/subscriptions"), Some(&dana), json!({"api_id": api})).await;
    let sha256 = portico_gateway::contract::hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(&partner.der));
    assert_eq!(registered["sha256"], sha256.as_str(), "{registered}");
    // Registered but not subscribed: the certificate names an application, which may not call.
    register("idle", &idle).await;

    let listener = process.listeners[0];
    let call = async |certificate: Option<&TestCertificate>| tls_request(listener, &server.der, certificate, "/certs/v1/x").await;
    let took = eventually("the partner's certificate accepted", async || call(Some(&partner)).await == Ok(StatusCode::OK)).await;
    println!("a registered client certificate accepted after {took:?}");
    assert_eq!(upstream.received().len(), 1, "{:?}", upstream.received());
    assert_eq!(call(Some(&idle)).await, Ok(StatusCode::FORBIDDEN), "the idle application is not subscribed");
    assert_eq!(call(Some(&stranger)).await, Ok(StatusCode::UNAUTHORIZED), "a certificate no application registered");
    assert_eq!(call(None).await, Ok(StatusCode::UNAUTHORIZED), "no certificate and no other credential");
    assert!(call(Some(&outsider)).await.is_err(), "a certificate of another CA fails the handshake");
    assert_eq!(upstream.received().len(), 1, "only the partner got through");

    let id = registered["id"].as_str().unwrap();
    let removed = cp.call(Method::DELETE, &format!("/api/v1/applications/{app}/client-certificates/{id}"), Some(&dana), None).await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT, "{}", removed.text());
    let took = portico_tests::eventually("the removed certificate refused", Duration::from_secs(1), async || {
        call(Some(&partner)).await == Ok(StatusCode::UNAUTHORIZED)
    })
    .await;
    println!("a removed client certificate refused after {took:?}");
}

/// A JWT names its application's owner, so blocking that user refuses it; removing the
/// subscription its claims list refuses it too. Each within 1 s, like a revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_a_user_or_removing_a_subscription_refuses_the_tokens_already_issued() {
    let upstream = MockUpstream::start().await;
    let process = start_all_in_one("jwt-admin-pass-1");
    let cp = ControlPlaneClient::new(process.control_plane.unwrap());
    let client = HttpClient::default();
    let admin = cp.login("admin", "jwt-admin-pass-1").await;
    cp.allow_loopback_upstreams(&admin).await;
    let definition = json!({"name": "jwt", "version": "v1", "context": "/jwt", "endpoints": [upstream.url()],
        "operations": [{"method": "GET", "path": "/x"}], "tiers": ["Unlimited"]});
    // The token is polled until the deployment serves it, below.
    let api = cp.deployed_api(&admin, definition).await;

    cp.ok(Method::POST, "/api/v1/signup", None, json!({"username": "carol", "password": "carol-password-1"})).await;
    let carol = cp.login("carol", "carol-password-1").await;
    let app = cp.ok(Method::POST, "/api/v1/applications", Some(&carol), json!({"name": "carols"})).await;
    let app = app["id"].as_str().unwrap().to_owned();
    let subscription =
        cp.ok(Method::POST, &format!("/api/v1/applications/{app}/subscriptions"), Some(&carol), json!({"api_id": api})).await;
    let oauth = cp.ok(Method::POST, &format!("/api/v1/applications/{app}/oauth-client"), Some(&carol), json!({})).await;
    let credentials = basic(oauth["client_id"].as_str().unwrap(), oauth["client_secret"].as_str().unwrap());
    let form = [("content-type", "application/x-www-form-urlencoded"), ("authorization", credentials.as_str())];
    let token = client.send(Method::POST, &format!("{}/oauth2/token", cp.base), &form, "grant_type=client_credentials").await.unwrap();
    let bearer = format!("Bearer {}", token.json()["access_token"].as_str().unwrap());
    let status = async || client.get(&process.url("/jwt/v1/x"), &[("authorization", &bearer)]).await.unwrap().status;
    eventually("the token working", async || status().await == StatusCode::OK).await;

    let block = cp.ok(Method::POST, "/api/v1/blocking-conditions", Some(&admin), json!({"kind": "user", "value": "carol"})).await;
    let took =
        portico_tests::eventually("carol's token refused", Duration::from_secs(1), async || status().await == StatusCode::FORBIDDEN).await;
    println!("a blocked user's JWT refused after {took:?}");
    let reply =
        cp.call(Method::DELETE, &format!("/api/v1/blocking-conditions/{}", block["id"].as_str().unwrap()), Some(&admin), None).await;
    assert!(reply.status.is_success(), "{}", reply.text());
    eventually("the token working again", async || status().await == StatusCode::OK).await;

    let uri = format!("/api/v1/applications/{app}/subscriptions/{}", subscription["id"].as_str().unwrap());
    let reply = cp.call(Method::DELETE, &uri, Some(&carol), None).await;
    assert!(reply.status.is_success(), "{}", reply.text());
    let took = portico_tests::eventually("the token of a removed subscription refused", Duration::from_secs(1), async || {
        status().await == StatusCode::UNAUTHORIZED
    })
    .await;
    println!("a JWT listing a removed subscription refused after {took:?}");
}

/// Without PORTICO_ADMIN_PASSWORD, the first admin's password goes to a file only its
/// owner can read, never to the output. (This control plane also listens beyond loopback
/// in plain HTTP, which it warns about at start.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_admin_password_is_written_to_a_private_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.display().to_string();
    let process = PorticoProcess::spawn(
        dir,
        &["all-in-one", "--data-dir", &data_arg, "--gateway", "127.0.0.1:0", "--api", "0.0.0.0:0", "--admin", "127.0.0.1:0"],
        &[],
    )
    .unwrap();
    assert_eq!(process.count_logs("plain HTTP on a non-loopback address"), 1, "{:?}", process.logs());
    let file = data.join("initial-admin-password");
    let password = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!process.logs().iter().any(|line| line.contains(&password)), "the password is not in the output");
    let cp = ControlPlaneClient::new(process.control_plane.unwrap());
    cp.login("admin", &password).await;
}

/// A publisher cannot point an API at the gateway's host or a cloud metadata address
/// unless an admin allowed it: an endpoint written as such an address is refused at deploy,
/// a host name that resolves to one fails its calls (502) without reaching it, and taking
/// an allowance back stops APIs already deployed there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_networks_keep_publishers_off_the_gateways_host() {
    let upstream = MockUpstream::start().await;
    let process = start_all_in_one("networks-admin-1");
    let cp = ControlPlaneClient::new(process.control_plane.unwrap());
    let client = HttpClient::default();
    let admin = cp.login("admin", "networks-admin-1").await;
    cp.ok(Method::POST, "/api/v1/users", Some(&admin), json!({"username": "pat", "password": "publisher-pass-1", "role": "publisher"}))
        .await;
    let pat = cp.login("pat", "publisher-pass-1").await;
    let key_of = async |api: &str, app: &str| cp.subscribed_key(&admin, app, api).await.key;
    let definition = |name: &str, endpoint: String| {
        json!({"name": name, "version": "v1", "context": format!("/{name}"), "endpoints": [endpoint], "tiers": ["Unlimited"],
            "operations": [{"method": "GET", "path": "/x"}]})
    };

    // The defaults, as anyone logged in reads them.
    let defaults = cp.ok(Method::GET, "/api/v1/environments/default/upstream-networks", Some(&pat), Value::Null).await;
    assert_eq!(defaults["allow"], json!([]), "{defaults}");
    for denied in ["127.0.0.0/8", "::1/128", "169.254.0.0/16"] {
        assert!(defaults["deny"].as_array().unwrap().iter().any(|d| d == denied), "{denied}: {defaults}");
    }

    // An address the environment denies is refused at deploy, naming it.
    let literal = cp.ok(Method::POST, "/api/v1/apis", Some(&pat), definition("literal", upstream.url())).await;
    let literal = literal["id"].as_str().unwrap().to_owned();
    cp.ok(Method::POST, &format!("/api/v1/apis/{literal}/lifecycle"), Some(&pat), json!({"action": "publish"})).await;
    let revision = cp.ok(Method::POST, &format!("/api/v1/apis/{literal}/revisions"), Some(&pat), json!({})).await;
    let deploy = json!({"revision_id": revision["id"], "environments": ["default"]});
    let refused = cp.call(Method::POST, &format!("/api/v1/apis/{literal}/deployments"), Some(&pat), Some(deploy.clone())).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.text());
    let problem = refused.json();
    assert_eq!(problem["field"], "environments[0]", "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("127.0.0.1 is in a denied upstream network (127.0.0.0/8)"), "{problem}");

    // A name that resolves to loopback deploys, but its calls never reach the address.
    let port = upstream.addr.port();
    let named = cp.deployed_api(&pat, definition("named", format!("http://localhost:{port}/named"))).await;
    let key = key_of(&named, "named-app").await;
    eventually("the named API answers 502", async || {
        client.get(&process.url("/named/v1/x"), &[("apikey", &key)]).await.unwrap().status == StatusCode::BAD_GATEWAY
    })
    .await;
    assert!(upstream.received().is_empty(), "{:?}", upstream.received());

    // Only an admin changes the lists, and each entry is checked.
    let networks = "/api/v1/environments/default/upstream-networks";
    let reply = cp.call(Method::PUT, networks, Some(&pat), Some(json!({"allow": ["127.0.0.1"]}))).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = cp.call(Method::PUT, networks, Some(&admin), Some(json!({"allow": ["127.0.0.1", "localhost"]}))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["field"], "allow[1]", "{}", reply.text());

    // Allowed: the literal address deploys and both APIs reach the upstream.
    let allowed = cp.ok(Method::PUT, networks, Some(&admin), json!({"allow": ["127.0.0.1", "::1"]})).await;
    assert_eq!(allowed["deny"], defaults["deny"], "deny left out keeps the defaults");
    cp.ok(Method::POST, &format!("/api/v1/apis/{literal}/deployments"), Some(&pat), deploy).await;
    let literal_key = key_of(&literal, "literal-app").await;
    eventually("both APIs reach the upstream", async || {
        let named = client.get(&process.url("/named/v1/x"), &[("apikey", &key)]).await.unwrap();
        let literal = client.get(&process.url("/literal/v1/x"), &[("apikey", &literal_key)]).await.unwrap();
        named.status == StatusCode::OK && literal.status == StatusCode::OK
    })
    .await;

    // Taken back: the deployed literal address stops loading (503), the name stops resolving.
    cp.ok(Method::PUT, networks, Some(&admin), json!({})).await;
    eventually("the allowance is taken back", async || {
        let named = client.get(&process.url("/named/v1/x"), &[("apikey", &key)]).await.unwrap();
        let literal = client.get(&process.url("/literal/v1/x"), &[("apikey", &literal_key)]).await.unwrap();
        named.status == StatusCode::BAD_GATEWAY && literal.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let received = upstream.received().len();
    client.get(&process.url("/named/v1/x"), &[("apikey", &key)]).await.unwrap();
    client.get(&process.url("/literal/v1/x"), &[("apikey", &literal_key)]).await.unwrap();
    assert_eq!(upstream.received().len(), received, "nothing more reached the upstream");
}

/// A name a publisher may give an API (from an OpenAPI title, say): quotes, a backslash and
/// braces, written to close its label and start a series of its own.
const HOSTILE_NAME: &str = r#"Pets "} 9 \ portico_forged_total{forged="1"#;

/// A known mix of calls, seen by a real Prometheus server scraping both planes and in the
/// access log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_access_log_of_a_known_mix_of_calls() {
    let upstream = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Responses are counted per application too, for one (API, application) pair; the second
    // listener's requests are not logged.
    let yaml = "listeners: [{address: 127.0.0.1:0}, {address: 127.0.0.1:0, access_log: false}]\n\
                admin: {address: 127.0.0.1:0, metrics: {applications: 1}}\n";
    std::fs::write(dir.path().join("gateway.yaml"), yaml).unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let (data, settings, access_log) = (path("data"), path("gateway.yaml"), path("access.log"));
    let process = PorticoProcess::spawn(
        dir,
        &["all-in-one", "--data-dir", &data, "--api", "127.0.0.1:0", "--settings", &settings, "--access-log", &access_log],
        &[("PORTICO_ADMIN_PASSWORD", "metrics-admin-1")],
    )
    .unwrap();
    let cp = ControlPlaneClient::new(process.control_plane.unwrap());
    let admin = cp.login("admin", "metrics-admin-1").await;
    cp.allow_loopback_upstreams(&admin).await;
    let definition = json!({"name": HOSTILE_NAME, "version": "v1", "context": "/pets", "endpoints": [upstream.url()],
        "tiers": ["Unlimited"], "operations": [{"method": "GET", "path": "/items"}]});
    let api = cp.deployed_api(&admin, definition).await;
    let (first, second) = (cp.subscribed_key(&admin, "first", &api).await, cp.subscribed_key(&admin, "second", &api).await);
    let oauth = cp.ok(Method::POST, &format!("/api/v1/applications/{}/oauth-client", first.app), Some(&admin), json!({})).await;
    let client = HttpClient::default();
    let token = client_credentials(&client, &cp, &oauth).await;
    assert_eq!(token.status, StatusCode::OK, "{}", token.text());

    // Through the gateway: 3 calls by the first application, 2 by the second, one without a
    // key (401) and one no API matches (404).
    // Until a key reaches the gateway, the API may answer 401 to it: count those. Each key's
    // first 200 is one of its application's calls.
    let mut early_refusals = 0;
    for key in [&first.key, &second.key] {
        eventually("the API and the key reaching the gateway", async || {
            let status = client.get(&process.url("/pets/v1/items"), &[("apikey", key)]).await.unwrap().status;
            early_refusals += usize::from(status == StatusCode::UNAUTHORIZED);
            status == StatusCode::OK
        })
        .await;
    }
    let refusals = 1 + early_refusals;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    for (key, traced) in [(&first.key, true), (&first.key, false), (&second.key, false)] {
        let headers = [("apikey", key.as_str()), ("traceparent", traceparent)];
        let reply = client.get(&process.url("/pets/v1/items"), &headers[..if traced { 2 } else { 1 }]).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
    }
    assert_eq!(client.get(&process.url("/pets/v1/items"), &[]).await.unwrap().status, StatusCode::UNAUTHORIZED);
    assert_eq!(client.get(&process.url("/nothing"), &[]).await.unwrap().status, StatusCode::NOT_FOUND);
    let quiet = format!("http://{}/not-logged", process.listeners[1]);
    assert_eq!(client.get(&quiet, &[]).await.unwrap().status, StatusCode::NOT_FOUND);

    // One JSON line per call on the first listener, written off the request path.
    let read_log = || -> Vec<Value> {
        let text = std::fs::read_to_string(&access_log).unwrap_or_default();
        text.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))).collect()
    };
    eventually("the access log's lines", async || read_log().iter().any(|line| line["path"] == "/nothing")).await;
    let lines = read_log();
    let calls: Vec<&Value> = lines.iter().filter(|line| line["api"] == HOSTILE_NAME).collect();
    assert_eq!(calls.len(), 5 + refusals, "{lines:#?}");
    for line in &calls {
        assert_eq!(
            (&line["api_version"], &line["operation"], &line["method"]),
            (&json!("v1"), &json!("GET /items"), &json!("GET")),
            "{line}"
        );
        assert!(line["duration_ms"].as_f64().unwrap() > 0.0 && line["policy_ms"].as_f64().unwrap() > 0.0, "{line}");
    }
    let of = |app: &str| calls.iter().filter(|line| line["application"] == app && line["status"] == 200).count();
    assert_eq!((of(&first.app), of(&second.app)), (3, 2), "{calls:#?}");
    for line in calls.iter().filter(|line| line["status"] == 200) {
        assert!(line["subscription"].is_string() && line["upstream_ms"].as_f64().unwrap() > 0.0, "{line}");
    }
    let refused: Vec<&&Value> = calls.iter().filter(|line| line["status"] == 401).collect();
    assert_eq!(refused.len(), refusals, "{calls:#?}");
    assert!(refused.iter().all(|line| line.get("application").is_none() && line.get("upstream_ms").is_none()), "{refused:?}");
    let traced: Vec<&&Value> = calls.iter().filter(|line| line.get("trace_id").is_some()).collect();
    assert_eq!(traced.len(), 1, "{calls:#?}");
    assert_eq!(traced[0]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    let unrouted = lines.iter().find(|line| line["path"] == "/nothing").unwrap();
    assert!(unrouted["status"] == 404 && unrouted.get("api").is_none(), "{unrouted}");
    assert!(!lines.iter().any(|line| line["path"] == "/not-logged"), "the second listener logs nothing");

    let prometheus = PrometheusServer::start(&[("gateway", process.admin.unwrap()), ("control_plane", process.control_plane.unwrap())]);
    let api_labels = |series: &Value| series["api"] == HOSTILE_NAME && series["version"] == "v1";
    // Both targets scraped (a target whose page Prometheus cannot parse is `down`, with the
    // parser's error), the gateway's after the calls.
    portico_tests::eventually("a scrape of both after the calls", Duration::from_secs(30), async || {
        let targets = prometheus.api("targets").await;
        let targets = targets["activeTargets"].as_array().unwrap().clone();
        if let Some(down) = targets.iter().find(|target| target["health"] == "down") {
            panic!("a target is down: {down}");
        }
        let ok = prometheus.query("portico_responses_total{class=\"2xx\"}").await;
        targets.iter().all(|target| target["health"] == "up") && ok.iter().any(|(labels, value)| api_labels(labels) && *value == 5.0)
    })
    .await;

    // The name came through whole, as the value of its label, and wrote nothing else.
    let responses = prometheus.query("portico_responses_total > 0").await;
    let by_class: Vec<(String, String, f64)> = responses
        .iter()
        // Prometheus keeps no empty label: the unrouted series has no `api`.
        .map(|(labels, value)| {
            (labels["api"].as_str().unwrap_or_default().to_owned(), labels["class"].as_str().unwrap().to_owned(), *value)
        })
        .collect();
    let mut hostile: Vec<(&str, f64)> =
        by_class.iter().filter(|(api, _, _)| api == HOSTILE_NAME).map(|(_, class, n)| (class.as_str(), *n)).collect();
    hostile.sort_by(|a, b| a.0.cmp(b.0));
    assert_eq!(hostile, [("2xx", 5.0), ("4xx", refusals as f64)], "{responses:?}");
    // (with the 404s of the calls made before the deployment arrived)
    let unrouted = by_class.iter().find(|(api, class, _)| api.is_empty() && class == "4xx");
    assert!(unrouted.is_some_and(|(_, _, n)| *n >= 1.0), "the 404 is counted with no API: {responses:?}");
    let names = prometheus.api("label/__name__/values").await;
    assert!(!names.as_array().unwrap().iter().any(|name| name.as_str().unwrap().contains("forged")), "{names}");
    let labels = prometheus.api("labels").await;
    assert!(!labels.as_array().unwrap().iter().any(|label| label == "forged"), "{labels}");

    // HELP and TYPE reached Prometheus.
    let metadata = prometheus.api("metadata?metric=portico_responses_total").await;
    assert_eq!(metadata["portico_responses_total"][0]["type"], "counter", "{metadata}");
    assert!(metadata["portico_responses_total"][0]["help"].as_str().unwrap().starts_with("Responses by API"), "{metadata}");

    let dropped = prometheus.query("portico_access_log_dropped_total").await;
    assert_eq!(dropped.iter().map(|(_, n)| *n).collect::<Vec<_>>(), [0.0], "{dropped:?}");

    // Per application, up to the cap of one pair: the first caller has its series, the
    // second is counted as `_other`.
    let per_application = prometheus.query("portico_application_responses_total{class=\"2xx\"}").await;
    let application = |labels: &Value| labels["application"].as_str().unwrap().to_owned();
    let mut counted: Vec<(String, f64)> = per_application.iter().map(|(labels, n)| (application(labels), *n)).collect();
    counted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected = vec![(first.app.clone(), 3.0), ("_other".to_owned(), 2.0)];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(counted, expected, "{per_application:?}");

    // Request and upstream latency apart: the 401 never went upstream.
    let count = async |query: &str| prometheus.query(query).await.iter().find(|(labels, _)| api_labels(labels)).map(|(_, n)| *n);
    assert_eq!(count("portico_request_duration_seconds_count").await, Some((5 + refusals) as f64));
    assert_eq!(count("portico_upstream_duration_seconds_count").await, Some(5.0));

    // The control plane's own.
    let value = async |query: &str| prometheus.query(query).await.first().map(|(_, n)| *n);
    assert_eq!(value("portico_control_plane_tokens_issued_total{grant_type=\"client_credentials\"}").await, Some(1.0));
    assert_eq!(value("portico_control_plane_gateways_connected{environment=\"default\"}").await, Some(1.0));
    assert_eq!(value("portico_control_plane_gateways_behind{environment=\"default\"}").await, Some(0.0));
    assert!(value("portico_control_plane_rollout_lag_seconds_count{environment=\"default\"}").await >= Some(1.0));
    assert!(value("sum(portico_control_plane_snapshot_builds_total{environment=\"default\",outcome=\"ok\"})").await >= Some(1.0));
    let token_requests = "portico_control_plane_requests_total{method=\"POST\",route=\"/oauth2/token\",status=\"200\"}";
    assert_eq!(value(token_requests).await, Some(1.0));
}

/// End users (the authorization code grant with PKCE): an application registers its redirect
/// URI; authlib, an OAuth2 client Portico did not write, drives the flow and its refusals
/// (tests/fixtures/oauth/code_flow.py); the gateway then sees the end user who allowed the
/// application, not its owner, and refuses the tokens of a code used twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_user_allows_an_application_with_the_code_flow() {
    let upstream = MockUpstream::start().await;
    let process = start_all_in_one("code-admin-pass-1");
    let cp = ControlPlaneClient::new(process.control_plane.unwrap());
    let client = HttpClient::default();
    let admin = cp.login("admin", "code-admin-pass-1").await;
    cp.allow_loopback_upstreams(&admin).await;
    let definition = json!({"name": "profile", "version": "v1", "context": "/profile", "endpoints": [upstream.url()],
        "operations": [{"method": "GET", "path": "/me"}], "tiers": ["Unlimited"]});
    let api = cp.deployed_api(&admin, definition).await;

    // Carol's application, and Dave, who will allow it.
    cp.ok(Method::POST, "/api/v1/signup", None, json!({"username": "carol", "password": "carol-password-1"})).await;
    cp.ok(Method::POST, "/api/v1/signup", None, json!({"username": "dave", "password": "dave-password-1"})).await;
    let carol = cp.login("carol", "carol-password-1").await;
    let app = cp.ok(Method::POST, "/api/v1/applications", Some(&carol), json!({"name": "profiles"})).await;
    let app = app["id"].as_str().unwrap().to_owned();
    cp.ok(Method::POST, &format!("/api/v1/applications/{app}/subscriptions"), Some(&carol), json!({"api_id": api})).await;
    let oauth = cp.ok(Method::POST, &format!("/api/v1/applications/{app}/oauth-client"), Some(&carol), json!({})).await;
    let redirect_uris = format!("/api/v1/applications/{app}/oauth-client/redirect-uris");
    for bad in ["http://app.example/cb", "http://localhost/cb", "https://app.example/cb#frag", "/cb", "app:/cb"] {
        let body = json!({"redirect_uris": ["https://app.example/ok", bad]});
        let refused = cp.call(Method::PUT, &redirect_uris, Some(&carol), Some(body)).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{bad}: {}", refused.text());
        assert_eq!(refused.json()["field"], "redirect_uris[1]", "{bad}: {}", refused.text());
    }
    let redirect_uri = "http://127.0.0.1:9/callback";
    let registered = cp.ok(Method::PUT, &redirect_uris, Some(&carol), json!({"redirect_uris": [redirect_uri]})).await;
    assert_eq!(registered["redirect_uris"], json!([redirect_uri]));
    assert_eq!(registered["authorization_endpoint"], format!("{}/oauth2/authorize", cp.base));

    let arguments = json!({"issuer": cp.base, "client_id": oauth["client_id"], "client_secret": oauth["client_secret"],
        "redirect_uri": redirect_uri, "username": "dave", "password": "dave-password-1"});
    let script = portico_tests::workspace_root().join("tests/fixtures/oauth/code_flow.py");
    let output = portico_tests::python_with("tests/fixtures/oauth/requirements.txt")
        .arg(&script)
        .arg(arguments.to_string())
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}\n{stdout}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    let tokens: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();

    // The gateway serves Dave's token, and knows him as the user: blocking him refuses it,
    // while the owner's own client-credentials token goes on working.
    let bearer = |token: &str| format!("Bearer {token}");
    let status = async |token: &str| client.get(&process.url("/profile/v1/me"), &[("authorization", &bearer(token))]).await.unwrap().status;
    let daves = tokens["access_token"].as_str().unwrap();
    eventually("Dave's token served", async || status(daves).await == StatusCode::OK).await;
    let reply = client_credentials(&client, &cp, &oauth).await;
    let carols = reply.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(status(&carols).await, StatusCode::OK);
    let revoked = tokens["revoked_access_token"].as_str().unwrap();
    let took = portico_tests::eventually("the token of a code used twice refused", Duration::from_secs(1), async || {
        status(revoked).await == StatusCode::UNAUTHORIZED
    })
    .await;
    println!("the token of a code used twice refused after {took:?}");
    cp.ok(Method::POST, "/api/v1/blocking-conditions", Some(&admin), json!({"kind": "user", "value": "dave"})).await;
    portico_tests::eventually("Dave blocked", Duration::from_secs(1), async || status(daves).await == StatusCode::FORBIDDEN).await;
    assert_eq!(status(&carols).await, StatusCode::OK, "the owner is not the user blocked");
}
