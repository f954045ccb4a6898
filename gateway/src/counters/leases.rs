//! Leases: units of a shared counter that a gateway takes from Redis ahead of its hits and
//! spends without a round trip, refilling in the background before they run out.
//!
//! Why a fleet on leases never admits more than L in any window: a lease of n units of
//! (key, W) granted at Redis time t may be spent until t + δ ([`lifetime`]), and Redis counts
//! it as n units hit at t + δ against a window of W + δ (the script's shift). Take any window
//! of length W and the last lease granted (at t) whose units are spent in it; every other
//! lease whose units are spent in it was granted before t and ends after the window starts,
//! which is after t − W: so it ends in (t − W, t + δ], which is what Redis summed when it
//! granted the last one. The units spent in the window are at most L. The gateway stops
//! spending a lease δ after it *asked* for it, before Redis's t + δ, whatever the clocks say.
//!
//! What leases cost is admissions, never excess: units leased and not spent before they
//! expire (the leases a gateway holds of a key, [`max_size`] each: one is asked for at a
//! time, when half of the last is left or the units held are about to expire), and a
//! window judged W + δ long.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::link::{Answer, Ask, Link, MAX_EXACT_LIMIT, MAX_WINDOW_MS, redis_key};
use super::{HitResult, now_ms};

/// Lock shards; a key always lands in the same one.
const SHARDS: usize = 32;

/// How long a lease keeps Redis's last word on its key for [`Leases::hand_over`] once it
/// holds no units: long enough for the keys at their limit, short enough that a client
/// cycling keys does not make a gateway keep them.
const HAND_OVER_MS: u64 = 60_000;

/// How long a lease of a window of `window_ms` may be spent: 1/20 of the window (one of its
/// buckets), between 10 ms and 1 min. The window is judged this much longer. A lease is
/// sized to what the key's rate spends in half of it (all of it far from the limit), so the
/// longer it lives, the fewer round trips a key of a low rate costs: many callers each calling
/// now and then (S7: 10,000 keys under an hourly limit) got a round trip per hit from 5 s
/// leases.
pub fn lifetime(window_ms: u64) -> Duration {
    Duration::from_millis((window_ms / 20).clamp(10, 60_000))
}

/// The units of a key's first lease (at most [`max_size`]): two, so that its second hit
/// does not wait for a lease too, while the next is sized on the rate.
const FIRST_LEASE: u64 = 2;

/// The most units one lease of a limit of `limit` takes: 1/16 of it, at least one.
pub fn max_size(limit: u64) -> u64 {
    (limit / 16).max(1)
}

/// The leases of the keys that hash to one shard: per key, one per window length.
type Shard = Mutex<HashMap<Box<str>, Vec<Lease>>>;

/// The leases of one gateway, by key and window.
pub(super) struct Leases {
    shards: Box<[Shard]>,
    hasher: std::hash::RandomState,
}

/// The units held of one (key, window).
struct Lease {
    window_ms: u64,
    /// Units, and until when they may be spent, the earliest first.
    grants: Vec<(u64, Instant)>,
    /// Units spent since the last lease was asked for, and when: the next lease is what this
    /// rate spends in a lease's lifetime, so that little of it expires unspent.
    spent: u64,
    asked_at: Option<Instant>,
    /// A refill is on its way.
    refilling: bool,
    /// The units of the last lease granted: the next is asked for when half of that is
    /// left, so that it arrives before the hits run out (a hit that finds none waits).
    last_granted: u64,
    /// What Redis said last, less what was spent since: for the answers given from leases.
    remaining: u64,
    reset_ms: u64,
    /// When Redis said it ([`now_ms`]), until [`Leases::hand_over`] takes it.
    answered_ms: Option<u64>,
}

impl Lease {
    fn new(window_ms: u64) -> Self {
        Self {
            window_ms,
            grants: Vec::with_capacity(2),
            spent: 0,
            asked_at: None,
            refilling: false,
            last_granted: 0,
            remaining: 0,
            reset_ms: 0,
            answered_ms: None,
        }
    }

    fn available(&mut self, now: Instant) -> u64 {
        self.grants.retain(|&(units, until)| units > 0 && until > now);
        self.grants.iter().map(|&(units, _)| units).sum()
    }

    fn spend(&mut self, mut cost: u64) {
        self.spent += cost;
        self.remaining = self.remaining.saturating_sub(cost);
        for (units, _) in &mut self.grants {
            let taken = cost.min(*units);
            *units -= taken;
            cost -= taken;
        }
    }

    fn grant(&mut self, units: u64, until: Instant, hit: &HitResult) {
        self.last_granted = units;
        if units > 0 {
            self.grants.push((units, until));
            self.grants.sort_by_key(|&(_, until)| until);
        }
        self.remaining = hit.remaining;
        self.reset_ms = hit.reset_ms;
        self.answered_ms = Some(now_ms());
    }

    /// Whether Redis's last word on this lease is recent enough to hand over: within the
    /// window, and at most [`HAND_OVER_MS`] old.
    fn heard_since(&self, now_ms: u64) -> bool {
        self.answered_ms.is_some_and(|at| now_ms.saturating_sub(at) < self.window_ms.min(HAND_OVER_MS))
    }

    /// How many units to ask for next (at least `cost`): what the rate since the last ask
    /// spends in half of `life` (measured over at least 1/60 of it, so that a burst right after an
    /// ask is not taken for a rate), or [`FIRST_LEASE`] for a key not seen before; and start
    /// measuring afresh. While Redis said last that at least half of the limit is left, in the
    /// whole of `life`: units that expire unspent then cost no one an admission, and a key of a
    /// low rate asks half as often (near the limit, whole-life leases stranded units: 0.92 of
    /// the limit admitted).
    fn next_size(&mut self, cost: u64, limit: u64, life: Duration, now: Instant) -> u64 {
        let expected = match self.asked_at {
            Some(asked) => {
                let elapsed = now.duration_since(asked).as_micros().max(life.as_micros() / 60).max(1);
                let part = if self.remaining >= limit / 2 { 1 } else { 2 };
                u64::try_from(u128::from(self.spent) * life.as_micros() / part / elapsed).unwrap_or(u64::MAX)
            }
            None => FIRST_LEASE,
        };
        self.spent = 0;
        self.asked_at = Some(now);
        expected.clamp(1, max_size(limit)).max(cost)
    }

    /// Whether the next lease is due: half of the last one is left, or the newest units
    /// held expire within a quarter of `life` (a key of a low rate would otherwise find its
    /// lease expired, and wait for the next) unless Redis granted nothing last time (at its
    /// limit, it is asked again only once the units are spent).
    fn due(&self, now: Instant, life: Duration) -> bool {
        let held: u64 = self.grants.iter().map(|&(units, _)| units).sum();
        let expiring = self.grants.last().is_none_or(|&(_, until)| until.saturating_duration_since(now) < life / 4);
        !self.refilling && (held * 2 <= self.last_granted.max(1) || (expiring && self.last_granted > 0))
    }

    fn allowed(&self, limit: u64) -> HitResult {
        HitResult { allowed: true, limit, remaining: self.remaining, reset_ms: self.reset_ms, retry_after_ms: 0 }
    }
}

impl Leases {
    pub(super) fn new() -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::default()).collect(), hasher: Default::default() }
    }

    /// A hit: spent from the leases held when they cover it (asking for more in the
    /// background when they run low), else after asking Redis for a lease, waiting.
    pub(super) fn hit(
        self: &std::sync::Arc<Self>,
        link: &Link,
        key: &str,
        limit: u64,
        window_ms: u64,
        cost: u32,
    ) -> Result<HitResult, String> {
        let (window_ms, cost) = (window_ms.max(1), u64::from(cost));
        let life = lifetime(window_ms);
        let now = Instant::now();
        // Spent from the units held, asking for the next lease when the last one goes; or
        // the size of the lease to wait for.
        let spent = self.with_lease(key, window_ms, |lease| {
            if lease.available(now) < cost {
                return Err(lease.next_size(cost, limit, life, now));
            }
            lease.spend(cost);
            let refill = (cost > 0 && lease.due(now, life)).then(|| {
                lease.refilling = true;
                lease.next_size(1, limit, life, now)
            });
            Ok((lease.allowed(limit), refill))
        });
        match spent {
            Ok((answer, None)) => Ok(answer),
            Ok((answer, Some(size))) => {
                let (leases, owned) = (self.clone(), Box::<str>::from(key));
                let then = Box::new(move |answer| leases.refilled(&owned, window_ms, now, answer));
                if link.send(lease_ask(key, limit, window_ms, size, 1, life), then).is_err() {
                    self.refilled(key, window_ms, now, Err("queue full".to_owned()));
                }
                Ok(answer)
            }
            Err(size) => {
                let (hit, granted) = link.ask(lease_ask(key, limit, window_ms, size, cost, life))?;
                Ok(self.with_lease(key, window_ms, |lease| {
                    lease.grant(granted, now + life, &hit);
                    if lease.available(Instant::now()) >= cost {
                        lease.spend(cost);
                        return lease.allowed(limit);
                    }
                    HitResult {
                        allowed: false,
                        limit,
                        remaining: hit.remaining,
                        reset_ms: hit.reset_ms,
                        retry_after_ms: hit.retry_after_ms.max(1),
                    }
                }))
            }
        }
    }

    /// The answer to a refill asked for at `asked_at`.
    pub(super) fn refilled(&self, key: &str, window_ms: u64, asked_at: Instant, answer: Answer) {
        self.with_lease(key, window_ms, |lease| {
            lease.refilling = false;
            if let Ok((hit, granted)) = answer {
                lease.grant(granted, asked_at + lifetime(window_ms), &hit);
            }
        });
    }

    /// What the fleet had taken of (key, window) by Redis's last answer to this gateway, if
    /// that answer is recent; each answer is handed over once. A gateway that starts
    /// counting alone charges its own counter with its share of it, so that a fleet that
    /// loses Redis at once does not admit L again on top of what Redis admitted.
    pub(super) fn hand_over(&self, key: &str, limit: u64, window_ms: u64) -> u64 {
        let window_ms = window_ms.max(1);
        let mut shard = self.shard(key);
        let Some(lease) = shard.get_mut(key).and_then(|leases| leases.iter_mut().find(|lease| lease.window_ms == window_ms)) else {
            return 0;
        };
        if !lease.heard_since(now_ms()) {
            return 0;
        }
        lease.answered_ms = None;
        limit.min(MAX_EXACT_LIMIT).saturating_sub(lease.remaining)
    }

    /// `change` the lease of (key, window), made when there is none, under its shard's lock.
    fn with_lease<T>(&self, key: &str, window_ms: u64, change: impl FnOnce(&mut Lease) -> T) -> T {
        let mut shard = self.shard(key);
        if let Some(leases) = shard.get_mut(key) {
            return change(lease_in(leases, window_ms));
        }
        let mut leases = Vec::with_capacity(1);
        let changed = change(lease_in(&mut leases, window_ms));
        shard.insert(key.into(), leases);
        changed
    }

    /// The locked shard `key` lands in.
    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Vec<Lease>>> {
        self.shards[self.hasher.hash_one(key) as usize % SHARDS].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drop the leases that hold nothing any more, nor anything to hand over.
    pub(super) fn sweep(&self) {
        let (now, at) = (Instant::now(), now_ms());
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            shard.retain(|_, leases| {
                leases.retain_mut(|lease| lease.refilling || lease.available(now) > 0 || lease.heard_since(at));
                !leases.is_empty()
            });
        }
    }
}

/// The lease of `window_ms` among a key's leases, added when new.
fn lease_in(leases: &mut Vec<Lease>, window_ms: u64) -> &mut Lease {
    let at = match leases.iter().position(|lease| lease.window_ms == window_ms) {
        Some(at) => at,
        None => {
            leases.push(Lease::new(window_ms));
            leases.len() - 1
        }
    };
    &mut leases[at]
}

/// A lease of `size` units of (key, window) (at least `least` of them), counted `life` ahead
/// on a window `life` longer.
fn lease_ask(key: &str, limit: u64, window_ms: u64, size: u64, least: u64, life: Duration) -> Ask {
    let shift_ms = life.as_millis() as u64;
    let window_ms = window_ms.min(MAX_WINDOW_MS);
    Ask {
        key: format!("{}\0lease", redis_key(key, window_ms)),
        limit: limit.min(MAX_EXACT_LIMIT),
        window_ms: window_ms + shift_ms,
        cost: size,
        now_ms: None,
        shift_ms,
        least: if size == 0 { 0 } else { least.clamp(1, size) },
    }
}

/// What the fleet's leases of (key, window) have taken in the window, asked without taking
/// any: a lease of nothing, whose reset is counted from now rather than from the lease's end.
pub(super) fn peek(link: &Link, key: &str, limit: u64, window_ms: u64) -> Answer {
    let life = lifetime(window_ms);
    let shift_ms = life.as_millis() as u64;
    // Nothing counted resets at once; else its reset is counted from the lease's end.
    let from_now = |reset_ms: u64| if reset_ms == 0 { 0 } else { reset_ms + shift_ms };
    link.ask(lease_ask(key, limit, window_ms, 0, 0, life))
        .map(|(hit, granted)| (HitResult { reset_ms: from_now(hit.reset_ms), ..hit }, granted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn granted(lease: &mut Lease, units: u64, remaining: u64, now: Instant, life: Duration) {
        let hit = HitResult { allowed: true, limit: 0, remaining, reset_ms: 0, retry_after_ms: 0 };
        lease.grant(units, now + life, &hit);
    }

    #[test]
    fn a_lease_covers_the_whole_life_far_from_the_limit_and_half_of_it_near() {
        let (limit, life) = (1_600_000, Duration::from_secs(60));
        let start = Instant::now();
        let mut lease = Lease::new(3_600_000);
        assert_eq!(lease.next_size(1, limit, life, start), FIRST_LEASE);

        // 30 units spent in 30 s: a rate of one a second.
        granted(&mut lease, 40, limit - 40, start, life);
        lease.spend(30);
        let later = start + Duration::from_secs(30);
        assert_eq!(lease.next_size(1, limit, life, later), 60, "far from the limit: the whole life");

        granted(&mut lease, 60, limit / 2 - 1, later, life);
        lease.spend(30);
        let near = later + Duration::from_secs(30);
        assert_eq!(lease.next_size(1, limit, life, near), 30, "under half the limit left: half the life");
        lease.spend(100);
        assert_eq!(lease.next_size(1, 32, life, near + Duration::from_secs(1)), max_size(32), "no more than 1/16 of the limit");
    }
}
