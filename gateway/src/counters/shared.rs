//! Rate counters shared by a fleet, on Redis (the Traffic Manager's store). Every decision on
//! Redis is one server-side script on Redis's clock ([`WINDOW_SCRIPT`], the algorithm of
//! [`LocalCounters`] step for step). Hits come from policy calls, which are synchronous on the
//! gateway's workers, so a dedicated thread owns the connection and its runtime, and a hit
//! that must hear from Redis waits at most `timeout`.
//!
//! Two modes. `exact`: one script per hit, the same answers as local counters. `leased`: a
//! gateway takes units of a counter ahead ([`super::leases`]) and spends them without a round
//! trip, refilling in the background. When Redis does not answer in time, the hit is counted
//! by the gateway's own counters instead (fail-open), and each change between the two is
//! logged.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::leases::Leases;
use super::{CounterStore, HitResult, LocalCounters};

/// The sliding-window hit, as a Redis script.
const WINDOW_SCRIPT: &str = include_str!("window.lua");

/// What every counter key starts with in Redis.
const KEY_PREFIX: &str = "portico:rate:";

/// Requests waiting for the connection thread; more are counted locally at once.
const QUEUE: usize = 4096;

/// The largest limit Redis's script counts exactly (its numbers are doubles).
pub(super) const MAX_EXACT_LIMIT: u64 = 1 << 53;

/// How often the connection thread drops expired leases.
const LEASE_SWEEP: Duration = Duration::from_secs(10);

/// One script call: a hit, or a lease of `cost` units counted `shift_ms` ahead.
pub(super) struct Ask {
    pub(super) key: String,
    pub(super) limit: u64,
    pub(super) window_ms: u64,
    pub(super) cost: u64,
    /// A clock for tests; Redis's own when `None`.
    pub(super) now_ms: Option<u64>,
    pub(super) shift_ms: u64,
    /// Grant part of `cost` when not all of it fits.
    pub(super) partial: bool,
}

/// What Redis answered: the hit's result, and the units granted (`cost` when allowed).
pub(super) type Answer = Result<(HitResult, u64), String>;

/// Where an answer goes: a hit waiting for it, or the leases (a refill nobody waits for).
pub(super) enum Reply {
    Wait(std::sync::mpsc::SyncSender<Answer>),
    Refill { leases: Arc<Leases>, key: Box<str>, window_ms: u64, asked_at: Instant },
}

struct Pending {
    ask: Ask,
    reply: Reply,
}

/// The queue to the connection thread.
pub(super) struct Link {
    pending: tokio::sync::mpsc::Sender<Pending>,
    timeout: Duration,
}

impl Link {
    /// Ask and wait for the answer at most the link's timeout.
    pub(super) fn ask(&self, ask: Ask) -> Answer {
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        self.send(ask, Reply::Wait(answer))?;
        answered.recv_timeout(self.timeout).unwrap_or_else(|_| Err(format!("Redis did not answer within {:?}", self.timeout)))
    }

    /// Ask without waiting; the answer goes where `reply` says.
    pub(super) fn send(&self, ask: Ask, reply: Reply) -> Result<(), String> {
        self.pending.try_send(Pending { ask, reply }).map_err(|_| "too many requests waiting for Redis".to_owned())
    }
}

/// How a gateway counts on Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One round trip per hit.
    Exact,
    /// Units taken ahead and spent locally.
    #[default]
    Leased,
}

/// Counters in Redis, with the gateway's local counters as the fallback.
pub struct RedisCounters {
    link: Link,
    leases: Option<Arc<Leases>>,
    fallback: Arc<LocalCounters>,
    /// Whether the last decision was Redis's (so that only changes are logged).
    reachable: AtomicBool,
}

impl RedisCounters {
    /// Counters in the Redis at `url` (`redis://host:port/db`, `rediss://` for TLS), waiting
    /// at most `timeout` for Redis before counting in `fallback`. Connects in the background.
    pub fn connect(url: &str, timeout: Duration, mode: Mode, fallback: Arc<LocalCounters>) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("not a Redis URL: {e}"))?;
        let (pending, queue) = tokio::sync::mpsc::channel(QUEUE);
        let leases = (mode == Mode::Leased).then(|| Arc::new(Leases::new()));
        let swept = leases.clone();
        std::thread::Builder::new()
            .name("portico-redis".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(error) => return tracing::error!(%error, "cannot start the Redis connection's runtime; counting locally"),
                };
                runtime.block_on(serve(client, queue, timeout, swept));
            })
            .map_err(|e| format!("cannot start the Redis connection's thread: {e}"))?;
        Ok(Self { link: Link { pending, timeout }, leases, fallback, reachable: AtomicBool::new(true) })
    }

    /// One exact hit on a given clock instead of Redis's (for tests that compare with
    /// [`LocalCounters::hit_at`]); `Err` when Redis did not answer in time.
    pub fn hit_at(&self, key: &str, limit: u64, window_ms: u64, cost: u32, now_ms: u64) -> Result<HitResult, String> {
        self.link.ask(exact(key, limit, window_ms, cost, Some(now_ms))).map(|(hit, _)| HitResult { limit, ..hit })
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
        let decided = match &self.leases {
            None => self.link.ask(exact(key, limit, window_ms, cost, None)).map(|(hit, _)| HitResult { limit, ..hit }),
            Some(leases) => leases.hit(&self.link, key, limit, window_ms, cost),
        };
        match decided {
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

/// The Redis key of `key`'s counter of `window_ms`.
pub(super) fn redis_key(key: &str, window_ms: u64) -> String {
    format!("{KEY_PREFIX}{key}\0{window_ms}")
}

fn exact(key: &str, limit: u64, window_ms: u64, cost: u32, now_ms: Option<u64>) -> Ask {
    let window_ms = window_ms.max(1);
    Ask {
        key: redis_key(key, window_ms),
        limit: limit.min(MAX_EXACT_LIMIT),
        window_ms,
        cost: u64::from(cost),
        now_ms,
        shift_ms: 0,
        partial: false,
    }
}

/// The connection thread: runs each script as it comes, many at once on one multiplexed
/// connection that reconnects by itself; drops expired leases now and then.
async fn serve(client: redis::Client, mut queue: tokio::sync::mpsc::Receiver<Pending>, timeout: Duration, leases: Option<Arc<Leases>>) {
    let script = Arc::new(redis::Script::new(WINDOW_SCRIPT));
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout.max(Duration::from_millis(100))))
        .set_response_timeout(Some(timeout))
        .set_max_delay(Duration::from_secs(2))
        .set_number_of_retries(1);
    let mut connection = None;
    let mut sweep = tokio::time::interval(LEASE_SWEEP);
    loop {
        let pending = tokio::select! {
            pending = queue.recv() => match pending {
                Some(pending) => pending,
                None => return,
            },
            _ = sweep.tick() => {
                if let Some(leases) = &leases {
                    leases.sweep();
                }
                continue;
            }
        };
        if connection.is_none() {
            match redis::aio::ConnectionManager::new_with_config(client.clone(), config.clone()).await {
                Ok(made) => connection = Some(made),
                Err(error) => {
                    deliver(pending.reply, Err(format!("cannot connect: {error}")));
                    continue;
                }
            }
        }
        let (Some(connection), script) = (connection.clone(), script.clone()) else { continue };
        tokio::spawn(run(connection, script, pending));
    }
}

async fn run(mut connection: redis::aio::ConnectionManager, script: Arc<redis::Script>, pending: Pending) {
    let Pending { ask, reply } = pending;
    let now = ask.now_ms.map_or_else(String::new, |now| now.to_string());
    let result: redis::RedisResult<(u8, u64, u64, u64, u64)> = script
        .key(&ask.key)
        .arg(ask.limit)
        .arg(ask.window_ms)
        .arg(ask.cost)
        .arg(now)
        .arg(ask.shift_ms)
        .arg(if ask.partial { "1" } else { "0" })
        .invoke_async(&mut connection)
        .await;
    let answer = result
        .map(|(allowed, remaining, reset_ms, retry_after_ms, granted)| {
            (HitResult { allowed: allowed == 1, limit: ask.limit, remaining, reset_ms, retry_after_ms }, granted)
        })
        .map_err(|error| error.to_string());
    deliver(reply, answer);
}

fn deliver(reply: Reply, answer: Answer) {
    match reply {
        Reply::Wait(waiting) => {
            let _ = waiting.send(answer);
        }
        Reply::Refill { leases, key, window_ms, asked_at } => leases.refilled(&key, window_ms, asked_at, answer),
    }
}
