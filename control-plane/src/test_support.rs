//! For tests (here and in other crates): a fresh database of each engine, the app over it,
//! and requests through it without a socket.
//!
//! PostgreSQL comes from `PORTICO_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); each test gets a database of its own. A
//! missing server fails the test: it is never skipped.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use portico_gateway::check::PolicyCeilings;
use sqlx::Connection;

use crate::db::{Db, Engine};
use crate::{AppState, Layers, Settings, app};

/// The PostgreSQL server for tests.
pub fn postgres_url() -> String {
    std::env::var("PORTICO_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// The URL of a new, empty PostgreSQL database on the test server. Panics (fails the
/// test) when the server is not there.
pub async fn fresh_postgres_database() -> String {
    let admin_url = postgres_url();
    let name = format!("portico_t_{}", uuid::Uuid::new_v4().simple());
    sqlx::any::install_default_drivers();
    let connect = tokio::time::timeout(std::time::Duration::from_secs(5), sqlx::AnyConnection::connect(&admin_url));
    let mut conn = match connect.await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => panic!("{}: {e}", no_postgres(&admin_url)),
        Err(_) => panic!("{}: no answer within 5 s", no_postgres(&admin_url)),
    };
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create test database");
    let base = admin_url.rsplit_once('/').map(|(base, _)| base).unwrap_or(&admin_url);
    format!("{base}/{name}")
}

/// The URL of a new PostgreSQL database on the test server made as a copy of the one at
/// `url` (as a second region's database starts from the first's), once the last session
/// on it has ended.
pub async fn copy_postgres_database(url: &str) -> String {
    let (base, source) = url.rsplit_once('/').expect("a database URL");
    let name = format!("portico_t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::AnyConnection::connect(&postgres_url()).await.expect("connect to the test server");
    for _ in 0..100 {
        // Refused while a session (a process just stopped) is still on the source.
        if sqlx::query(&format!("CREATE DATABASE {name} TEMPLATE {source}")).execute(&mut conn).await.is_ok() {
            return format!("{base}/{name}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{source} still has sessions after 10 s: it cannot be copied");
}

/// The one line a test run without PostgreSQL fails with: what is missing and how to
/// start it.
fn no_postgres(url: &str) -> String {
    format!(
        "the test suite needs PostgreSQL at {} (set PORTICO_TEST_POSTGRES_URL to use another); on Debian: \
         `apt-get install -y postgresql && pg_ctlcluster --skip-systemctl-redirect 15 main start`, \
         then allow `trust` for 127.0.0.1 in pg_hba.conf and create the database `test`",
        crate::db::redact(url)
    )
}

/// A test database and the app over it.
pub struct TestApp {
    /// The database.
    pub db: Db,
    /// The app.
    pub router: Router,
    /// Its state.
    pub state: AppState,
    _dir: Option<std::path::PathBuf>,
}

impl TestApp {
    /// A fresh database of `engine`, migrated, with an admin `admin` / `admin-password-1`.
    pub async fn new(engine: Engine) -> Self {
        let (url, dir) = match engine {
            Engine::Sqlite => {
                let dir = std::env::temp_dir().join(format!("portico-test-{}", uuid::Uuid::new_v4()));
                std::fs::create_dir_all(&dir).expect("temp dir");
                (format!("sqlite://{}?mode=rwc", dir.join("portico.db").display()), Some(dir))
            }
            Engine::Postgres => (fresh_postgres_database().await, None),
        };
        Self { _dir: dir, ..Self::over(&url).await }
    }

    /// The app over the empty database at `url`, migrated, with an admin `admin` /
    /// `admin-password-1`.
    pub async fn over(url: &str) -> Self {
        let sealing = crate::secrets::SealingKey::from_hex(&crate::secrets::SealingKey::generate_hex()).expect("a sealing key");
        let db = Db::connect(url, sealing).await.expect("connect test database");
        crate::auth::create_user(&db, "admin", "admin-password-1", crate::auth::Role::Admin).await.expect("admin");
        let state = AppState::new(db.clone(), settings(PolicyCeilings::default()));
        Self { router: app(state.clone(), Layers::ControlPlaneAndKeyManager), db, state, _dir: None }
    }

    /// The same database served by a control plane started with other policy ceilings.
    pub fn with_policy_ceilings(mut self, ceilings: PolicyCeilings) -> Self {
        self.state = AppState::new(self.db.clone(), settings(ceilings));
        self.router = app(self.state.clone(), Layers::ControlPlaneAndKeyManager);
        self
    }

    /// The same database served by a control plane whose public URL is `public_url`.
    pub fn with_public_url(mut self, public_url: &str) -> Self {
        let settings = Settings { public_url: public_url.to_owned(), ..(*self.state.settings).clone() };
        self.state = AppState::new(self.db.clone(), settings);
        self.router = app(self.state.clone(), Layers::ControlPlaneAndKeyManager);
        self
    }

    /// Send a request; returns the status and the body as JSON (`Null` when empty or not JSON).
    pub async fn send(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (StatusCode, serde_json::Value) {
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => request.header("content-type", "application/json").body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        }
        .expect("request");
        let response = self.router.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    /// Log in and return the session token.
    pub async fn login(&self, username: &str, password: &str) -> String {
        let (status, body) =
            self.send("POST", "/api/v1/auth/login", None, Some(serde_json::json!({"username": username, "password": password}))).await;
        assert_eq!(status, StatusCode::OK, "login {username}: {body}");
        body["token"].as_str().expect("token").to_owned()
    }

    /// Create a user with `role` (as admin) and log in as them.
    pub async fn user(&self, username: &str, role: &str) -> String {
        let admin = self.login("admin", "admin-password-1").await;
        let password = format!("{username}-password-1");
        let (status, body) = self
            .send(
                "POST",
                "/api/v1/users",
                Some(&admin),
                Some(serde_json::json!({"username": username, "password": password, "role": role})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        self.login(username, &password).await
    }
}

/// Run `test` once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! on_both_engines {
    ($test:ident) => {
        $test($crate::test_support::TestApp::new($crate::db::Engine::Sqlite).await).await;
        $test($crate::test_support::TestApp::new($crate::db::Engine::Postgres).await).await;
    };
}

fn settings(policy_ceilings: PolicyCeilings) -> Settings {
    let public_url = "http://portico.test".to_owned();
    Settings { issuer: public_url.clone(), public_url, policy_ceilings, fleet_client_certificates: false }
}

/// The proof that the holder of a P-256 key (PKCS#8 DER) registers its certificate for
/// `application`, as `openssl dgst -sha256 -sign` makes it, in base64.
pub fn proof_of_possession(pkcs8_der: &[u8], application: &str) -> String {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
    use base64::Engine;
    let signing = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8_der).expect("a P-256 PKCS#8 key");
    let message = format!("{}{application}", crate::devportal::PROOF_PREFIX);
    let signature = signing.sign(&aws_lc_rs::rand::SystemRandom::new(), message.as_bytes()).expect("a signature");
    base64::engine::general_purpose::STANDARD.encode(signature.as_ref())
}
