//! Users, login, roles and the problem responses of the management API, on both engines.

use axum::http::StatusCode;
use portico_control_plane::auth::token_hash;
use portico_control_plane::db::now_ms;
use portico_control_plane::on_both_engines;
use portico_control_plane::test_support::TestApp;
use serde_json::json;

#[tokio::test]
async fn login_sessions_and_roles() {
    async fn check(app: TestApp) {
        let (status, body) =
            app.send("POST", "/api/v1/auth/login", None, Some(json!({"username": "admin", "password": "wrong-password-1"}))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        let (status, _) =
            app.send("POST", "/api/v1/auth/login", None, Some(json!({"username": "nobody", "password": "wrong-password-1"}))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        let admin = app.login("admin", "admin-password-1").await;
        let (status, me) = app.send("GET", "/api/v1/me", Some(&admin), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(me["role"], "admin");

        let (status, _) = app.send("GET", "/api/v1/me", None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = app.send("GET", "/api/v1/me", Some("forged"), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        let publisher = app.user("pat", "publisher").await;
        let (status, body) = app.send("GET", "/api/v1/users", Some(&publisher), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let (status, users) = app.send("GET", "/api/v1/users", Some(&admin), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(users.as_array().unwrap().len(), 2);
        assert!(users.to_string().find("password").is_none(), "no hashes in answers");

        let (status, body) = app
            .send(
                "POST",
                "/api/v1/users",
                Some(&admin),
                Some(json!({"username": "pat", "password": "another-password", "role": "subscriber"})),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        let (status, body) = app
            .send("POST", "/api/v1/users", Some(&admin), Some(json!({"username": "x", "password": "short", "role": "subscriber"})))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["field"], "username");
        let (status, body) = app
            .send("POST", "/api/v1/users", Some(&admin), Some(json!({"username": "sam", "password": "long-enough-pw", "role": "king"})))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["field"], "role", "{body}");

        let (status, _) = app.send("POST", "/api/v1/auth/logout", Some(&publisher), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = app.send("GET", "/api/v1/me", Some(&publisher), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        let stored: Vec<String> = sqlx::query_scalar("SELECT password_hash FROM users").fetch_all(&app.db.pool).await.unwrap();
        assert!(stored.iter().all(|h| h.starts_with("$argon2id$")), "{stored:?}");
    }
    on_both_engines!(check);
}

#[tokio::test]
async fn the_hourly_sweep_deletes_expired_sessions_and_keeps_live_ones() {
    async fn check(app: TestApp) {
        let expired = app.login("admin", "admin-password-1").await;
        let live = app.login("admin", "admin-password-1").await;
        sqlx::query("UPDATE sessions SET expires_at = $1 WHERE token_hash = $2")
            .bind(now_ms() - 1)
            .bind(token_hash(&expired))
            .execute(&app.db.pool)
            .await
            .unwrap();
        portico_control_plane::expiry::once(&app.db, None).await;
        let left: Vec<String> = sqlx::query_scalar("SELECT token_hash FROM sessions").fetch_all(&app.db.pool).await.unwrap();
        assert_eq!(left, [token_hash(&live)]);
        assert_eq!(app.send("GET", "/api/v1/me", Some(&live), None).await.0, StatusCode::OK);
        assert_eq!(app.send("GET", "/api/v1/me", Some(&expired), None).await.0, StatusCode::UNAUTHORIZED);
    }
    on_both_engines!(check);
}

#[tokio::test]
async fn password_guessing_is_braked() {
    async fn check(app: TestApp) {
        for _ in 0..10 {
            let (status, _) =
                app.send("POST", "/api/v1/auth/login", None, Some(json!({"username": "admin", "password": "guess-guess-1"}))).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
        let (status, _) =
            app.send("POST", "/api/v1/auth/login", None, Some(json!({"username": "admin", "password": "admin-password-1"}))).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    }
    on_both_engines!(check);
}

#[tokio::test]
async fn the_openapi_document_lists_the_endpoints() {
    let app = TestApp::new(portico_control_plane::db::Engine::Sqlite).await;
    let (status, doc) = app.send("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/api/v1/auth/login"]["post"].is_object());

    // Every management operation lists the errors it can answer, with their problem body.
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap().iter().filter(|(path, _)| path.starts_with("/api/v1/")) {
        for (method, operation) in item.as_object().unwrap() {
            let responses = &operation["responses"];
            let secured = operation["security"].to_string().contains("\"bearer\"");
            let takes_input = operation["requestBody"].is_object() || operation["parameters"].as_array().is_some_and(|p| !p.is_empty());
            assert!(!secured || responses["401"].is_object(), "{method} {path} needs a session but lists no 401");
            assert!(!takes_input || responses["400"].is_object(), "{method} {path} takes input but lists no 400");
            for (status, response) in responses.as_object().unwrap().iter().filter(|(status, _)| !status.starts_with('2')) {
                assert!(response["content"].is_object(), "{method} {path} {status} has no body");
            }
            checked += 1;
        }
    }
    assert!(checked > 50, "{checked} operations");
    for (method, path, statuses) in [
        ("delete", "/api/v1/tiers/{kind}/{name}", &["400", "401"][..]),
        ("get", "/api/v1/users", &["401"]),
        ("post", "/api/v1/auth/login", &["400"]),
    ] {
        for status in statuses {
            let response = &doc["paths"][path][method]["responses"][status];
            assert_eq!(
                response["content"]["application/problem+json"]["schema"]["$ref"], "#/components/schemas/Problem",
                "{method} {path} {status}"
            );
        }
    }
    assert!(doc["components"]["schemas"]["Problem"]["properties"]["field"].is_object());
}

#[tokio::test]
async fn malformed_bodies_are_problems() {
    let app = TestApp::new(portico_control_plane::db::Engine::Sqlite).await;
    let (status, body) = app.send("POST", "/api/v1/auth/login", None, Some(json!({"username": "admin"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["detail"].as_str().unwrap().contains("password"), "{body}");
}

/// Log in from `source`, as the server would record the peer.
async fn login_from(app: &TestApp, source: &str, password: &str) -> StatusCode {
    use tower::ServiceExt;
    let peer: std::net::SocketAddr = format!("{source}:40000").parse().unwrap();
    let request = axum::http::Request::post("/api/v1/auth/login")
        .header("content-type", "application/json")
        .extension(axum::extract::ConnectInfo(peer))
        .body(axum::body::Body::from(json!({"username": "admin", "password": password}).to_string()))
        .unwrap();
    app.router.clone().oneshot(request).await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_from_one_source_does_not_lock_out_another() {
    let app = std::sync::Arc::new(TestApp::new(portico_control_plane::db::Engine::Sqlite).await);
    // Concurrent guesses are counted as they begin: 30 at once pass the brake 10 times at most.
    let guesses: Vec<_> = (0..30)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { login_from(&app, "198.51.100.7", "guess-guess-1").await })
        })
        .collect();
    let mut statuses = Vec::new();
    for guess in guesses {
        statuses.push(guess.await.unwrap());
    }
    let checked = statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count();
    let braked = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!((checked, braked), (10, 20), "{statuses:?}");
    // The right password from that source waits too; from another source it gets in.
    assert_eq!(login_from(&app, "198.51.100.7", "admin-password-1").await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(login_from(&app, "203.0.113.9", "admin-password-1").await, StatusCode::OK);
}
