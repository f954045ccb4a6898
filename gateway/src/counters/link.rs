//! The connection to the Redis holding shared counters: a dedicated thread owns it and its
//! runtime (hits come from policy calls, synchronous on the gateway's workers), runs each
//! script call as it comes, many at once on one multiplexed connection that reconnects by
//! itself, and hands each answer to whoever waits for it, at most the link's timeout. Behind
//! Sentinels, a failed call makes the thread ask them for the master again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::HitResult;

/// The sliding-window hit, as a Redis script: the algorithm of [`super::LocalCounters`] step
/// for step, on Redis's clock.
const WINDOW_SCRIPT: &str = include_str!("window.lua");

/// What every counter key starts with in Redis.
const KEY_PREFIX: &str = "portico:rate:";

/// Requests waiting for the connection thread; more are refused at once.
const QUEUE: usize = 4096;

/// The largest limit Redis's script counts exactly (its numbers are doubles).
pub(super) const MAX_EXACT_LIMIT: u64 = 1 << 53;

/// The longest window counted on Redis (about 35 years), so that its times stay exact.
pub(super) const MAX_WINDOW_MS: u64 = 1 << 40;

/// How often the connection thread runs its `tick` (dropping expired leases).
const TICK: Duration = Duration::from_secs(10);

/// Where the counters' Redis is.
pub(super) enum Source {
    /// One server.
    Server(redis::Client),
    /// The master the Sentinels name.
    Sentinel(Box<redis::sentinel::SentinelClient>),
}

impl Source {
    async fn client(&mut self) -> redis::RedisResult<redis::Client> {
        match self {
            Source::Server(client) => Ok(client.clone()),
            Source::Sentinel(sentinels) => sentinels.async_get_client().await,
        }
    }
}

/// One script call: a hit, or a lease of `cost` units counted `shift_ms` ahead.
pub(super) struct Ask {
    pub(super) key: String,
    pub(super) limit: u64,
    pub(super) window_ms: u64,
    pub(super) cost: u64,
    /// A clock for tests; Redis's own when `None`.
    pub(super) now_ms: Option<u64>,
    pub(super) shift_ms: u64,
    /// The least part of `cost` to grant when not all of it fits (0: all or nothing).
    pub(super) least: u64,
}

/// What Redis answered: the hit's result, and the units granted (`cost` when allowed).
pub(super) type Answer = Result<(HitResult, u64), String>;

/// What is done with an answer nobody waits for.
pub(super) type Then = Box<dyn FnOnce(Answer) + Send>;

/// Where an answer goes.
enum Reply {
    Wait(std::sync::mpsc::SyncSender<Answer>),
    Then(Then),
}

struct Pending {
    ask: Ask,
    reply: Reply,
}

/// The queue to the connection thread.
pub(super) struct Link {
    pending: tokio::sync::mpsc::Sender<Pending>,
    timeout: Duration,
    /// Whether the thread has made a connection yet.
    connected: Arc<AtomicBool>,
}

impl Link {
    /// Start the connection thread for `source`; it runs `tick` every [`TICK`].
    pub(super) fn start(source: Source, timeout: Duration, tick: Option<Box<dyn Fn() + Send>>) -> Result<Self, String> {
        let (pending, queue) = tokio::sync::mpsc::channel(QUEUE);
        let connected = Arc::new(AtomicBool::new(false));
        let made = connected.clone();
        std::thread::Builder::new()
            .name("portico-redis".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(error) => return tracing::error!(%error, "cannot start the Redis connection's runtime; counting locally"),
                };
                runtime.block_on(serve(source, queue, timeout, tick, made));
            })
            .map_err(|e| format!("cannot start the Redis connection's thread: {e}"))?;
        Ok(Self { pending, timeout, connected })
    }

    /// Wait until the thread has connected, at most `limit`; whether it has.
    pub(super) fn wait_connected(&self, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while !self.connected.load(Ordering::Relaxed) {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Ask and wait for the answer at most the link's timeout.
    pub(super) fn ask(&self, ask: Ask) -> Answer {
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        self.queue(Pending { ask, reply: Reply::Wait(answer) })?;
        answered.recv_timeout(self.timeout).unwrap_or_else(|_| Err(format!("Redis did not answer within {:?}", self.timeout)))
    }

    /// Ask without waiting; `then` gets the answer. `Err` (and `then` never runs) when too
    /// many requests wait already.
    pub(super) fn send(&self, ask: Ask, then: Then) -> Result<(), String> {
        self.queue(Pending { ask, reply: Reply::Then(then) })
    }

    fn queue(&self, pending: Pending) -> Result<(), String> {
        self.pending.try_send(pending).map_err(|error| match error {
            tokio::sync::mpsc::error::TrySendError::Full(_) => "too many requests waiting for Redis".to_owned(),
            tokio::sync::mpsc::error::TrySendError::Closed(_) => "the Redis connection's thread has stopped".to_owned(),
        })
    }
}

/// The Redis key of `key`'s counter of `window_ms`.
pub(super) fn redis_key(key: &str, window_ms: u64) -> String {
    format!("{KEY_PREFIX}{key}\0{window_ms}")
}

async fn serve(
    mut source: Source,
    mut queue: tokio::sync::mpsc::Receiver<Pending>,
    timeout: Duration,
    tick: Option<Box<dyn Fn() + Send>>,
    connected: Arc<AtomicBool>,
) {
    let script = Arc::new(redis::Script::new(WINDOW_SCRIPT));
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout.max(Duration::from_millis(100))))
        .set_response_timeout(Some(timeout))
        .set_max_delay(Duration::from_secs(2))
        .set_number_of_retries(1);
    // Connected at once, so that the first hits do not wait for it.
    let mut connection = connect(&mut source, &config).await.ok();
    connected.store(connection.is_some(), Ordering::Relaxed);
    // Set by a failed call: behind Sentinels, the master may have changed.
    let failed = Arc::new(AtomicBool::new(false));
    let mut ticks = tokio::time::interval(TICK);
    loop {
        let pending = tokio::select! {
            pending = queue.recv() => match pending {
                Some(pending) => pending,
                None => return,
            },
            _ = ticks.tick() => {
                if let Some(tick) = &tick {
                    tick();
                }
                continue;
            }
        };
        if failed.swap(false, Ordering::Relaxed) && matches!(source, Source::Sentinel(_)) {
            connection = None;
        }
        if connection.is_none() {
            match connect(&mut source, &config).await {
                Ok(made) => {
                    connection = Some(made);
                    connected.store(true, Ordering::Relaxed);
                }
                Err(error) => {
                    deliver(pending.reply, Err(format!("cannot connect: {error}")));
                    continue;
                }
            }
        }
        let (Some(connection), script) = (connection.clone(), script.clone()) else { continue };
        tokio::spawn(run(connection, script, pending, failed.clone()));
    }
}

async fn connect(source: &mut Source, config: &redis::aio::ConnectionManagerConfig) -> redis::RedisResult<redis::aio::ConnectionManager> {
    redis::aio::ConnectionManager::new_with_config(source.client().await?, config.clone()).await
}

async fn run(mut connection: redis::aio::ConnectionManager, script: Arc<redis::Script>, pending: Pending, failed: Arc<AtomicBool>) {
    let Pending { ask, reply } = pending;
    let now = ask.now_ms.map_or_else(String::new, |now| now.to_string());
    let result: redis::RedisResult<(u8, u64, u64, u64, u64)> = script
        .key(&ask.key)
        .arg(ask.limit)
        .arg(ask.window_ms)
        .arg(ask.cost)
        .arg(now)
        .arg(ask.shift_ms)
        .arg(ask.least)
        .invoke_async(&mut connection)
        .await;
    let answer = result
        .map(|(allowed, remaining, reset_ms, retry_after_ms, granted)| {
            (HitResult { allowed: allowed == 1, limit: ask.limit, remaining, reset_ms, retry_after_ms }, granted)
        })
        .map_err(|error| {
            failed.store(true, Ordering::Relaxed);
            error.to_string()
        });
    deliver(reply, answer);
}

fn deliver(reply: Reply, answer: Answer) {
    match reply {
        Reply::Wait(waiting) => {
            let _ = waiting.send(answer);
        }
        Reply::Then(then) => then(answer),
    }
}
