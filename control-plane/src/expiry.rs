//! What outlives its use is deleted, every hour, by every node that opens the database (the
//! deletes are idempotent, so nodes need not agree on which does it): usage analytics past
//! their retention, sessions past their expiry, and refresh-token families none of whose
//! tokens can still be used. Without it, each login and each token issued leaves a row for
//! good.

use std::time::Duration;

use crate::db::{Db, now_ms};
use crate::{analytics, auth, keymanager};

/// How often.
const EVERY: Duration = Duration::from_secs(3600);

/// Delete what expired now and every hour, as long as the process runs; analytics only
/// when given their `analytics_retention` (the control plane keeps them, a key manager not).
pub async fn every_hour(db: Db, analytics_retention: Option<Duration>) {
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tick.tick().await;
        once(&db, analytics_retention).await;
    }
}

/// Delete what expired; a part that fails is logged and the others are still done.
pub async fn once(db: &Db, analytics_retention: Option<Duration>) {
    let now = now_ms();
    if let Some(retention) = analytics_retention
        && let Err(error) = analytics::expire(db, now, retention).await
    {
        tracing::warn!(%error, "cannot delete expired usage analytics");
    }
    if let Err(error) = auth::delete_expired_sessions(db, now).await {
        tracing::warn!(%error, "cannot delete expired sessions");
    }
    if let Err(error) = keymanager::refresh_token::delete_dead_families(db, now).await {
        tracing::warn!(%error, "cannot delete expired refresh tokens");
    }
}
