//! Users, login, roles and the problem responses of the management API, on both engines.

use axum::http::StatusCode;
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
}

#[tokio::test]
async fn malformed_bodies_are_problems() {
    let app = TestApp::new(portico_control_plane::db::Engine::Sqlite).await;
    let (status, body) = app.send("POST", "/api/v1/auth/login", None, Some(json!({"username": "admin"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["detail"].as_str().unwrap().contains("password"), "{body}");
}
