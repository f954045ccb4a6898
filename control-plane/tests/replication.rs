//! Active-active replication between two regions' PostgreSQL databases: a change made in
//! either reaches the other, the last writer of a row wins on both sides, a deletion is not
//! undone by an older change, deletions cascade, nothing echoes back, and a row that cannot
//! be applied is recorded while the rest goes on.

use portico_control_plane::auth::{Role, create_user};
use portico_control_plane::db::new_id;
use portico_control_plane::replication::Replication;
use portico_control_plane::test_support::{TestApp, fresh_postgres_database};

struct Region {
    app: TestApp,
    replication: Replication,
}

async fn region(name: &str) -> Region {
    let app = TestApp::over(&fresh_postgres_database().await).await;
    let replication = Replication::install(&app.db, name).await.unwrap();
    Region { app, replication }
}

/// Each region pulls the other's log; the entries each read.
async fn exchange(east: &Region, west: &Region) -> (u64, u64) {
    let to_east = east.replication.pull(&east.app.state, &west.app.db.pool).await.unwrap();
    let to_west = west.replication.pull(&west.app.state, &east.app.db.pool).await.unwrap();
    (to_east, to_west)
}

async fn run(region: &Region, statement: &str, binds: &[&str]) {
    let mut query = sqlx::query(statement);
    for bind in binds {
        query = query.bind(*bind);
    }
    query.execute(&region.app.db.pool).await.unwrap();
}

/// The rows of `query` (one text column), in order.
async fn texts(region: &Region, query: &str) -> Vec<String> {
    sqlx::query_scalar(query).fetch_all(&region.app.db.pool).await.unwrap()
}

const TIERS: &str = "SELECT name || '=' || description FROM tiers WHERE kind = 'subscription' ORDER BY name";
const USERS: &str = "SELECT username FROM users WHERE username <> 'admin' ORDER BY username";

#[tokio::test]
async fn two_regions_converge_on_every_change_with_the_last_writer_winning() {
    let (east, west) = (region("east").await, region("west").await);
    let tier = "INSERT INTO tiers (name, kind, description, requests, per_ms) VALUES ($1, 'subscription', $2, 10, 60000)";

    // Each region's changes reach the other.
    let ann = create_user(&east.app.db, "ann", "ann-password-1", Role::Subscriber).await.unwrap();
    run(&east, tier, &["Copper", "made in east"]).await;
    run(&west, tier, &["Zinc", "made in west"]).await;
    exchange(&east, &west).await;
    for region in [&east, &west] {
        assert_eq!(texts(region, USERS).await, ["ann"]);
        let tiers = texts(region, TIERS).await;
        assert!(tiers.contains(&"Copper=made in east".into()) && tiers.contains(&"Zinc=made in west".into()), "{tiers:?}");
    }

    // Both change one row before hearing of the other's change: the later write wins on both.
    let describe = "UPDATE tiers SET description = $2 WHERE name = $1 AND kind = 'subscription'";
    run(&east, describe, &["Copper", "east's edit"]).await;
    run(&west, describe, &["Copper", "west's later edit"]).await;
    // A deletion after an edit the deleting region has not heard of: the row stays deleted.
    run(&west, describe, &["Zinc", "west's edit"]).await;
    run(&east, "DELETE FROM tiers WHERE name = 'Zinc'", &[]).await;
    exchange(&east, &west).await;
    let converged = texts(&east, TIERS).await;
    assert_eq!(converged, texts(&west, TIERS).await);
    assert!(converged.contains(&"Copper=west's later edit".into()), "{converged:?}");
    assert!(!converged.iter().any(|tier| tier.starts_with("Zinc=")), "{converged:?}");

    // A row a local transaction holds: the pull gives up on it within its lock timeout (the
    // local transaction is not the one a deadlock would end), and the regions converge later.
    run(&east, describe, &["Copper", "east's edit while west holds it"]).await;
    let mut held = west.app.db.pool.begin().await.unwrap();
    sqlx::query("UPDATE tiers SET description = 'west held it' WHERE name = 'Copper' AND kind = 'subscription'")
        .execute(&mut *held)
        .await
        .unwrap();
    let error = west.replication.pull(&west.app.state, &east.app.db.pool).await.unwrap_err().to_string();
    assert!(error.contains("lock timeout"), "{error}");
    held.commit().await.unwrap();
    exchange(&east, &west).await;
    assert_eq!(texts(&east, TIERS).await, texts(&west, TIERS).await);
    assert!(texts(&west, TIERS).await.contains(&"Copper=west held it".into()));

    // A deletion cascades on both sides: ann's application goes with her.
    let application = new_id();
    let insert = "INSERT INTO applications (id, owner_id, name, tier, created_at) VALUES ($1, $2, 'ann-app', 'Unlimited', 0)";
    run(&east, insert, &[application.as_str(), ann.as_str()]).await;
    exchange(&east, &west).await;
    assert_eq!(texts(&west, "SELECT name FROM applications").await, ["ann-app"]);
    run(&east, "DELETE FROM users WHERE username = 'ann'", &[]).await;
    exchange(&east, &west).await;
    for region in [&east, &west] {
        assert!(texts(region, USERS).await.is_empty());
        assert!(texts(region, "SELECT name FROM applications").await.is_empty());
    }

    // What was applied is not logged again: with nothing new, nothing is read back.
    assert_eq!(exchange(&east, &west).await, (0, 0));
    let logged = "SELECT COUNT(*)::text FROM replication_log";
    let before = (texts(&east, logged).await, texts(&west, logged).await);
    exchange(&east, &west).await;
    assert_eq!((texts(&east, logged).await, texts(&west, logged).await), before);

    // Both regions take one user name (unique) while apart: each records the other's row as
    // a conflict, and what follows still arrives.
    create_user(&east.app.db, "bob", "bob-password-1", Role::Subscriber).await.unwrap();
    create_user(&west.app.db, "bob", "bob-password-2", Role::Publisher).await.unwrap();
    run(&west, tier, &["Tin", "after the conflict"]).await;
    exchange(&east, &west).await;
    for region in [&east, &west] {
        let conflicts = texts(region, "SELECT tbl || ': ' || error FROM replication_conflicts").await;
        assert!(conflicts.len() == 1 && conflicts[0].starts_with("users: "), "{conflicts:?}");
    }
    assert!(texts(&east, TIERS).await.contains(&"Tin=after the conflict".into()));

    // A trimmed log (entries older than a week go) is read on from where it was.
    portico_control_plane::replication::trim(&west.app.db, std::time::Duration::ZERO).await.unwrap();
    assert_eq!(texts(&west, "SELECT COUNT(*)::text FROM replication_log").await, ["0"]);
    run(&west, tier, &["Lead", "after the trim"]).await;
    assert_eq!(exchange(&east, &west).await, (1, 0));
    assert!(texts(&east, TIERS).await.contains(&"Lead=after the trim".into()));

    // Entries trimmed before the peer read them: the peer stops, rather than go on without them.
    run(&west, tier, &["Iron", "never read"]).await;
    // (Past the microsecond it was logged in.)
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    portico_control_plane::replication::trim(&west.app.db, std::time::Duration::ZERO).await.unwrap();
    run(&west, tier, &["Nickel", "after a gap"]).await;
    let error = east.replication.pull(&east.app.state, &west.app.db.pool).await.unwrap_err().to_string();
    assert!(error.contains("trimmed its log") && error.contains("from a copy"), "{error}");
    assert!(!texts(&east, TIERS).await.iter().any(|tier| tier.starts_with("Nickel=")));
}

#[tokio::test]
async fn a_database_is_one_region_s_and_sqlite_cannot_replicate() {
    let east = region("east").await;
    let error = Replication::install(&east.app.db, "west").await.unwrap_err().to_string();
    assert!(error.contains("region `east`"), "{error}");
    let error = Replication::install(&east.app.db, "no spaces").await.unwrap_err().to_string();
    assert!(error.contains("letters, digits"), "{error}");
    // Installing again as the same region is harmless.
    Replication::install(&east.app.db, "east").await.unwrap();
    let error = east.replication.pull(&east.app.state, &east.app.db.pool).await.unwrap_err().to_string();
    assert!(error.contains("the peer is this region"), "{error}");

    let dir = std::env::temp_dir().join(format!("portico-replication-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite = TestApp::over(&format!("sqlite://{}?mode=rwc", dir.join("portico.db").display())).await;
    let error = Replication::install(&sqlite.db, "east").await.unwrap_err().to_string();
    assert!(error.contains("needs PostgreSQL"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}
