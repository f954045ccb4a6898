//! The database: one pool over SQLite (embedded default: a file with WAL and
//! `synchronous=FULL`) or PostgreSQL (for HA), chosen by URL, with the same migrations.
//! Queries are written once, with `$1`-style placeholders both engines accept.

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};

use crate::secrets::SealingKey;

/// Which engine a pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// SQLite, embedded.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// The control plane's database.
#[derive(Debug, Clone)]
pub struct Db {
    /// The pool.
    pub pool: AnyPool,
    /// Its engine.
    pub engine: Engine,
    /// The URL it was opened with (it may hold a password: never log it unredacted).
    pub url: String,
    /// What seals the secrets it stores.
    pub sealing: SealingKey,
}

/// Migrations in `control-plane/migrations`, embedded.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl Db {
    /// Connect (creating a SQLite file if needed), bring the schema up to date and adopt
    /// `sealing` as the key of its secrets (refused if they were sealed with another).
    pub async fn connect(url: &str, sealing: SealingKey) -> anyhow::Result<Self> {
        install_default_drivers();
        let engine = if url.starts_with("sqlite:") {
            Engine::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Engine::Postgres
        } else {
            anyhow::bail!("unsupported database URL `{}`: use sqlite:// or postgres://", redact(url));
        };
        let mut options = AnyPoolOptions::new().max_connections(if engine == Engine::Sqlite { 4 } else { 16 });
        if engine == Engine::Sqlite {
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
                    )
                    .await?;
                    Ok(())
                })
            });
        }
        let pool = options.connect(url).await.map_err(|e| anyhow::anyhow!("cannot open the database {}: {e}", redact(url)))?;
        MIGRATOR.run(&pool).await.map_err(|e| anyhow::anyhow!("database migration failed: {e}"))?;
        sealing.adopt(&pool).await?;
        Ok(Self { pool, engine, url: url.to_owned(), sealing })
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A new random id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
