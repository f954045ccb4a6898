//! Argon2 work is scheduled: a flood of sign-ups waits for its turn or is refused (429),
//! and hashes use the pinned parameters. Alone in its binary, since the schedule is the
//! process's: another test's logins would queue behind this flood.

use std::sync::Arc;

use axum::http::StatusCode;
use portico_control_plane::db::Engine;
use portico_control_plane::test_support::TestApp;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_up_flood_waits_its_turn_or_is_refused() {
    let app = Arc::new(TestApp::new(Engine::Sqlite).await);
    let flood: Vec<_> = (0..200)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                let body = json!({"username": format!("flood-{i}"), "password": "flood-password-1"});
                app.send("POST", "/api/v1/signup", None, Some(body)).await
            })
        })
        .collect();
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
