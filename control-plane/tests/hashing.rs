//! Argon2 work is scheduled: a flood of sign-ups waits for its turn or is refused (429),
//! the fleet streams keep flowing through it, and hashes use the pinned parameters. Alone
//! in its binary, since the schedule is the process's: another test's logins would queue
//! behind this flood.

use std::sync::Arc;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use portico_control_plane::db::Engine;
use portico_control_plane::test_support::TestApp;
use serde_json::json;
use tower::ServiceExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_up_flood_waits_its_turn_or_is_refused() {
    let app = Arc::new(TestApp::new(Engine::Sqlite).await);
    // A gateway's stream, open before the flood (logging in hashes too: done before).
    let admin = app.login("admin", "admin-password-1").await;
    let (_, issued) = app.send("POST", "/api/v1/environments/default/gateway-tokens", Some(&admin), Some(json!({}))).await;
    let stream = Request::get("/fleet/v1/stream")
        .header("authorization", format!("Bearer {}", issued["token"].as_str().unwrap()))
        .header("portico-protocol", portico_gateway::contract::fleet::PROTOCOL_VERSION.to_string())
        .header("portico-gateway", "gw-flood")
        .header("portico-environment", "default")
        .body(Body::empty())
        .unwrap();
    let response = app.router.clone().oneshot(stream).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut events = response.into_body();
    let first = events.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("event: environment"), "{first:?}");

    let flood: Vec<_> = (0..200)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                let body = json!({"username": format!("flood-{i}"), "password": "flood-password-1"});
                app.send("POST", "/api/v1/signup", None, Some(body)).await
            })
        })
        .collect();
    // In the middle of the flood, a block: the stream carries it at once.
    let blocked = Instant::now();
    let (status, body) =
        app.send("POST", "/api/v1/blocking-conditions", Some(&admin), Some(json!({"kind": "ip", "value": "192.0.2.77"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let carried = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let chunk = events.frame().await.unwrap().unwrap().into_data().unwrap_or_default();
            if String::from_utf8_lossy(&chunk).contains("192.0.2.77") {
                return blocked.elapsed();
            }
        }
    })
    .await
    .expect("the stream carried the block within 5 s of it, in the middle of the flood");
    let flooding = flood.iter().filter(|request| !request.is_finished()).count();
    println!("a block reached the fleet stream {carried:?} after it was made, with {flooding} sign-ups still waiting");
    assert!(flooding > 0, "the flood was over before the block reached the stream: nothing was shown");
    let (mut created, mut refused) = (0, 0);
    for request in flood {
        let (status, body) = request.await.unwrap();
        match status {
            StatusCode::CREATED => created += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(body["detail"].as_str().unwrap().contains("retry"), "{body}");
                refused += 1;
            }
            other => panic!("{other}: {body}"),
        }
    }
    println!("200 sign-ups at once: {created} created, {refused} refused");
    // Two run at a time and 64 may wait: 200 at once cannot all have had a turn.
    assert!(refused > 0 && created >= 2, "{created} created, {refused} refused");

    let stored: String =
        sqlx::query_scalar("SELECT password_hash FROM users WHERE username LIKE 'flood-%' LIMIT 1").fetch_one(&app.db.pool).await.unwrap();
    assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{stored}");
    // Once the flood is over, everyone gets a turn again.
    let (status, _) =
        app.send("POST", "/api/v1/auth/login", None, Some(json!({"username": "flood-x", "password": "nope-nope-nope"}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
