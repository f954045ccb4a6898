//! Rate counters behind the WIT `counters.hit` import: a sliding window per (key, window) that
//! never admits more than the limit in any interval of the window's length. [`LocalCounters`]
//! keeps them in process; [`RedisCounters`] shares them with a fleet.

mod leases;
mod link;
mod shared;

pub use crate::contract::counters::{CountersConfig, RedisConfig, SentinelConfig, SharedMode};
pub use leases::{lifetime as lease_lifetime, max_size as max_lease_size};
pub use shared::{RedisCounters, SharedStats};

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Instant;

/// The outcome of one hit (the WIT `hit-result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HitResult {
    /// Whether the hit fits under the limit (and was counted).
    pub allowed: bool,
    /// The limit this hit was counted against.
    pub limit: u64,
    /// How many more units fit in the window now.
    pub remaining: u64,
    /// Milliseconds until every unit counted in the window has left it.
    pub reset_ms: u64,
    /// When refused, milliseconds until a hit of the same cost could fit (never 0); 0 when allowed.
    pub retry_after_ms: u64,
}

/// Where rate counters live.
pub trait CounterStore: Send + Sync + 'static {
    /// Count `cost` units against `limit` units per sliding window of `window_ms` milliseconds
    /// for `key`, in one atomic step. A refused hit is not counted.
    fn hit(&self, key: &str, limit: u64, window_ms: u64, cost: u32) -> HitResult;

    /// [`Self::hit`], or `None` when a shared store cannot decide (instead of counting in
    /// this process alone). A store in this process always decides.
    fn try_hit(&self, key: &str, limit: u64, window_ms: u64, cost: u32) -> Option<HitResult> {
        Some(self.hit(key, limit, window_ms, cost))
    }
}

/// A store policies count in, with the configuration it was made from.
#[derive(Clone)]
pub(crate) struct Counting {
    pub config: CountersConfig,
    pub store: Arc<dyn CounterStore>,
    /// What `/metrics` shows of a shared store.
    pub stats: Option<Arc<SharedStats>>,
}

impl Counting {
    /// Counting in this process, in `local`.
    pub fn local(local: &Arc<LocalCounters>) -> Self {
        Self { config: CountersConfig::default(), store: local.clone(), stats: None }
    }
}

/// Sub-buckets per window. The window is judged on whole buckets, so it may refuse up to one
/// bucket's worth (1/`BUCKETS` of the window) early, but it never admits too much.
const BUCKETS: u64 = 20;
/// Ring slots: a window of `BUCKETS` buckets overlaps at most `BUCKETS + 1` of them.
const SLOTS: usize = BUCKETS as usize + 1;
/// Lock shards; a key always lands in the same one.
const SHARDS: usize = 32;

/// Milliseconds on a monotonic clock whose origin is the first call in this process; the clock
/// [`LocalCounters`] uses, and the one to give [`LocalCounters::sweep`].
pub fn now_ms() -> u64 {
    static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);
    ORIGIN.elapsed().as_millis() as u64
}

/// The counters of the keys that hash to one shard: per key, one per window length.
type Shard = Mutex<HashMap<Box<str>, Vec<Window>>>;

/// Counters kept in this process, sharded by key.
pub struct LocalCounters {
    shards: Box<[Shard]>,
    hasher: std::hash::RandomState,
}

impl Default for LocalCounters {
    fn default() -> Self {
        Self::new()
    }
}

impl CounterStore for LocalCounters {
    fn hit(&self, key: &str, limit: u64, window_ms: u64, cost: u32) -> HitResult {
        self.hit_at(key, limit, window_ms, cost, now_ms())
    }
}

impl LocalCounters {
    /// No counters yet.
    pub fn new() -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::default()).collect(), hasher: Default::default() }
    }

    /// [`CounterStore::hit`] at `now_ms` on the caller's clock, which must not go backwards
    /// for a given counter (an earlier time is taken as the latest one seen).
    pub fn hit_at(&self, key: &str, limit: u64, window_ms: u64, cost: u32, now_ms: u64) -> HitResult {
        // A poisoned lock only means another hit panicked; every update leaves the counts valid.
        let mut shard = self.shard(key).lock().unwrap_or_else(PoisonError::into_inner);
        let window_ms = window_ms.max(1);
        if let Some(windows) = shard.get_mut(key) {
            return hit_window(windows, limit, window_ms, u64::from(cost), now_ms);
        }
        let mut windows = Vec::with_capacity(1);
        let result = hit_window(&mut windows, limit, window_ms, u64::from(cost), now_ms);
        shard.insert(key.into(), windows);
        result
    }

    /// Drop the counters idle for so long that they count nothing any more; `now_ms` is on the
    /// clock of the hits ([`now_ms`] for [`CounterStore::hit`]). Returns how many were dropped.
    pub fn sweep(&self, now_ms: u64) -> usize {
        let mut dropped = 0;
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            shard.retain(|_, windows| {
                let before = windows.len();
                windows.retain(|window| !window.is_idle(now_ms));
                dropped += before - windows.len();
                !windows.is_empty()
            });
        }
        dropped
    }

    /// How many (key, window) counters are kept.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().unwrap_or_else(PoisonError::into_inner).values().map(Vec::len).sum::<usize>()).sum()
    }

    /// Whether no counter is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, key: &str) -> &Shard {
        &self.shards[self.hasher.hash_one(key) as usize % SHARDS]
    }
}

/// The count of one (key, window) pair: units per bucket of `bucket_ms`, in a ring.
///
/// Bucket `i` holds the units admitted in `[i * bucket_ms, (i + 1) * bucket_ms)`. A hit at `t`
/// is judged on every bucket that overlaps the window `(t - window_ms, t]`, the oldest one
/// whole. Every unit admitted in any interval of `window_ms` ending at an admitted hit lies in
/// those buckets, so the count in any such interval never exceeds the limit.
struct Window {
    window_ms: u64,
    bucket_ms: u64,
    /// Index of the newest bucket the ring holds.
    newest: u64,
    /// The latest time seen, so that the clock never goes back for this counter.
    last_ms: u64,
    counts: [u64; SLOTS],
}

impl Window {
    fn new(window_ms: u64, now_ms: u64) -> Self {
        let bucket_ms = window_ms.div_ceil(BUCKETS);
        Self { window_ms, bucket_ms, newest: now_ms / bucket_ms, last_ms: now_ms, counts: [0; SLOTS] }
    }

    fn hit(&mut self, limit: u64, cost: u64, now_ms: u64) -> HitResult {
        let now = now_ms.max(self.last_ms);
        self.last_ms = now;
        let current = now / self.bucket_ms;
        self.advance(current);
        let oldest = self.oldest_overlapping(now);
        let used: u64 = (oldest..=current).map(|i| self.counts[slot(i)]).sum();

        let allowed = used.saturating_add(cost) <= limit;
        let retry_after_ms = if allowed {
            0
        } else if cost > limit {
            self.window_ms
        } else {
            self.wait_until_fits(limit, cost, used, oldest, now)
        };
        let used = if allowed {
            self.counts[slot(current)] += cost;
            used + cost
        } else {
            used
        };
        let reset_ms =
            (oldest..=current).rev().find(|&i| self.counts[slot(i)] > 0).map_or(0, |i| self.leaves_window_at(i).saturating_sub(now));
        HitResult { allowed, limit, remaining: limit.saturating_sub(used), reset_ms, retry_after_ms }
    }

    /// Move the ring forward to bucket `current`, emptying the buckets it reuses.
    fn advance(&mut self, current: u64) {
        if current <= self.newest {
            return;
        }
        if current - self.newest >= SLOTS as u64 {
            self.counts = [0; SLOTS];
        } else {
            for i in self.newest + 1..=current {
                self.counts[slot(i)] = 0;
            }
        }
        self.newest = current;
    }

    /// The oldest bucket that overlaps `[now - window_ms + 1, now]`; at most `BUCKETS` before
    /// the current one, since `BUCKETS * bucket_ms >= window_ms`.
    fn oldest_overlapping(&self, now: u64) -> u64 {
        now.saturating_add(1).saturating_sub(self.window_ms) / self.bucket_ms
    }

    /// The first time at which bucket `i` no longer overlaps the window.
    fn leaves_window_at(&self, i: u64) -> u64 {
        (i + 1).saturating_mul(self.bucket_ms).saturating_add(self.window_ms - 1)
    }

    /// Milliseconds until enough of the oldest buckets have left the window for `cost` to fit,
    /// with no further hits; `cost <= limit`, so emptying every bucket is always enough.
    fn wait_until_fits(&self, limit: u64, cost: u64, mut used: u64, oldest: u64, now: u64) -> u64 {
        for i in oldest..=self.newest {
            used -= self.counts[slot(i)];
            if used + cost <= limit {
                // Bucket `i` overlaps the window now, so it leaves it at least 1ms from now.
                return self.leaves_window_at(i).saturating_sub(now).max(1);
            }
        }
        self.window_ms
    }

    /// Whether every bucket up to the last one hit has left the window, so the counter holds
    /// nothing.
    fn is_idle(&self, now_ms: u64) -> bool {
        now_ms >= self.leaves_window_at(self.newest)
    }
}

/// Hit the counter of `window_ms` among a key's counters, adding it when new.
fn hit_window(windows: &mut Vec<Window>, limit: u64, window_ms: u64, cost: u64, now_ms: u64) -> HitResult {
    let index = match windows.iter().position(|window| window.window_ms == window_ms) {
        Some(index) => index,
        None => {
            windows.push(Window::new(window_ms, now_ms));
            windows.len() - 1
        }
    };
    windows[index].hit(limit, cost, now_ms)
}

fn slot(bucket: u64) -> usize {
    (bucket % SLOTS as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzz::Rng;

    #[test]
    fn admits_exactly_the_limit_then_refuses() {
        let counters = LocalCounters::new();
        for i in 0..10 {
            let result = counters.hit_at("k", 10, 60_000, 1, 1_000);
            assert!(result.allowed, "hit {i}");
            assert_eq!(result.remaining, 9 - i);
            assert_eq!(result.retry_after_ms, 0);
            assert_eq!(result.limit, 10);
        }
        let refused = counters.hit_at("k", 10, 60_000, 1, 1_000);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert!(refused.retry_after_ms > 0);
    }

    #[test]
    fn refused_hits_are_not_counted() {
        let counters = LocalCounters::new();
        // Window 1000ms, buckets of 50ms.
        for _ in 0..5 {
            assert!(counters.hit_at("k", 5, 1_000, 1, 0).allowed);
        }
        for t in 1..1_049 {
            assert!(!counters.hit_at("k", 5, 1_000, 1, t).allowed, "t={t}");
        }
        // Bucket 0 has left the window: exactly the limit fits again, the refusals took nothing.
        for _ in 0..5 {
            assert!(counters.hit_at("k", 5, 1_000, 1, 1_049).allowed);
        }
        assert!(!counters.hit_at("k", 5, 1_000, 1, 1_049).allowed);
    }

    #[test]
    fn retry_after_is_the_exact_wait() {
        let counters = LocalCounters::new();
        for _ in 0..3 {
            counters.hit_at("k", 3, 1_000, 1, 0);
        }
        let refused = counters.hit_at("k", 3, 1_000, 1, 10);
        // Bucket [0, 50) overlaps every window ending before 50 + 999.
        assert_eq!(refused.retry_after_ms, 1_039);
        assert!(!counters.hit_at("k", 3, 1_000, 1, 10 + 1_038).allowed);
        assert!(counters.hit_at("k", 3, 1_000, 1, 10 + 1_039).allowed);
    }

    #[test]
    fn retry_after_waits_only_for_the_buckets_needed() {
        let counters = LocalCounters::new();
        counters.hit_at("k", 4, 1_000, 2, 0);
        counters.hit_at("k", 4, 1_000, 2, 500);
        // Two units must leave for a cost of 2: the bucket of t=0 leaves at 1049.
        let refused = counters.hit_at("k", 4, 1_000, 2, 600);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_ms, 449);
        // A cost of 3 also needs the bucket of t=500 ([500, 550)) gone, at 1549.
        let refused = counters.hit_at("k", 4, 1_000, 3, 600);
        assert_eq!(refused.retry_after_ms, 949);
        assert_eq!(refused.reset_ms, 949);
        assert!(counters.hit_at("k", 4, 1_000, 3, 1_549).allowed);
    }

    #[test]
    fn cost_above_the_limit_waits_a_whole_window() {
        let counters = LocalCounters::new();
        let refused = counters.hit_at("k", 10, 60_000, 11, 0);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_ms, 60_000);
        assert_eq!(refused.remaining, 10);
        let refused = counters.hit_at("zero", 0, 1_000, 1, 0);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_ms, 1_000);
    }

    #[test]
    fn cost_above_one_is_counted_whole() {
        let counters = LocalCounters::new();
        assert_eq!(counters.hit_at("k", 10, 1_000, 4, 0).remaining, 6);
        assert_eq!(counters.hit_at("k", 10, 1_000, 4, 1).remaining, 2);
        let refused = counters.hit_at("k", 10, 1_000, 3, 2);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 2);
        assert!(counters.hit_at("k", 10, 1_000, 2, 3).allowed);
        assert_eq!(counters.hit_at("k", 10, 1_000, 0, 4).remaining, 0);
    }

    #[test]
    fn admits_again_after_the_window() {
        let counters = LocalCounters::new();
        for _ in 0..3 {
            counters.hit_at("k", 3, 1_000, 1, 0);
        }
        let refused = counters.hit_at("k", 3, 1_000, 1, 999);
        assert!(!refused.allowed);
        assert_eq!(refused.reset_ms, 50);
        for _ in 0..3 {
            assert!(counters.hit_at("k", 3, 1_000, 1, 1_049).allowed);
        }
    }

    #[test]
    fn reset_is_when_the_newest_unit_leaves() {
        let counters = LocalCounters::new();
        let first = counters.hit_at("k", 10, 1_000, 1, 0);
        assert_eq!(first.reset_ms, 1_049);
        let second = counters.hit_at("k", 10, 1_000, 1, 320);
        // The bucket [300, 350) leaves at 1349.
        assert_eq!(second.reset_ms, 1_029);
    }

    #[test]
    fn windows_of_one_key_are_independent() {
        let counters = LocalCounters::new();
        assert!(counters.hit_at("k", 1, 1_000, 1, 0).allowed);
        assert!(counters.hit_at("k", 1, 60_000, 1, 0).allowed);
        assert!(!counters.hit_at("k", 1, 1_000, 1, 1).allowed);
        assert!(!counters.hit_at("k", 1, 60_000, 1, 1).allowed);
        assert!(counters.hit_at("other", 1, 1_000, 1, 1).allowed);
        assert!(counters.hit_at("k", 1, 1_000, 1, 1_049).allowed);
        assert!(!counters.hit_at("k", 1, 60_000, 1, 1_049).allowed);
        assert_eq!(counters.len(), 3);
    }

    #[test]
    fn many_keys() {
        let counters = LocalCounters::new();
        for round in 0..3 {
            for i in 0..10_000 {
                let result = counters.hit_at(&format!("key-{i}"), 2, 60_000, 1, round);
                assert_eq!(result.allowed, round < 2, "key-{i} round {round}");
            }
        }
        assert_eq!(counters.len(), 10_000);
    }

    #[test]
    fn sweep_drops_idle_counters() {
        let counters = LocalCounters::new();
        counters.hit_at("a", 1, 1_000, 1, 0);
        counters.hit_at("b", 1, 1_000, 1, 5_000);
        counters.hit_at("b", 1, 60_000, 1, 5_000);
        assert_eq!(counters.sweep(1_048), 0);
        // The bucket [0, 50) of `a` has left its window at 1049.
        assert_eq!(counters.sweep(1_049), 1);
        assert_eq!(counters.len(), 2);
        assert_eq!(counters.sweep(6_049), 1);
        assert_eq!(counters.sweep(70_000), 1);
        assert!(counters.is_empty());
        // A dropped counter starts afresh.
        assert!(counters.hit_at("a", 1, 1_000, 1, 70_000).allowed);
    }

    #[test]
    fn a_clock_going_back_counts_as_the_latest_time() {
        let counters = LocalCounters::new();
        counters.hit_at("k", 1, 1_000, 1, 5_000);
        let refused = counters.hit_at("k", 1, 1_000, 1, 4_000);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_ms, 1_049);
    }

    #[test]
    fn hit_uses_the_process_clock() {
        let counters = LocalCounters::new();
        assert!(counters.hit("k", 1, 60_000, 1).allowed);
        let refused = counters.hit("k", 1, 60_000, 1);
        assert!(!refused.allowed);
        assert!(refused.retry_after_ms > 0 && refused.retry_after_ms <= 63_000);
        let earlier = now_ms();
        assert!(now_ms() >= earlier);
    }

    /// The largest number of units admitted in any interval of `window_ms`, by brute force over
    /// the admitted hits (times in order).
    fn most_in_any_window(admitted: &[(u64, u64)], window_ms: u64) -> u64 {
        let mut most = 0;
        for (start, &(t0, _)) in admitted.iter().enumerate() {
            let units: u64 = admitted[start..].iter().take_while(|(t, _)| *t < t0 + window_ms).map(|(_, cost)| cost).sum();
            most = most.max(units);
        }
        most
    }

    #[test]
    fn never_more_than_the_limit_in_any_window() {
        let cases: [(u64, u64); 7] = [(10, 1_000), (7, 997), (100, 60_000), (3, 20), (5, 7), (1, 1), (50, 1_001)];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for (limit, window_ms) in cases {
            let counters = LocalCounters::new();
            let bucket_ms = window_ms.div_ceil(BUCKETS);
            let mut now = 0u64;
            let mut admitted = Vec::new();
            let mut refused = 0;
            for _ in 0..20_000 {
                now = match rng.below(10) {
                    0..=3 => now + rng.below(bucket_ms),
                    // Just before or at the next bucket edge.
                    4 | 5 => (now / bucket_ms + 1) * bucket_ms - rng.below(2),
                    // Just before or at the next window edge.
                    6 | 7 => (now / window_ms + 1) * window_ms - rng.below(2),
                    // A long pause.
                    8 => now + rng.below(2 * window_ms),
                    _ => now,
                }
                .max(now);
                // Sometimes a burst of hits in the same millisecond.
                let hits = if rng.below(4) == 0 { 1 + rng.below(2 * limit) } else { 1 };
                for _ in 0..hits {
                    let cost = 1 + rng.below(3);
                    let result = counters.hit_at("k", limit, window_ms, cost as u32, now);
                    if result.allowed {
                        admitted.push((now, cost));
                    } else {
                        refused += 1;
                        assert!(result.retry_after_ms > 0);
                    }
                }
            }
            assert!(admitted.len() > 1_000 && refused > 1_000, "vacuous case {limit}/{window_ms}ms");
            let most = most_in_any_window(&admitted, window_ms);
            assert!(most <= limit, "{most} units admitted in {window_ms}ms with a limit of {limit}");
        }
    }

    #[test]
    fn steady_load_gets_the_limit() {
        let counters = LocalCounters::new();
        let (limit, window_ms) = (100, 1_000);
        let mut admitted = Vec::new();
        for now in 0..20 * window_ms {
            if counters.hit_at("k", limit, window_ms, 1, now).allowed {
                admitted.push((now, 1));
            }
        }
        assert!(most_in_any_window(&admitted, window_ms) <= limit);
        // Judging whole buckets delays units within the window but does not lose them.
        assert!(admitted.len() as u64 >= 19 * limit, "only {} admitted", admitted.len());
    }
}
