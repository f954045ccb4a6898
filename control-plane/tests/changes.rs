//! Every mutating route of the management API (from its OpenAPI document) is either walked
//! here and seen to announce its change to the gateways, or listed in [`SILENT`] with why
//! gateways need not hear of it. A new route in neither place fails the test.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use portico_control_plane::db::Engine;
use portico_control_plane::openapi;
use portico_control_plane::test_support::TestApp;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Mutating routes whose changes gateways do not see, and why.
const SILENT: &[(&str, &str, &str)] = &[
    ("POST", "/api/v1/auth/login", "sessions are the control plane's own"),
    ("POST", "/api/v1/auth/logout", "sessions are the control plane's own"),
    ("POST", "/api/v1/users", "users reach gateways only through their applications' credentials"),
    ("PUT", "/api/v1/users/{id}/role", "roles are the control plane's checks; gateways see credentials"),
    ("POST", "/api/v1/signup", "users reach gateways only through their applications' credentials"),
    ("POST", "/api/v1/apis", "an API reaches gateways only when a revision of it is deployed"),
    ("PUT", "/api/v1/apis/{id}", "an API reaches gateways only when a revision of it is deployed"),
    ("DELETE", "/api/v1/apis/{id}", "only an API deployed nowhere can be deleted"),
    ("POST", "/api/v1/apis/import", "an API reaches gateways only when a revision of it is deployed"),
    ("POST", "/api/v1/apis/{id}/revisions", "a revision reaches gateways only when deployed"),
    ("DELETE", "/api/v1/apis/{id}/revisions/{revision_id}", "only a revision deployed nowhere can be deleted"),
    ("POST", "/api/v1/environments", "a new environment has nothing deployed"),
    ("DELETE", "/api/v1/environments/{name}", "only an environment with nothing deployed can be deleted"),
    (
        "PUT",
        "/api/v1/environments/{name}/gateway-url",
        "where consumers reach the gateways is the portal's to show; gateways do not read it",
    ),
    ("POST", "/api/v1/policies", "an upload reaches gateways only through a deployed revision"),
    ("DELETE", "/api/v1/policies/{name}/{version}", "only a policy no revision uses can be deleted"),
    ("POST", "/api/v1/environments/{name}/gateway-tokens", "tokens admit gateways; they are not in what gateways serve"),
    ("DELETE", "/api/v1/environments/{name}/gateway-tokens/{id}", "the stream checks its token itself and closes"),
    ("POST", "/api/v1/applications", "an application without credentials or subscriptions is nothing to a gateway"),
    ("POST", "/api/v1/applications/{id}/oauth-client", "client secrets stay in the key manager; tokens carry the rest"),
    ("POST", "/api/v1/applications/{id}/oauth-client/regenerate-secret", "client secrets stay in the key manager"),
    ("PUT", "/api/v1/settings/subscription_approval", "applies to subscriptions made later, which announce themselves"),
    ("POST", "/oauth2/token", "tokens are verified by signature (a first signing key, made here, is announced)"),
    ("POST", "/oauth2/introspect", "reads only"),
    ("POST", "/oauth2/authorize", "a code is exchanged at the token endpoint; gateways see only tokens"),
    ("PUT", "/api/v1/applications/{id}/oauth-client/redirect-uris", "redirect URIs matter to the key manager only"),
];

struct Walk {
    app: TestApp,
    changes: tokio::sync::watch::Receiver<u64>,
    /// (method, path template) → whether every call of it announced a change.
    announced: BTreeMap<(String, String), bool>,
}

impl Walk {
    /// Send a JSON request that must succeed; record whether it announced a change.
    async fn json(&mut self, method: &str, template: &str, path: &str, token: &str, body: Option<Value>) -> Value {
        self.changes.borrow_and_update();
        let (status, reply) = self.app.send(method, path, Some(token), body).await;
        assert!(status.is_success(), "{method} {path}: {status} {reply}");
        self.record(method, template);
        reply
    }

    /// Send an OAuth2 form with client credentials; record it like [`Walk::json`].
    async fn form(&mut self, path: &str, client: &Value, form: &str) -> Value {
        use base64::Engine as _;
        self.changes.borrow_and_update();
        let credentials = format!("{}:{}", client["client_id"].as_str().unwrap(), client["client_secret"].as_str().unwrap());
        let request = Request::post(path)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(credentials)))
            .body(Body::from(form.to_owned()))
            .unwrap();
        let response = self.app.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(status, StatusCode::OK, "POST {path}: {}", String::from_utf8_lossy(&bytes));
        self.record("POST", path);
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    }

    fn record(&mut self, method: &str, template: &str) {
        let announced = self.changes.has_changed().expect("the change channel is open");
        let entry = self.announced.entry((method.to_owned(), template.to_owned())).or_insert(true);
        *entry &= announced;
    }
}

#[tokio::test]
async fn every_mutating_route_that_gateways_must_see_announces_its_change() {
    let app = TestApp::new(Engine::Sqlite).await;
    let admin = app.login("admin", "admin-password-1").await;
    let publisher = app.user("pat", "publisher").await;
    let subscriber = app.user("sue", "subscriber").await;
    let changes = app.state.subscribe_changes();
    let mut walk = Walk { app, changes, announced: BTreeMap::new() };

    // Traffic: tiers and blocking conditions.
    let tier = json!({"requests": 3, "per_ms": 60000});
    walk.json("PUT", "/api/v1/tiers/{kind}/{name}", "/api/v1/tiers/subscription/Tiny", &admin, Some(tier.clone())).await;
    walk.json("PUT", "/api/v1/tiers/{kind}/{name}", "/api/v1/tiers/subscription/Spare", &admin, Some(tier)).await;
    walk.json("DELETE", "/api/v1/tiers/{kind}/{name}", "/api/v1/tiers/subscription/Spare", &admin, None).await;
    let block = walk
        .json(
            "POST",
            "/api/v1/blocking-conditions",
            "/api/v1/blocking-conditions",
            &admin,
            Some(json!({"kind": "ip", "value": "192.0.2.7"})),
        )
        .await;
    let path = format!("/api/v1/blocking-conditions/{}", block["id"].as_str().unwrap());
    walk.json("DELETE", "/api/v1/blocking-conditions/{id}", &path, &admin, None).await;
    let networks = json!({"allow": ["10.0.0.0/8"]});
    let template = "/api/v1/environments/{name}/upstream-networks";
    walk.json("PUT", template, "/api/v1/environments/default/upstream-networks", &admin, Some(networks)).await;
    let counters = json!({"redis": {"url": "redis://127.0.0.1:6379/3", "fleet_size": 2}});
    walk.json("PUT", "/api/v1/environments/{name}/counters", "/api/v1/environments/default/counters", &admin, Some(counters)).await;

    // Publisher: lifecycle and deployments.
    let (_, api) = walk
        .app
        .send(
            "POST",
            "/api/v1/apis",
            Some(&publisher),
            Some(json!({"name": "walk", "version": "v1", "context": "/walk", "endpoints": ["http://192.0.2.1:9/"],
                "operations": [{"method": "GET", "path": "/x"}]})),
        )
        .await;
    let api = api["id"].as_str().unwrap().to_owned();
    walk.json(
        "POST",
        "/api/v1/apis/{id}/lifecycle",
        &format!("/api/v1/apis/{api}/lifecycle"),
        &publisher,
        Some(json!({"action": "publish"})),
    )
    .await;
    let mut revisions = Vec::new();
    for _ in 0..2 {
        let (status, revision) = walk.app.send("POST", &format!("/api/v1/apis/{api}/revisions"), Some(&publisher), Some(json!({}))).await;
        assert_eq!(status, StatusCode::CREATED, "{revision}");
        revisions.push(revision["id"].as_str().unwrap().to_owned());
        let deploy = json!({"revision_id": revisions.last().unwrap(), "environments": ["default"]});
        walk.json("POST", "/api/v1/apis/{id}/deployments", &format!("/api/v1/apis/{api}/deployments"), &publisher, Some(deploy)).await;
    }
    let rollback = format!("/api/v1/apis/{api}/deployments/default/rollback");
    walk.json("POST", "/api/v1/apis/{id}/deployments/{environment}/rollback", &rollback, &publisher, None).await;

    // Developer portal: applications, subscriptions, keys.
    let (_, application) = walk.app.send("POST", "/api/v1/applications", Some(&subscriber), Some(json!({"name": "shop"}))).await;
    let application = application["id"].as_str().unwrap().to_owned();
    let subscriptions = format!("/api/v1/applications/{application}/subscriptions");
    let subscription = walk
        .json("POST", "/api/v1/applications/{id}/subscriptions", &subscriptions, &subscriber, Some(json!({"api_id": api, "tier": "Tiny"})))
        .await;
    walk.json(
        "PUT",
        "/api/v1/applications/{id}",
        &format!("/api/v1/applications/{application}"),
        &subscriber,
        Some(json!({"name": "shop", "description": "renamed", "tier": "Unlimited"})),
    )
    .await;
    let keys = format!("/api/v1/applications/{application}/api-keys");
    let key = walk.json("POST", "/api/v1/applications/{id}/api-keys", &keys, &subscriber, None).await;
    let key = format!("{keys}/{}", key["id"].as_str().unwrap());
    walk.json("DELETE", "/api/v1/applications/{id}/api-keys/{key_id}", &key, &subscriber, None).await;
    let certificates = format!("/api/v1/applications/{application}/client-certificates");
    let client = rcgen::generate_simple_self_signed(vec!["client.test".to_owned()]).unwrap();
    let proof = portico_control_plane::test_support::proof_of_possession(&client.signing_key.serialize_der(), &application);
    let body = json!({"certificate": client.cert.pem(), "proof": proof});
    let certificate = walk.json("POST", "/api/v1/applications/{id}/client-certificates", &certificates, &subscriber, Some(body)).await;
    let certificate = format!("{certificates}/{}", certificate["id"].as_str().unwrap());
    walk.json("DELETE", "/api/v1/applications/{id}/client-certificates/{certificate_id}", &certificate, &subscriber, None).await;

    // Key manager: a token revoked, signing keys rotated and retired.
    let (status, client) =
        walk.app.send("POST", &format!("/api/v1/applications/{application}/oauth-client"), Some(&subscriber), Some(json!({}))).await;
    assert_eq!(status, StatusCode::CREATED, "{client}");
    let token = walk.form("/oauth2/token", &client, "grant_type=client_credentials").await;
    walk.form("/oauth2/revoke", &client, &format!("token={}", token["access_token"].as_str().unwrap())).await;
    let (_, keys) = walk.app.send("GET", "/api/v1/keymanager/keys", Some(&admin), None).await;
    let first = keys[0]["kid"].as_str().unwrap().to_owned();
    walk.json("POST", "/api/v1/keymanager/keys/rotate", "/api/v1/keymanager/keys/rotate", &admin, Some(json!({"alg": "ES256"}))).await;
    walk.json("POST", "/api/v1/keymanager/keys/{kid}/retire", &format!("/api/v1/keymanager/keys/{first}/retire"), &admin, None).await;

    // Outside key managers: set, a client of it mapped (proved at its token endpoint) and
    // unmapped, then removed.
    let issuer = token_endpoint_taking("shop", "shop-secret").await;
    let settings = json!({"issuer": issuer, "environments": ["default"], "audiences": ["https://api.test"]});
    walk.json("PUT", "/api/v1/key-managers/{name}", "/api/v1/key-managers/corp", &admin, Some(settings)).await;
    let mapped = format!("/api/v1/applications/{application}/external-clients/corp");
    let client = json!({"client_id": "shop", "client_secret": "shop-secret"});
    walk.json("PUT", "/api/v1/applications/{id}/external-clients/{key_manager}", &mapped, &subscriber, Some(client)).await;
    walk.json("DELETE", "/api/v1/applications/{id}/external-clients/{key_manager}", &mapped, &subscriber, None).await;
    walk.json("DELETE", "/api/v1/key-managers/{name}", "/api/v1/key-managers/corp", &admin, None).await;

    // Subscriptions that wait for approval: approved, rejected, removed.
    let (status, _) = walk.app.send("PUT", "/api/v1/settings/subscription_approval", Some(&admin), Some(json!({"enabled": true}))).await;
    assert_eq!(status, StatusCode::OK);
    for (name, decision) in [("approved", "approve"), ("rejected", "reject")] {
        let (_, other) = walk.app.send("POST", "/api/v1/applications", Some(&subscriber), Some(json!({"name": name}))).await;
        let other = other["id"].as_str().unwrap();
        let (status, held) = walk
            .app
            .send(
                "POST",
                &format!("/api/v1/applications/{other}/subscriptions"),
                Some(&subscriber),
                Some(json!({"api_id": api, "tier": "Tiny"})),
            )
            .await;
        assert_eq!((status, held["status"].as_str()), (StatusCode::CREATED, Some("ON_HOLD")), "{held}");
        let template = format!("/api/v1/subscriptions/{{sub_id}}/{decision}");
        let path = format!("/api/v1/subscriptions/{}/{decision}", held["id"].as_str().unwrap());
        walk.json("POST", &template, &path, &publisher, None).await;
    }
    let unsubscribe = format!("{subscriptions}/{}", subscription["id"].as_str().unwrap());
    walk.json("DELETE", "/api/v1/applications/{id}/subscriptions/{sub_id}", &unsubscribe, &subscriber, None).await;
    walk.json("DELETE", "/api/v1/applications/{id}", &format!("/api/v1/applications/{application}"), &subscriber, None).await;

    // Finally the publisher takes the API off the environment.
    let undeploy = format!("/api/v1/apis/{api}/deployments/default");
    walk.json("DELETE", "/api/v1/apis/{id}/deployments/{environment}", &undeploy, &publisher, None).await;

    let document = openapi::document();
    let mut mutating = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in ["POST", "PUT", "PATCH", "DELETE"] {
            if item.get(method.to_lowercase()).is_some() {
                mutating.push((method.to_owned(), path.clone()));
            }
        }
    }
    for (method, path, _) in SILENT {
        assert!(mutating.contains(&((*method).to_owned(), (*path).to_owned())), "SILENT names {method} {path}, which is not a route");
    }
    let mut problems = Vec::new();
    for (method, path) in &mutating {
        if SILENT.iter().any(|(m, p, _)| m == method && p == path) {
            continue;
        }
        match walk.announced.get(&(method.clone(), path.clone())) {
            Some(true) => {}
            Some(false) => problems.push(format!("{method} {path} changed what gateways serve without announcing it")),
            None => problems.push(format!("{method} {path} is neither walked here nor listed in SILENT")),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// An OpenID provider's issuer on loopback whose token endpoint grants the client
/// `id`/`secret` only: what mapping an outside client checks.
async fn token_endpoint_taking(id: &str, secret: &str) -> String {
    use axum::routing::{get, post};
    use base64::Engine as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let document = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks"), "token_endpoint": format!("{issuer}/token")});
    let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")));
    let token = move |headers: axum::http::HeaderMap| async move {
        if headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(expected.as_str()) {
            (StatusCode::OK, axum::Json(json!({"access_token": "t", "token_type": "Bearer"})))
        } else {
            (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": "invalid_client"})))
        }
    };
    let router = axum::Router::new()
        .route("/.well-known/openid-configuration", get(move || async move { axum::Json(document) }))
        .route("/token", post(token));
    tokio::spawn(async move { axum::serve(listener, router).await });
    issuer
}
