//! `portico policy push`: upload a component to a control plane's policy registry as
//! `name@version`, with the project's configuration schema when it has one. The control
//! plane validates it again (world, compilation, schema) and answers why when it refuses.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::GaiResolver;
use hyper_util::rt::TokioExecutor;
use portico_gateway::tls;

/// The schema file a project may carry next to its fixtures.
pub const SCHEMA_FILE: &str = "config.schema.json";

/// What to upload and where.
#[derive(Debug)]
pub struct Push {
    /// The control plane's URL.
    pub control_plane: String,
    /// The CA certificates (PEM) its certificate must chain to; the system's roots if none.
    pub control_plane_ca: Option<PathBuf>,
    /// A session token, or none to log in with `user` and `password`.
    pub token: Option<String>,
    /// The user to log in as.
    pub user: Option<String>,
    /// That user's password.
    pub password: Option<String>,
    /// The policy's name in the registry.
    pub name: String,
    /// Its version.
    pub version: String,
    /// What it does.
    pub description: String,
    /// The component.
    pub component: Vec<u8>,
    /// A JSON Schema file for its configuration.
    pub schema: Option<PathBuf>,
}

/// The schema a project carries, if any.
pub fn project_schema(project_dir: &Path) -> Option<PathBuf> {
    let path = project_dir.join(SCHEMA_FILE);
    path.is_file().then_some(path)
}

/// Upload; returns the registry's description of the policy (JSON).
pub fn push(push: &Push) -> anyhow::Result<serde_json::Value> {
    let schema = match &push.schema {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            Some(serde_json::from_str::<serde_json::Value>(&text).with_context(|| format!("{} is not JSON", path.display()))?)
        }
        None => None,
    };
    let body = serde_json::json!({
        "name": push.name,
        "version": push.version,
        "description": push.description,
        "component": base64::engine::general_purpose::STANDARD.encode(&push.component),
        "config_schema": schema,
    });
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let base = push.control_plane.trim_end_matches('/');
        let tls = if base.starts_with("https://") {
            let trust = push.control_plane_ca.as_deref().map_or(tls::Trust::System, tls::Trust::File);
            Some(tls::client_config(trust).map_err(|e| anyhow::anyhow!("the control plane's CA: {e}"))?)
        } else {
            None
        };
        let connector = tls::connector(tls, Duration::from_secs(10), GaiResolver::new()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let client: Client<HttpsConnector<HttpConnector>, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
        let token = match &push.token {
            Some(token) => token.clone(),
            None => {
                let user = push
                    .user
                    .as_deref()
                    .context("give a session token in PORTICO_TOKEN or --token-file, or --user with PORTICO_PASSWORD")?;
                let password = push.password.as_deref().context("set PORTICO_PASSWORD to log in")?;
                let session = send(
                    &client,
                    Method::POST,
                    &format!("{base}/api/v1/auth/login"),
                    None,
                    serde_json::json!({"username": user, "password": password}),
                )
                .await
                .context("logging in")?;
                session["token"].as_str().context("the login answer has no token")?.to_owned()
            }
        };
        send(&client, Method::POST, &format!("{base}/api/v1/policies"), Some(&token), body).await
    })
}

async fn send(
    client: &Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    method: Method,
    url: &str,
    token: Option<&str>,
    body: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let mut request = Request::builder().method(method).uri(url).header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request.body(Full::new(Bytes::from(body.to_string()))).with_context(|| format!("`{url}` is not a valid URL"))?;
    let response = client.request(request).await.with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let bytes = response.into_body().collect().await.context("reading the answer")?.to_bytes();
    let answer: serde_json::Value =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    if !status.is_success() {
        let detail = answer["detail"].as_str().map(str::to_owned).unwrap_or_else(|| answer.to_string());
        match answer["field"].as_str() {
            Some(field) => bail!("the control plane refused it ({status}): {field}: {detail}"),
            None => bail!("the control plane refused it ({status}): {detail}"),
        }
    }
    Ok(answer)
}
