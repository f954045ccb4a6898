//! Usage analytics (WSO2's API usage statistics): the records thread tallies every routed
//! request by minute, API, operation, application and status class, with a latency
//! histogram ([`Usage`]); [`report`] sends the tallies to the control plane at an interval.
//! Reports the control plane did not take are kept and sent again (it applies each once),
//! up to a bound in rows: past it, new rows are dropped and their requests counted, and
//! the count travels with the next report.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::contract::fleet::{LATENCY_BOUNDS_MS, MAX_USAGE_ROWS, UsageReport, UsageRow};
use crate::exchange::RouteInfo;

const BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// What is tallied and not yet taken by [`report`].
#[derive(Debug, Default)]
pub struct Usage {
    tallies: Mutex<Tallies>,
    /// Requests not tallied (their record found the queue full) since the last take.
    dropped: AtomicU64,
}

impl Usage {
    /// The tallies, locked (by the records thread while it drains the queue, and by
    /// [`report`] when it takes them).
    pub fn tallies(&self) -> MutexGuard<'_, Tallies> {
        self.tallies.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Count `requests` that could not be tallied.
    pub fn count_dropped(&self, requests: u64) {
        self.dropped.fetch_add(requests, Ordering::Relaxed);
    }

    /// The requests that could not be tallied since the last take.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }
}

/// Requests by what they are tallied under.
#[derive(Debug, Default)]
pub struct Tallies(TallyMap);

/// Tallies by key, hashed by [`KeyHasher`].
pub type TallyMap = HashMap<Key, Tally, BuildHasherDefault<KeyHasher>>;

/// The tallies' hash: FxHash's rotate, xor and multiply a word, where SipHash took half of
/// what tallying a request costs. Its keys are routes the operator made and applications
/// the control plane named, not text a client chooses.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.add(u64::from_le_bytes(word.try_into().unwrap_or_default()));
        }
        let mut last = [0u8; 8];
        last[..words.remainder().len()].copy_from_slice(words.remainder());
        self.add(u64::from_le_bytes(last));
    }

    fn write_u8(&mut self, value: u8) {
        self.add(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        self.add(value);
    }

    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl KeyHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// What requests are tallied under.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Key {
    minute: u64,
    route: Arc<RouteInfo>,
    application: Option<String>,
    class: u8,
}

/// Requests under one key.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// How many.
    pub requests: u64,
    latency_us: u64,
    latency: [u64; BUCKETS],
}

impl Tally {
    fn merge(&mut self, other: &Tally) {
        self.requests += other.requests;
        self.latency_us += other.latency_us;
        for (bucket, more) in self.latency.iter_mut().zip(other.latency) {
            *bucket += more;
        }
    }
}

impl Tallies {
    /// Tally a request of `application` answered `status` at `at` (since the Unix epoch)
    /// after `duration`.
    pub fn add(&mut self, at: Duration, route: &Arc<RouteInfo>, application: Option<String>, status: u16, duration: Duration) {
        let minute = at.as_secs() / 60 * 60;
        let class = (status / 100).clamp(1, 5) as u8;
        let key = Key { minute, route: route.clone(), application, class };
        let tally = self.0.entry(key).or_default();
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        tally.requests += 1;
        tally.latency_us = tally.latency_us.saturating_add(micros);
        let bucket = LATENCY_BOUNDS_MS.iter().position(|&bound| micros <= bound * 1000).unwrap_or(LATENCY_BOUNDS_MS.len());
        tally.latency[bucket] += 1;
    }

    /// Everything tallied, leaving nothing but room for as many keys: the next interval
    /// mostly tallies the same ones, and growing the map again key by key (rehashing it at
    /// each doubling) is what a busy gateway with many applications would pay.
    pub fn take(&mut self) -> TallyMap {
        let room = TallyMap::with_capacity_and_hasher(self.0.len(), Default::default());
        std::mem::replace(&mut self.0, room)
    }
}

/// Where reports go: the control plane over the fleet link, or the one in this process.
#[async_trait::async_trait]
pub trait UsageSink: Send + Sync {
    /// Deliver a report; `Err` says why it was not taken (it is sent again later).
    async fn deliver(&self, report: &UsageReport) -> Result<(), String>;
}

/// Reports not yet taken by the control plane, oldest first.
struct Unsent {
    batches: VecDeque<Batch>,
    rows: usize,
    max_rows: usize,
    prefix: String,
    sequence: u64,
    /// Requests dropped that no batch carries yet.
    dropped: u64,
}

struct Batch {
    id: String,
    tallies: TallyMap,
    dropped: u64,
    /// Once sent, a batch is never changed: the control plane may have applied it.
    sent: bool,
}

impl Batch {
    fn report(&self) -> UsageReport {
        let rows = self
            .tallies
            .iter()
            .map(|(key, tally)| UsageRow {
                minute: key.minute,
                api: key.route.api_name.clone(),
                version: key.route.api_version.clone(),
                operation: key.route.operation.clone(),
                application: key.application.clone(),
                class: key.class,
                requests: tally.requests,
                latency_us: tally.latency_us,
                latency: tally.latency.to_vec(),
            })
            .collect();
        UsageReport { batch: self.id.clone(), rows, dropped: self.dropped }
    }
}

impl Unsent {
    fn new(gateway_id: &str, max_rows: usize) -> Self {
        let started = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis());
        Self { batches: VecDeque::new(), rows: 0, max_rows, prefix: format!("{gateway_id}-{started}"), sequence: 0, dropped: 0 }
    }

    /// Add what was tallied (and dropped) since the last call: merged into the newest
    /// batch while it was never sent, else into new batches; rows past the bound are
    /// dropped and their requests counted.
    fn add(&mut self, tallies: TallyMap, dropped: u64) {
        self.dropped += dropped;
        for (key, tally) in tallies {
            if let Some(batch) = self.batches.back_mut().filter(|batch| !batch.sent)
                && let Some(kept) = batch.tallies.get_mut(&key)
            {
                kept.merge(&tally);
                continue;
            }
            if self.rows >= self.max_rows {
                self.dropped += tally.requests;
                continue;
            }
            if self.batches.back().is_none_or(|batch| batch.sent || batch.tallies.len() >= MAX_USAGE_ROWS) {
                self.sequence += 1;
                let id = format!("{}-{}", self.prefix, self.sequence);
                self.batches.push_back(Batch { id, tallies: TallyMap::default(), dropped: 0, sent: false });
            }
            if let Some(batch) = self.batches.back_mut() {
                batch.tallies.insert(key, tally);
                self.rows += 1;
            }
        }
        if self.dropped > 0 {
            if self.batches.back().is_none_or(|batch| batch.sent) {
                self.sequence += 1;
                let id = format!("{}-{}", self.prefix, self.sequence);
                self.batches.push_back(Batch { id, tallies: TallyMap::default(), dropped: 0, sent: false });
            }
            if let Some(batch) = self.batches.back_mut() {
                batch.dropped += std::mem::take(&mut self.dropped);
            }
        }
    }

    /// Send the batches in order until one is not taken.
    async fn send(&mut self, sink: &dyn UsageSink) -> Result<(), String> {
        while let Some(batch) = self.batches.front_mut() {
            batch.sent = true;
            sink.deliver(&batch.report()).await?;
            self.rows -= batch.tallies.len();
            self.batches.pop_front();
        }
        Ok(())
    }
}

/// Takes what is tallied and sends it, now and then and once more at shutdown.
pub struct Reporter {
    usage: Arc<Usage>,
    sink: Box<dyn UsageSink>,
    /// The reports not yet taken, and whether the last attempt failed.
    unsent: tokio::sync::Mutex<(Unsent, bool)>,
}

impl Reporter {
    /// A reporter to `sink` for the gateway `gateway_id`, keeping up to `max_rows` rows
    /// the control plane did not take.
    pub fn new(sink: Box<dyn UsageSink>, gateway_id: &str, max_rows: usize) -> Self {
        Self { usage: Arc::default(), sink, unsent: tokio::sync::Mutex::new((Unsent::new(gateway_id, max_rows), false)) }
    }

    /// What the records thread tallies into.
    pub fn usage(&self) -> &Arc<Usage> {
        &self.usage
    }

    /// Every `every`, [`Self::flush`]; as long as the process runs.
    pub async fn run(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            self.flush().await;
        }
    }

    /// Take what was tallied and send everything not yet taken.
    pub async fn flush(&self) {
        let mut guard = self.unsent.lock().await;
        let (unsent, failing) = &mut *guard;
        let tallies = self.usage.tallies().take();
        unsent.add(tallies, self.usage.take_dropped());
        match unsent.send(self.sink.as_ref()).await {
            Ok(()) if *failing => {
                tracing::info!("usage analytics reach the control plane again");
                *failing = false;
            }
            Ok(()) => {}
            Err(error) if !*failing => {
                tracing::warn!(%error, rows = unsent.rows, "usage analytics not taken; kept to send again");
                *failing = true;
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(operation: &str) -> Arc<RouteInfo> {
        Arc::new(RouteInfo::new("pets".into(), "v1".into(), operation.into()))
    }

    /// Takes what it is told to, and remembers it.
    #[derive(Default)]
    struct Sink {
        taking: std::sync::atomic::AtomicBool,
        taken: Mutex<Vec<UsageReport>>,
    }

    #[async_trait::async_trait]
    impl UsageSink for Sink {
        async fn deliver(&self, report: &UsageReport) -> Result<(), String> {
            if !self.taking.load(Ordering::Relaxed) {
                return Err("down".into());
            }
            self.taken.lock().unwrap().push(report.clone());
            Ok(())
        }
    }

    #[test]
    fn requests_are_tallied_by_minute_route_application_and_class() {
        let usage = Usage::default();
        let at = Duration::from_secs(600 + 59);
        let (list, get) = (route("GET /pets"), route("GET /pets/{id}"));
        let mut tallies = usage.tallies();
        tallies.add(at, &list, Some("app-1".into()), 200, Duration::from_micros(900));
        tallies.add(at, &list, Some("app-1".into()), 204, Duration::from_millis(7));
        tallies.add(at, &list, Some("app-1".into()), 404, Duration::from_millis(7));
        tallies.add(at + Duration::from_secs(1), &list, Some("app-1".into()), 200, Duration::from_secs(60));
        tallies.add(at, &get, None, 401, Duration::ZERO);
        let taken = tallies.take();
        assert_eq!(taken.len(), 4);
        let ok = &taken[&Key { minute: 600, route: list.clone(), application: Some("app-1".into()), class: 2 }];
        assert_eq!((ok.requests, ok.latency_us), (2, 7_900));
        assert_eq!(ok.latency[..3], [1, 0, 1]);
        let next_minute = &taken[&Key { minute: 660, route: list, application: Some("app-1".into()), class: 2 }];
        assert_eq!(next_minute.latency[BUCKETS - 1], 1, "slower than the largest bound");
        assert!(tallies.take().is_empty());
    }

    #[tokio::test]
    async fn reports_not_taken_are_kept_merged_bounded_and_their_drops_counted() {
        let sink = Sink::default();
        let mut unsent = Unsent::new("gw", 2);
        let tally = |requests| Tally { requests, ..Tally::default() };
        let key = |operation: &str| Key { minute: 60, route: route(operation), application: None, class: 2 };
        unsent.add(TallyMap::from_iter([(key("GET /a"), tally(3))]), 0);
        assert!(unsent.send(&sink).await.is_err());
        // The first batch was sent (it may have been applied), so it is left as it was.
        unsent.add(TallyMap::from_iter([(key("GET /a"), tally(4))]), 0);
        assert!(unsent.send(&sink).await.is_err());
        // Past the bound of two rows, a third is dropped; what merges into a kept row is not.
        unsent.add(TallyMap::from_iter([(key("GET /a"), tally(5)), (key("GET /b"), tally(6))]), 1);
        assert_eq!((unsent.batches.len(), unsent.rows), (2, 2));
        sink.taking.store(true, Ordering::Relaxed);
        unsent.send(&sink).await.unwrap();
        let taken = sink.taken.lock().unwrap().clone();
        assert_eq!(taken.len(), 2);
        assert_ne!(taken[0].batch, taken[1].batch);
        assert_eq!((taken[0].rows[0].requests, taken[0].dropped), (3, 0));
        assert_eq!((taken[1].rows[0].requests, taken[1].rows[0].operation.as_str(), taken[1].dropped), (9, "GET /a", 7));
        assert_eq!((unsent.rows, unsent.batches.len()), (0, 0));
        // Drops alone are reported too.
        unsent.add(TallyMap::default(), 2);
        unsent.send(&sink).await.unwrap();
        let last = sink.taken.lock().unwrap().last().cloned().unwrap();
        assert_eq!((last.rows.len(), last.dropped), (0, 2));
    }
}
