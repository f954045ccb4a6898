//! The one way to write something gateways must see: a [`Change`] is a database
//! transaction whose commit announces the change, to this node's event hub and (through
//! [`super::notify`]) to the other nodes'. Dropped without a commit, it is rolled back and
//! announces nothing. Handlers never announce by hand, so a write cannot reach the
//! database and miss the gateways.

use std::ops::{Deref, DerefMut};

use portico_gateway::traces::SpanParent;
use sqlx::{Any, AnyConnection, Transaction};

use crate::AppState;
use crate::error::ApiResult;

/// A transaction of a change gateways must see.
pub struct Change<'a> {
    state: &'a AppState,
    tx: Transaction<'static, Any>,
    /// The W3C trace context of the request making it, when that request is traced.
    traceparent: Option<String>,
}

impl<'a> Change<'a> {
    /// Begin a change.
    pub async fn begin(state: &'a AppState) -> ApiResult<Self> {
        Ok(Self { state, tx: state.db.pool.begin().await?, traceparent: None })
    }

    /// This change is made by a request traced as `trace`: the snapshots it makes carry its
    /// context to the gateways, which record applying them in the same trace.
    pub fn traced(mut self, trace: Option<&SpanParent>) -> Self {
        self.traceparent = trace.and_then(SpanParent::traceparent);
        self
    }

    /// Commit, then tell the gateways (what they serve may have changed).
    pub async fn commit(self) -> ApiResult<()> {
        self.tx.commit().await?;
        self.state.hub.set_change_trace(self.traceparent);
        announce(self.state);
        Ok(())
    }
}

impl Deref for Change<'_> {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl DerefMut for Change<'_> {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

/// Wake this node's snapshot builders, and tell the other nodes.
fn announce(state: &AppState) {
    state.changes.send_modify(|version| *version += 1);
    state.outbox.send_modify(|version| *version += 1);
}
