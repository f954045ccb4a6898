//! Changes across control-plane nodes sharing one PostgreSQL: each node `NOTIFY`s the
//! changes it makes and `LISTEN`s for the others', so a deployment made on one node
//! reaches the gateways connected to every node. On SQLite (one node) there is nothing
//! to do.

use std::time::Duration;

use sqlx::postgres::PgListener;

use crate::AppState;
use crate::db::Engine;

/// The channel changes are announced on.
pub const CHANNEL: &str = "portico_changes";

/// Start forwarding this node's changes to the others and theirs to this one (PostgreSQL
/// only); runs for as long as the process.
pub fn start(state: &AppState) {
    if state.db.engine != Engine::Postgres {
        return;
    }
    let node = crate::db::new_id();
    tokio::spawn(announce(state.clone(), node.clone()));
    tokio::spawn(listen(state.clone(), node));
}

async fn announce(state: AppState, node: String) {
    let mut outbox = state.outbox.subscribe();
    while outbox.changed().await.is_ok() {
        outbox.borrow_and_update();
        if let Err(error) = sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(&node).execute(&state.db.pool).await {
            tracing::warn!(error = %error, "cannot tell the other control-plane nodes about a change");
        }
    }
}

async fn listen(state: AppState, node: String) {
    loop {
        let mut listener = match PgListener::connect(&state.db.url).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(error = %error, "cannot listen for other nodes' changes; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(error) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %error, "cannot listen for other nodes' changes; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        // Whatever happened while not listening is picked up by one rebuild.
        state.changes.send_modify(|n| *n += 1);
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) if notification.payload() != node => state.changes.send_modify(|n| *n += 1),
                Ok(Some(_)) => {}
                // The connection was lost and made again: notifications may have been missed.
                Ok(None) => state.changes.send_modify(|n| *n += 1),
                Err(error) => {
                    tracing::warn!(error = %error, "lost the change notifications; reconnecting");
                    break;
                }
            }
        }
    }
}
