//! Active-active replication between two regions, each with its own PostgreSQL database:
//! a deferred row trigger logs every write in commit order, each region applies the other
//! region's log through [`Change`] (so its gateways are told), and a row's last writer wins
//! (docs/deployment.md, "Multi-datacenter, active-active", has the rules).

use std::collections::HashMap;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};

use crate::AppState;
use crate::db::{Db, Engine};
use crate::error::{ApiError, ApiResult};
use crate::fleet::Change;

/// What is replicated: everything a region's users and gateways see. Not sessions (a
/// login is a region's), gateways' registrations and acknowledgements (each region's
/// gateways report to it) or usage analytics (each region counts its own traffic).
const TABLES: &[&str] = &[
    "settings",
    "users",
    "tiers",
    "apis",
    "operations",
    "revisions",
    "environments",
    "deployments",
    "deployment_history",
    "applications",
    "subscriptions",
    "oauth_clients",
    "api_keys",
    "signing_keys",
    "refresh_tokens",
    "revoked_tokens",
    "authorization_codes",
    "policy_modules",
    "gateway_tokens",
    "blocking_conditions",
    "api_scopes",
    "application_cutoffs",
    "client_certificates",
    "key_managers",
    "external_clients",
];

/// The most log entries applied in one transaction.
const BATCH: i64 = 500;
/// The most bytes of rows read from the peer's log at once; an entry larger than this is read
/// alone. Policy modules are up to 32 MiB each, so a batch of them would otherwise be
/// gigabytes held in memory.
const BATCH_BYTES: i64 = 64 << 20;
/// How often the peer's log is read: a change reaches the other region's gateways well
/// within the 2 s a multi-datacenter deployment promises.
const PULL_EVERY: Duration = Duration::from_millis(250);
/// How long a region keeps its log: a peer apart for longer must start again from a copy.
const KEEP_LOG: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long the peer's log may take to answer one read.
const PEER_TIMEOUT: Duration = Duration::from_secs(10);
/// The advisory lock installing takes (any number only Portico's installs use).
const INSTALL_LOCK: i64 = 0x0070_6f72_7469_636f;

/// The tables, the capture function and its triggers; idempotent.
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS replication_clock (
    one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    region TEXT NOT NULL,
    seq BIGINT NOT NULL,
    hlc BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS replication_log (
    seq BIGINT PRIMARY KEY,
    tbl TEXT NOT NULL,
    pk JSONB NOT NULL,
    data JSONB,
    hlc BIGINT NOT NULL
);
-- The row's size as stored (about its length as JSON text), which caps a batch's bytes;
-- added here for logs made before it was recorded.
ALTER TABLE replication_log ADD COLUMN IF NOT EXISTS size BIGINT;
CREATE TABLE IF NOT EXISTS replication_rows (
    tbl TEXT NOT NULL,
    pk JSONB NOT NULL,
    hlc BIGINT NOT NULL,
    region TEXT NOT NULL,
    deleted BOOLEAN NOT NULL,
    PRIMARY KEY (tbl, pk)
);
CREATE TABLE IF NOT EXISTS replication_cursors (
    peer TEXT PRIMARY KEY,
    seq BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS replication_conflicts (
    peer TEXT NOT NULL,
    seq BIGINT NOT NULL,
    tbl TEXT NOT NULL,
    pk JSONB NOT NULL,
    error TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (peer, seq)
);
CREATE OR REPLACE FUNCTION portico_log(in_table text, in_key jsonb, in_data jsonb) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    clock record;
BEGIN
    UPDATE replication_clock SET seq = seq + 1,
        hlc = GREATEST(hlc + 1, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint)
        RETURNING region, seq, hlc INTO clock;
    INSERT INTO replication_log (seq, tbl, pk, data, hlc, size)
        VALUES (clock.seq, in_table, in_key, in_data, clock.hlc, pg_column_size(in_data));
    INSERT INTO replication_rows (tbl, pk, hlc, region, deleted) VALUES (in_table, in_key, clock.hlc, clock.region, in_data IS NULL)
        ON CONFLICT (tbl, pk) DO UPDATE SET hlc = EXCLUDED.hlc, region = EXCLUDED.region, deleted = EXCLUDED.deleted;
END
$$;
CREATE OR REPLACE FUNCTION portico_capture() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    new_row jsonb;
    old_row jsonb;
    new_key jsonb;
    old_key jsonb;
BEGIN
    IF current_setting('portico.applying', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        new_row := to_jsonb(NEW);
        SELECT jsonb_object_agg(name, new_row -> name) INTO new_key FROM unnest(TG_ARGV) AS name;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        old_row := to_jsonb(OLD);
        SELECT jsonb_object_agg(name, old_row -> name) INTO old_key FROM unnest(TG_ARGV) AS name;
    END IF;
    -- A deletion, or an update that moved the row to another key: the old key is gone.
    IF old_key IS NOT NULL AND old_key IS DISTINCT FROM new_key THEN
        PERFORM portico_log(TG_TABLE_NAME, old_key, NULL);
    END IF;
    IF new_key IS NOT NULL THEN
        PERFORM portico_log(TG_TABLE_NAME, new_key, new_row);
    END IF;
    RETURN NULL;
END
$$;
"#;

/// How a peer's entry is applied to a replicated table: its statements, made once from the
/// database's catalog, each binding the entry's JSON as `$1`.
#[derive(Debug)]
struct Table {
    /// Insert the row, or update it where its key is.
    upsert: String,
    /// Delete the row the key names.
    delete: String,
}

/// This region's side of the replication: its name and its tables.
#[derive(Debug)]
pub struct Replication {
    region: String,
    tables: HashMap<&'static str, Table>,
}

impl Replication {
    /// Capture this database's changes as `region`'s from now on (its tables, the capture
    /// function and its triggers are made if missing). A database once installed as
    /// another region's is refused.
    pub async fn install(db: &Db, region: &str) -> ApiResult<Self> {
        if db.engine != Engine::Postgres {
            return Err(ApiError::invalid("region", "active-active replication needs PostgreSQL"));
        }
        if region.is_empty() || region.len() > 64 || !region.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-') {
            return Err(ApiError::invalid("region", format!("`{region}`: 1 to 64 letters, digits and `-`")));
        }
        // One transaction, under a lock: two nodes of a region may start at once.
        let mut conn = db.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(INSTALL_LOCK).execute(&mut *conn).await?;
        sqlx::raw_sql(SCHEMA).execute(&mut *conn).await?;
        sqlx::query("INSERT INTO replication_clock (region, seq, hlc) VALUES ($1, 0, 0) ON CONFLICT (one) DO NOTHING")
            .bind(region)
            .execute(&mut *conn)
            .await?;
        let installed: String = sqlx::query_scalar("SELECT region FROM replication_clock").fetch_one(&mut *conn).await?;
        if installed != region {
            return Err(ApiError::invalid("region", format!("this database is region `{installed}`'s, not `{region}`'s")));
        }
        let mut tables = HashMap::new();
        for &name in TABLES {
            let (key, rest) = columns(&mut conn, name).await?;
            let arguments: Vec<String> = key.iter().map(|column| format!("'{column}'")).collect();
            // Deferred to commit: a transaction takes the clock as its last lock, held only
            // through its commit (taken at its first write, two transactions each holding a
            // row the other wants could deadlock on it).
            sqlx::raw_sql(&format!(
                "DROP TRIGGER IF EXISTS portico_capture ON {name}; \
                 CREATE CONSTRAINT TRIGGER portico_capture AFTER INSERT OR UPDATE OR DELETE ON {name} \
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION portico_capture({})",
                arguments.join(", ")
            ))
            .execute(&mut *conn)
            .await?;
            tables.insert(name, Table::new(name, &key, &rest));
        }
        conn.commit().await?;
        Ok(Self { region: region.to_owned(), tables })
    }

    /// Pull from the database at `peer_url` as long as the process runs, every
    /// [`PULL_EVERY`]; while the peer cannot be reached (a partition, its outage), this
    /// region goes on alone and catches up when it can.
    pub async fn follow(self, state: AppState, peer_url: String) {
        let peer = match AnyPoolOptions::new().max_connections(2).acquire_timeout(Duration::from_secs(5)).connect_lazy(&peer_url) {
            Ok(peer) => peer,
            Err(error) => return tracing::error!(%error, "--peer-database-url cannot be used; nothing is replicated"),
        };
        let mut failing = false;
        let mut trimmed = tokio::time::Instant::now();
        loop {
            if trimmed.elapsed() >= Duration::from_secs(3600) {
                trimmed = tokio::time::Instant::now();
                if let Err(error) = trim(&state.db, KEEP_LOG).await {
                    tracing::warn!(%error, "cannot trim the replication log");
                }
            }
            match self.pull(&state, &peer).await {
                Ok(read) => {
                    if failing {
                        tracing::info!(region = %self.region, read, "the peer region is back: caught up with its changes");
                    } else if read > 0 {
                        tracing::debug!(region = %self.region, read, "applied the peer region's changes");
                    }
                    failing = false;
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(%error, "cannot pull the peer region's changes; retrying");
                    }
                    failing = true;
                }
            }
            tokio::time::sleep(PULL_EVERY).await;
        }
    }

    /// Apply what the region whose database is `peer` logged since the last pull, a batch
    /// a transaction; the number of entries read.
    pub async fn pull(&self, state: &AppState, peer: &AnyPool) -> ApiResult<u64> {
        let peer_region: String = sqlx::query_scalar("SELECT region FROM replication_clock").fetch_one(peer).await?;
        if peer_region == self.region {
            return Err(ApiError::invalid("peer", format!("the peer is this region, `{peer_region}`")));
        }
        let mut read = 0;
        loop {
            let cursor: Option<i64> = sqlx::query_scalar("SELECT seq FROM replication_cursors WHERE peer = $1")
                .bind(&peer_region)
                .fetch_optional(&state.db.pool)
                .await?;
            let cursor = cursor.unwrap_or(0);
            // Read before the local transaction begins: a slow or silent link holds nothing here.
            let entries = tokio::time::timeout(PEER_TIMEOUT, read_log(peer, cursor, BATCH, BATCH_BYTES))
                .await
                .map_err(|_| ApiError::Unavailable(format!("the peer region's log did not answer within {PEER_TIMEOUT:?}")))??;
            let Some(first) = entries.first().map(|entry| entry.seq) else { return Ok(read) };
            if first > cursor + 1 {
                return Err(ApiError::Internal(format!(
                    "the peer region trimmed its log entries {} to {} before this region read them: set this region up again from a copy",
                    cursor + 1,
                    first - 1
                )));
            }
            let mut change = Change::begin(state).await?;
            // A row a local request holds is not waited for long: the batch is tried again
            // later, rather than the request's transaction chosen to end a deadlock.
            sqlx::query("SET LOCAL lock_timeout = '100ms'").execute(&mut *change).await?;
            sqlx::query("SELECT set_config('portico.applying', 'on', true)").execute(&mut *change).await?;
            // Locked, so that two nodes of this region do not apply the same entries at once.
            sqlx::query("INSERT INTO replication_cursors (peer, seq) VALUES ($1, 0) ON CONFLICT (peer) DO NOTHING")
                .bind(&peer_region)
                .execute(&mut *change)
                .await?;
            let locked: i64 = sqlx::query_scalar("SELECT seq FROM replication_cursors WHERE peer = $1 FOR UPDATE")
                .bind(&peer_region)
                .fetch_one(&mut *change)
                .await?;
            let entries: Vec<&Entry> = entries.iter().filter(|entry| entry.seq > locked).collect();
            let Some(last) = entries.last().map(|entry| entry.seq) else { continue };
            read += entries.len() as u64;
            for entry in entries {
                self.apply(&mut change, &peer_region, entry).await?;
            }
            sqlx::query("UPDATE replication_cursors SET seq = $2 WHERE peer = $1")
                .bind(&peer_region)
                .bind(last)
                .execute(&mut *change)
                .await?;
            change.commit().await?;
        }
    }

    /// Apply one entry unless this database holds a later version of its row; one that
    /// cannot be applied is recorded as a conflict.
    async fn apply(&self, change: &mut Change<'_>, peer: &str, entry: &Entry) -> ApiResult<()> {
        // The clock runs past every time seen, so that a later write here is later.
        sqlx::query("UPDATE replication_clock SET hlc = GREATEST(hlc, $1)").bind(entry.hlc).execute(&mut **change).await?;
        let Some(table) = self.tables.get(entry.tbl.as_str()) else {
            return conflict(change, peer, entry, "not a replicated table here").await;
        };
        let held: Option<(i64, String)> = sqlx::query_as("SELECT hlc, region FROM replication_rows WHERE tbl = $1 AND pk = $2::jsonb")
            .bind(&entry.tbl)
            .bind(&entry.pk)
            .fetch_optional(&mut **change)
            .await?;
        if held.is_some_and(|(hlc, region)| (hlc, region.as_str()) >= (entry.hlc, peer)) {
            return Ok(());
        }
        let statement = if entry.data.is_some() { &table.upsert } else { &table.delete };
        sqlx::query("SAVEPOINT replicated_row").execute(&mut **change).await?;
        match sqlx::query(statement).bind(entry.data.as_deref().unwrap_or(&entry.pk)).execute(&mut **change).await {
            Ok(_) => {}
            // A constraint the row breaks here (class 23): recorded, and the log goes on.
            Err(sqlx::Error::Database(error)) if error.code().is_some_and(|code| code.starts_with("23")) => {
                sqlx::query("ROLLBACK TO SAVEPOINT replicated_row").execute(&mut **change).await?;
                return conflict(change, peer, entry, &error.to_string()).await;
            }
            // Anything else (a lock not had in time, the database failing): the batch is
            // tried again.
            Err(error) => return Err(error.into()),
        }
        sqlx::query(
            "INSERT INTO replication_rows (tbl, pk, hlc, region, deleted) VALUES ($1, $2::jsonb, $3, $4, $5) \
             ON CONFLICT (tbl, pk) DO UPDATE SET hlc = EXCLUDED.hlc, region = EXCLUDED.region, deleted = EXCLUDED.deleted",
        )
        .bind(&entry.tbl)
        .bind(&entry.pk)
        .bind(entry.hlc)
        .bind(peer)
        .bind(entry.data.is_none())
        .execute(&mut **change)
        .await?;
        Ok(())
    }
}

/// The entries of the log at `peer` after `cursor`, in order: at most `entries` of them, and
/// no more than `bytes` of rows unless the first alone is larger (it is read alone then).
/// Sizes are summed before any row is made text, so rows past the cap cost the peer nothing.
async fn read_log(peer: &AnyPool, cursor: i64, entries: i64, bytes: i64) -> ApiResult<Vec<Entry>> {
    Ok(sqlx::query_as(
        "SELECT seq, tbl, pk::text AS pk, data::text AS data, hlc FROM ( \
             SELECT seq, tbl, pk, data, hlc, row_number() OVER (ORDER BY seq) AS n, \
                 sum(COALESCE(size, pg_column_size(data), 0)) OVER (ORDER BY seq) AS through \
             FROM (SELECT * FROM replication_log WHERE seq > $1 ORDER BY seq LIMIT $2) AS next \
         ) AS sized WHERE n = 1 OR through <= $3 ORDER BY seq",
    )
    .bind(cursor)
    .bind(entries)
    .bind(bytes)
    .fetch_all(peer)
    .await?)
}

/// Record that `entry` could not be applied (and why), and log it.
async fn conflict(change: &mut Change<'_>, peer: &str, entry: &Entry, error: &str) -> ApiResult<()> {
    tracing::warn!(peer, seq = entry.seq, table = %entry.tbl, key = %entry.pk, error, "a replicated change could not be applied");
    sqlx::query(
        "INSERT INTO replication_conflicts (peer, seq, tbl, pk, error, at) VALUES ($1, $2, $3, $4::jsonb, $5, $6) \
         ON CONFLICT (peer, seq) DO NOTHING",
    )
    .bind(peer)
    .bind(entry.seq)
    .bind(&entry.tbl)
    .bind(&entry.pk)
    .bind(error)
    .bind(crate::db::now_ms())
    .execute(&mut **change)
    .await?;
    Ok(())
}

/// Delete the entries of this region's log, and the tombstones, older than `keep`.
pub async fn trim(db: &Db, keep: Duration) -> ApiResult<()> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let before = i64::try_from(now.saturating_sub(keep).as_micros()).unwrap_or(i64::MAX);
    sqlx::query("DELETE FROM replication_log WHERE hlc < $1").bind(before).execute(&db.pool).await?;
    sqlx::query("DELETE FROM replication_rows WHERE deleted AND hlc < $1").bind(before).execute(&db.pool).await?;
    Ok(())
}

/// An entry of a region's log.
#[derive(Debug, sqlx::FromRow)]
struct Entry {
    seq: i64,
    tbl: String,
    /// The row's key, as a JSON object.
    pk: String,
    /// The row as a JSON object; `None` when it was deleted.
    data: Option<String>,
    hlc: i64,
}

impl Table {
    fn new(name: &str, key: &[String], rest: &[String]) -> Self {
        let quoted =
            |columns: &[String], prefix: &str| columns.iter().map(|column| format!("{prefix}\"{column}\"")).collect::<Vec<_>>().join(", ");
        let key = quoted(key, "");
        let insert = format!("INSERT INTO {name} SELECT * FROM jsonb_populate_record(NULL::{name}, $1::jsonb) ON CONFLICT ({key})");
        let upsert = if rest.is_empty() {
            format!("{insert} DO NOTHING")
        } else {
            format!("{insert} DO UPDATE SET ({}) = ROW({})", quoted(rest, ""), quoted(rest, "EXCLUDED."))
        };
        let delete = format!("DELETE FROM {name} WHERE ({key}) = (SELECT {key} FROM jsonb_populate_record(NULL::{name}, $1::jsonb))");
        Self { upsert, delete }
    }
}

/// The primary key's columns and the other columns of table `name`.
async fn columns(conn: &mut sqlx::AnyConnection, name: &str) -> ApiResult<(Vec<String>, Vec<String>)> {
    let columns = sqlx::query(
        "SELECT a.attname::text AS name, COALESCE(a.attnum = ANY(i.indkey), FALSE) AS is_key \
         FROM pg_attribute a LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary \
         WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
    )
    .bind(name)
    .fetch_all(&mut *conn)
    .await?;
    let (mut key, mut rest) = (Vec::new(), Vec::new());
    for column in columns {
        let column_name: String = column.try_get("name")?;
        if column.try_get::<bool, _>("is_key")? { key.push(column_name) } else { rest.push(column_name) }
    }
    if key.is_empty() {
        return Err(ApiError::Internal(format!("table {name} has no primary key to replicate by")));
    }
    Ok((key, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{TestApp, fresh_postgres_database};

    #[tokio::test]
    async fn a_batch_read_from_the_peer_is_capped_by_bytes_and_never_empty() {
        let app = TestApp::over(&fresh_postgres_database().await).await;
        Replication::install(&app.db, "east").await.unwrap();
        let pool = &app.db.pool;
        let start: i64 = sqlx::query_scalar("SELECT COALESCE(max(seq), 0) FROM replication_log").fetch_one(pool).await.unwrap();
        // Rows of about 1,000, 1,000, 5,000 and 1,000 bytes, then a deletion (no row at all).
        let row = |key: u32, length: u32| {
            format!("PERFORM portico_log('tiers', '{{\"k\": {key}}}', jsonb_build_object('blob', repeat('x', {length})));")
        };
        let deletion = "PERFORM portico_log('tiers', '{\"k\": 5}', NULL);";
        let block = format!("DO $$ BEGIN {} {} {} {} {deletion} END $$", row(1, 1000), row(2, 1000), row(3, 5000), row(4, 1000));
        sqlx::raw_sql(&block).execute(pool).await.unwrap();
        let read = async |after: i64, entries: i64, bytes: i64| -> Vec<i64> {
            read_log(pool, start + after, entries, bytes).await.unwrap().iter().map(|entry| entry.seq - start).collect()
        };

        assert_eq!(read(0, 500, 2_500).await, [1, 2], "the third row would take the batch past 2,500 bytes");
        assert_eq!(read(2, 500, 2_500).await, [3], "a row larger than the cap is read alone");
        assert_eq!(read(3, 500, 2_500).await, [4, 5], "a deletion carries no row");
        assert_eq!(read(0, 3, 1 << 20).await, [1, 2, 3], "the count still caps a batch");
        assert_eq!(read(5, 500, 2_500).await, Vec::<i64>::new());

        let first = read_log(pool, start, 1, 2_500).await.unwrap().remove(0);
        let data: serde_json::Value = serde_json::from_str(first.data.as_deref().unwrap()).unwrap();
        assert_eq!((first.pk.as_str(), data["blob"].as_str().map(str::len)), ("{\"k\": 1}", Some(1000)));
    }
}
