//! Rate counters shared by a fleet, on Redis (the Traffic Manager's store): each hit is one
//! server-side script on Redis's clock ([`WINDOW_SCRIPT`], the algorithm of
//! [`LocalCounters`] step for step). Hits come from policy calls, which are synchronous on
//! the gateway's workers, so a dedicated thread owns the connection and its runtime and a hit
//! waits for its answer at most `timeout`. When Redis does not answer in time the hit is
//! counted by the gateway's own counters instead (fail-open), and each change between the two
//! is logged.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{CounterStore, HitResult, LocalCounters};

/// The sliding-window hit, as a Redis script.
const WINDOW_SCRIPT: &str = include_str!("window.lua");

/// What every counter key starts with in Redis.
const KEY_PREFIX: &str = "portico:rate:";

/// Hits waiting for the connection thread; more are counted locally at once.
const QUEUE: usize = 4096;

/// The largest limit Redis's script counts exactly (its numbers are doubles).
const MAX_EXACT_LIMIT: u64 = 1 << 53;

/// One hit for the connection thread, and where its answer goes.
struct Pending {
    key: String,
    limit: u64,
    window_ms: u64,
    cost: u32,
    /// A clock for tests; Redis's own when `None`.
    now_ms: Option<u64>,
    answer: std::sync::mpsc::SyncSender<Result<HitResult, String>>,
}

/// Counters in Redis, with the gateway's local counters as the fallback.
pub struct RedisCounters {
    pending: tokio::sync::mpsc::Sender<Pending>,
    fallback: Arc<LocalCounters>,
    timeout: Duration,
    /// Whether the last hit was answered by Redis (so that only changes are logged).
    reachable: AtomicBool,
}

impl RedisCounters {
    /// Counters in the Redis at `url` (`redis://host:port/db`, `rediss://` for TLS), waiting
    /// at most `timeout` for each hit before counting it in `fallback`. Connects in the
    /// background: the first hits are local until Redis answers.
    pub fn connect(url: &str, timeout: Duration, fallback: Arc<LocalCounters>) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("not a Redis URL: {e}"))?;
        let (pending, queue) = tokio::sync::mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("portico-redis".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(error) => return tracing::error!(%error, "cannot start the Redis connection's runtime; counting locally"),
                };
                runtime.block_on(serve(client, queue, timeout));
            })
            .map_err(|e| format!("cannot start the Redis connection's thread: {e}"))?;
        Ok(Self { pending, fallback, timeout, reachable: AtomicBool::new(true) })
    }

    /// [`CounterStore::hit`] on a given clock instead of Redis's (for tests that compare with
    /// [`LocalCounters::hit_at`]); `Err` when Redis did not answer in time.
    pub fn hit_at(&self, key: &str, limit: u64, window_ms: u64, cost: u32, now_ms: u64) -> Result<HitResult, String> {
        self.ask(key, limit, window_ms, cost, Some(now_ms))
    }

    fn ask(&self, key: &str, limit: u64, window_ms: u64, cost: u32, now_ms: Option<u64>) -> Result<HitResult, String> {
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        let key = format!("{KEY_PREFIX}{key}\0{}", window_ms.max(1));
        let pending = Pending { key, limit: limit.min(MAX_EXACT_LIMIT), window_ms: window_ms.max(1), cost, now_ms, answer };
        self.pending.try_send(pending).map_err(|_| "too many hits waiting for Redis".to_owned())?;
        match answered.recv_timeout(self.timeout) {
            Ok(result) => result.map(|hit| HitResult { limit, ..hit }),
            Err(_) => Err(format!("Redis did not answer within {:?}", self.timeout)),
        }
    }

    fn note(&self, reachable: bool, why: Option<&str>) {
        if self.reachable.swap(reachable, Ordering::Relaxed) != reachable {
            match why {
                Some(why) => tracing::warn!(error = why, "shared rate counters unreachable; counting locally until Redis answers"),
                None => tracing::info!("shared rate counters reachable again; counting on Redis"),
            }
        }
    }
}

impl CounterStore for RedisCounters {
    fn hit(&self, key: &str, limit: u64, window_ms: u64, cost: u32) -> HitResult {
        match self.ask(key, limit, window_ms, cost, None) {
            Ok(hit) => {
                self.note(true, None);
                hit
            }
            Err(why) => {
                self.note(false, Some(&why));
                self.fallback.hit(key, limit, window_ms, cost)
            }
        }
    }
}

/// The connection thread: runs each hit's script as it comes, many at once on one
/// multiplexed connection that reconnects by itself.
async fn serve(client: redis::Client, mut queue: tokio::sync::mpsc::Receiver<Pending>, timeout: Duration) {
    let script = Arc::new(redis::Script::new(WINDOW_SCRIPT));
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout.max(Duration::from_millis(100))))
        .set_response_timeout(Some(timeout))
        .set_max_delay(Duration::from_secs(2))
        .set_number_of_retries(1);
    let mut connection = None;
    while let Some(pending) = queue.recv().await {
        if connection.is_none() {
            match redis::aio::ConnectionManager::new_with_config(client.clone(), config.clone()).await {
                Ok(made) => connection = Some(made),
                Err(error) => {
                    let _ = pending.answer.send(Err(format!("cannot connect: {error}")));
                    continue;
                }
            }
        }
        let (Some(connection), script) = (connection.clone(), script.clone()) else { continue };
        tokio::spawn(run(connection, script, pending));
    }
}

async fn run(mut connection: redis::aio::ConnectionManager, script: Arc<redis::Script>, pending: Pending) {
    let now = pending.now_ms.map_or_else(String::new, |now| now.to_string());
    let result: redis::RedisResult<(u8, u64, u64, u64)> =
        script.key(&pending.key).arg(pending.limit).arg(pending.window_ms).arg(pending.cost).arg(now).invoke_async(&mut connection).await;
    let hit = result
        .map(|(allowed, remaining, reset_ms, retry_after_ms)| HitResult {
            allowed: allowed == 1,
            limit: pending.limit,
            remaining,
            reset_ms,
            retry_after_ms,
        })
        .map_err(|error| error.to_string());
    let _ = pending.answer.send(hit);
}
