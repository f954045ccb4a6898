//! The control plane's health, for load balancers and Kubernetes probes: `/healthz` (the
//! process answers) and `/readyz` (its database answers too). Neither needs a login, so
//! neither says more than that.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;

use crate::AppState;
use crate::error::ApiError;

/// How long the database may take to answer `/readyz`.
const DATABASE_WAIT: Duration = Duration::from_secs(2);

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz))
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    let answered = tokio::time::timeout(DATABASE_WAIT, sqlx::query("SELECT 1").execute(&state.db.pool)).await;
    match answered {
        Ok(Ok(_)) => Ok("ready\n"),
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness: the database does not answer");
            Err(ApiError::Unavailable("the database does not answer".into()))
        }
        Err(_) => {
            tracing::warn!("readiness: the database did not answer in time");
            Err(ApiError::Unavailable(format!("the database did not answer within {} s", DATABASE_WAIT.as_secs())))
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinSet;

    use crate::db::Engine;
    use crate::test_support::{TestApp, fresh_postgres_database, postgres_url};

    /// A TCP relay to the test PostgreSQL on `port` (any when 0); dropping it cuts every
    /// connection through it and refuses new ones: the database as the control plane sees
    /// it during a network partition.
    struct Relay {
        port: u16,
        _connections: JoinSet<()>,
    }

    impl Relay {
        async fn start(port: u16) -> Relay {
            let target = server_of(&postgres_url());
            let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind the relay");
            let port = listener.local_addr().expect("address").port();
            let mut connections = JoinSet::new();
            connections.spawn(async move {
                let mut relayed = JoinSet::new();
                while let Ok((mut client, _)) = listener.accept().await {
                    let target = target.clone();
                    relayed.spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(target).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                }
            });
            Relay { port, _connections: connections }
        }
    }

    /// The `host:port` of a `postgres://user@host:port/database` URL.
    fn server_of(url: &str) -> String {
        url.split('@').nth(1).and_then(|rest| rest.split('/').next()).expect("postgres://user@host:port/database").to_owned()
    }

    #[tokio::test]
    async fn healthz_answers_and_readyz_follows_the_database() {
        let sqlite = TestApp::new(Engine::Sqlite).await;
        assert_eq!(sqlite.send("GET", "/healthz", None, None).await.0, StatusCode::OK);
        assert_eq!(sqlite.send("GET", "/readyz", None, None).await.0, StatusCode::OK);

        let direct = fresh_postgres_database().await;
        let relay = Relay::start(0).await;
        let port = relay.port;
        let through_relay = direct.replacen(&server_of(&direct), &format!("127.0.0.1:{port}"), 1);
        let app = TestApp::over(&through_relay).await;
        assert_eq!(app.send("GET", "/readyz", None, None).await.0, StatusCode::OK);

        drop(relay);
        let (status, problem) = app.send("GET", "/readyz", None, None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
        assert!(problem["detail"].as_str().is_some_and(|detail| detail.contains("database")), "{problem}");
        assert_eq!(app.send("GET", "/healthz", None, None).await.0, StatusCode::OK, "the process still answers");

        let _relay = Relay::start(port).await;
        let mut status = StatusCode::SERVICE_UNAVAILABLE;
        for _ in 0..100 {
            status = app.send("GET", "/readyz", None, None).await.0;
            if status == StatusCode::OK {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(status, StatusCode::OK, "ready again once the database answers");
    }
}
