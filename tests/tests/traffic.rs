//! The Traffic Manager's store: rate counters shared by a fleet on Redis, against a
//! `redis-server` of the test's own.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::StatusCode;
use portico_gateway::contract::units;
use portico_gateway::counters::{CounterStore, LocalCounters, RedisConfig, RedisCounters, SharedMode};
use portico_tests::{ALLOW_LOOPBACK_UPSTREAMS, HttpClient, MockUpstream, PorticoProcess, RedisServer};

/// Settings for the Redis at `url`.
fn settings(url: String, timeout: Duration, mode: SharedMode, fleet_size: u64) -> RedisConfig {
    RedisConfig { url: Some(url), sentinel: None, timeout: units::Duration(timeout), mode, fleet_size }
}

/// A small deterministic generator (xorshift), so that a failure replays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}

/// The largest number of units admitted in any interval of `window_ms` (times in order).
fn most_in_any_window(admitted: &[(u64, u64)], window_ms: u64) -> u64 {
    let mut most = 0;
    for (start, &(t0, _)) in admitted.iter().enumerate() {
        let units: u64 = admitted[start..].iter().take_while(|(t, _)| *t < t0 + window_ms).map(|(_, cost)| cost).sum();
        most = most.max(units);
    }
    most
}

/// A read of a counter (what the control plane shows a subscriber) counts nothing, makes no
/// key for a counter nothing was counted on, and sees what hits counted, in both modes (on
/// leases: the units leased, spent or not).
#[test]
fn a_read_counts_nothing_and_sees_what_was_counted() {
    let redis = RedisServer::start();
    for mode in [SharedMode::Exact, SharedMode::Leased] {
        redis.command(&["FLUSHDB"]);
        let config = settings(redis.url(), Duration::from_secs(5), mode, 1);
        let gateway = RedisCounters::connect(&config, Arc::new(LocalCounters::new())).unwrap();
        let reader = RedisCounters::connect(&config, Arc::new(LocalCounters::new())).unwrap();
        let fresh = reader.peek("subscription", 32, 60_000).unwrap();
        assert_eq!((fresh.allowed, fresh.remaining, fresh.reset_ms), (true, 32, 0), "{mode:?}");
        assert_eq!(redis.command(&["DBSIZE"]).as_deref(), Some(":0"), "{mode:?}: a read made a key");
        for _ in 0..3 {
            assert!(gateway.hit("subscription", 32, 60_000, 1).allowed);
        }
        // Let a refill asked in the background land.
        std::thread::sleep(Duration::from_millis(200));
        let read = reader.peek("subscription", 32, 60_000).unwrap();
        // On leases (of two units at most here), what the gateway took ahead counts too: up
        // to three units, when the refill asked at half a lease lands while that half is held
        // (whether it landed before the third hit depends on how fast Redis answered).
        let least = if mode == SharedMode::Exact { 29 } else { 26 };
        assert!((least..=29).contains(&read.remaining), "{mode:?}: {read:?}");
        // The window, a bucket of it, and on leases a lease's lifetime (3 s) counted twice.
        assert!(read.reset_ms > 0 && read.reset_ms <= 70_000, "{mode:?}: {read:?}");
        assert_eq!(reader.peek("subscription", 32, 60_000).unwrap().remaining, read.remaining, "{mode:?}: reads count nothing");
    }
}

/// The single-node semantics suite against Redis: the same hits at the same times (bursts,
/// bucket and window edges, long pauses, costs above one) get exactly the answers the local
/// counters give, so moving a fleet to shared counters changes no policy; and never more than
/// the limit in any window.
#[test]
fn redis_counters_answer_exactly_as_local_counters() {
    let redis = RedisServer::start();
    let fallback = Arc::new(LocalCounters::new());
    let shared = RedisCounters::connect(&settings(redis.url(), Duration::from_secs(5), SharedMode::Exact, 1), fallback.clone()).unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut hits = 0;
    for (case, (limit, window_ms)) in [(10u64, 1_000u64), (7, 997), (100, 60_000), (3, 20), (1, 1), (50, 1_001)].into_iter().enumerate() {
        let local = LocalCounters::new();
        let key = format!("case-{case}");
        let bucket_ms = window_ms.div_ceil(20);
        let (mut now, mut admitted) = (1_700_000_000_000u64, Vec::new());
        for _ in 0..800 {
            now = match rng.below(10) {
                0..=3 => now + rng.below(bucket_ms),
                4 | 5 => (now / bucket_ms + 1) * bucket_ms - rng.below(2),
                6 | 7 => (now / window_ms + 1) * window_ms - rng.below(2),
                8 => now + rng.below(2 * window_ms),
                _ => now,
            }
            .max(now);
            let burst = if rng.below(4) == 0 { 1 + rng.below(2 * limit) } else { 1 };
            for _ in 0..burst {
                let cost = 1 + rng.below(3) as u32;
                let expected = local.hit_at(&key, limit, window_ms, cost, now);
                let got = shared.hit_at(&key, limit, window_ms, cost, now).expect("Redis answers");
                assert_eq!(got, expected, "{key} ({limit} per {window_ms} ms), hit {hits} at {now} costing {cost}");
                if got.allowed {
                    admitted.push((now, u64::from(cost)));
                }
                hits += 1;
            }
        }
        assert!(most_in_any_window(&admitted, window_ms) <= limit, "{key}");
    }
    // A second window length on a key already counted is its own counter, as locally.
    let (local, now) = (LocalCounters::new(), 1_800_000_000_000);
    for window_ms in [1_000, 60_000, 1_000] {
        assert_eq!(shared.hit_at("two-windows", 5, window_ms, 3, now).unwrap(), local.hit_at("two-windows", 5, window_ms, 3, now));
    }
    assert!(fallback.is_empty(), "every hit was answered by Redis");
    println!("{hits} hits answered by Redis exactly as by the local counters");
}

/// On Redis's own clock (the way a gateway counts), a limit holds across hits; with Redis
/// gone, a hit is counted locally within the timeout instead of failing, and counting returns
/// to Redis when it is back.
#[test]
fn without_redis_hits_are_counted_locally_until_it_returns() {
    let redis = RedisServer::start();
    let fallback = Arc::new(LocalCounters::new());
    let shared =
        RedisCounters::connect(&settings(redis.url(), Duration::from_millis(200), SharedMode::Exact, 3), fallback.clone()).unwrap();
    let admitted = (0..8).filter(|_| shared.hit("clock", 5, 60_000, 1).allowed).count();
    assert_eq!(admitted, 5, "the limit holds on Redis's clock");
    assert!(fallback.is_empty());

    let port = redis.port;
    drop(redis);
    let started = std::time::Instant::now();
    let during = shared.hit("clock", 5, 60_000, 1);
    assert!(during.allowed, "counted locally, where this key has no count yet");
    assert!(!fallback.is_empty(), "the hit went to the local counters");
    println!("a hit without Redis answered locally after {:?}", started.elapsed());
    // Alone, a gateway of a fleet of three admits its third of a limit of 6.
    let alone = (0..6).filter(|_| shared.hit("alone", 6, 60_000, 1).allowed).count();
    assert_eq!(alone, 2, "a third of the limit");
    let stats = shared.stats();
    assert!(!stats.reachable.load(Ordering::Relaxed));
    assert_eq!(stats.changes.load(Ordering::Relaxed), 1, "one change so far");
    assert_eq!(stats.local_hits.load(Ordering::Relaxed), 7);

    // The same port again, empty: counting is back on Redis.
    let _again = RedisServer::start_on(port);
    let started = std::time::Instant::now();
    while shared.hit_at("back", 1, 60_000, 1, 1_000).is_err() {
        assert!(started.elapsed() < Duration::from_secs(10), "counting not back on Redis within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("counting on Redis again after {:?}", started.elapsed());
    assert!(!shared.hit_at("back", 1, 60_000, 1, 1_001).unwrap().allowed, "the first hit was counted on Redis");
    // Hits go back to Redis once the second after the last failure has passed.
    while !stats.reachable.load(Ordering::Relaxed) {
        assert!(started.elapsed() < Duration::from_secs(10), "hits not back on Redis within 10 s");
        shared.hit("clock", 5, 60_000, 1);
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("hits back on Redis after {:?}", started.elapsed());
    assert_eq!(stats.changes.load(Ordering::Relaxed), 2, "and back");
}

/// Behind Redis Sentinel (a master, its replica and a Sentinel, each a real `redis-server`):
/// two gateways' counters find the master through the Sentinel and share a limit; when the
/// master dies, the Sentinel promotes the replica and both count on it, where the count they
/// had kept goes on.
#[test]
fn behind_sentinel_counting_follows_a_failover() {
    let mut master = RedisServer::start();
    let _replica = RedisServer::replica_of(&master);
    let sentinel = RedisServer::sentinel_for(&master, "portico");
    let config = RedisConfig {
        url: None,
        sentinel: Some(portico_gateway::counters::SentinelConfig {
            nodes: vec![sentinel.url()],
            master: "portico".to_owned(),
            db: 0,
            password: None,
        }),
        timeout: units::Duration(Duration::from_millis(500)),
        mode: SharedMode::Exact,
        fleet_size: 2,
    };
    let fallback = Arc::new(LocalCounters::new());
    let gateways = [RedisCounters::connect(&config, fallback.clone()).unwrap(), RedisCounters::connect(&config, fallback.clone()).unwrap()];
    let now = 1_700_000_000_000;
    for i in 0..4 {
        let hit = gateways[i % 2].hit_at("shared", 5, 60_000, 1, now).expect("the master, found through the Sentinel, answers");
        assert!(hit.allowed && hit.remaining == 4 - i as u64, "hit {i}: {hit:?}");
    }
    let synced = std::time::Instant::now();
    while master.command(&["WAIT", "1", "300"]).as_deref() != Some(":1") {
        assert!(synced.elapsed() < Duration::from_secs(20), "the replica did not get the count within 20 s");
    }

    master.kill();
    let started = std::time::Instant::now();
    // A gateway finds the new master at its first call after one fails.
    let hit_on_redis = |gateway: &RedisCounters| loop {
        match gateway.hit_at("shared", 5, 60_000, 1, now) {
            Ok(hit) => break hit,
            Err(error) => {
                assert!(started.elapsed() < Duration::from_secs(30), "no failover within 30 s: {error}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    let fifth = hit_on_redis(&gateways[0]);
    println!("counting on the promoted replica {:?} after the master died", started.elapsed());
    assert!(fifth.allowed && fifth.remaining == 0, "the count went on from 4: {fifth:?}");
    let sixth = hit_on_redis(&gateways[1]);
    assert!(!sixth.allowed, "one limit for both, on the new master: {sixth:?}");
    assert!(fallback.is_empty(), "every hit was decided on Redis");
}

/// Two gateway processes counting on one Redis share one limit: requests spread over both
/// are admitted up to the limit in total, not per gateway (pattern 1's "2·L" is gone); and a
/// calendar day's count (in Kolkata, UTC+05:30) outlives a gateway's restart, is known to a
/// gateway started later, and is refused until midnight there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_redis_share_one_limit() {
    let redis = RedisServer::start();
    let upstream = MockUpstream::start().await;
    let config = format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin: {{address: 127.0.0.1:0}}\ncounters:\n  redis: {{url: \"{}\", timeout: 1s, mode: exact}}\n{ALLOW_LOOPBACK_UPSTREAMS}apis:\n  \
         - name: shared\n    context: /shared\n    upstream:\n      endpoints: [\"{}/base\"]\n    policies:\n      \
         - policy: throttle\n        config: {{key_by: api, limits: [{{requests: 10, per: day}}], time_zone: Asia/Kolkata}}\n",
        redis.url(),
        upstream.url()
    );
    let mut gateways = [PorticoProcess::start(&config).unwrap(), PorticoProcess::start(&config).unwrap()];
    let client = HttpClient::default();
    let mut admitted = [0; 2];
    for i in 0..30 {
        let reply = client.get(&gateways[i % 2].url("/shared/x"), &[]).await.unwrap();
        match reply.status {
            StatusCode::OK => admitted[i % 2] += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("request {i}: {other} {}", reply.text()),
        }
    }
    assert_eq!(admitted[0] + admitted[1], 10, "one limit for both gateways: {admitted:?}");
    assert!(admitted.iter().all(|&n| n > 0), "both gateways admitted some: {admitted:?}");
    let metrics = client.get(&format!("http://{}/metrics", gateways[1].admin.unwrap()), &[]).await.unwrap().text();
    assert!(metrics.contains("portico_shared_counters_up 1\n"), "{metrics}");
    println!("30 requests over two gateways sharing a limit of 10: {admitted:?} admitted");

    // A restarted gateway, and a new one, find the day's count where it was.
    gateways[0] = PorticoProcess::start(&config).unwrap();
    let late = PorticoProcess::start(&config).unwrap();
    for gateway in [&gateways[0], &late] {
        let reply = client.get(&gateway.url("/shared/x"), &[]).await.unwrap();
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "the day's count is kept: {}", reply.text());
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let offset = 5 * 3600 + 1800;
        let midnight_in_kolkata = (now + offset).div_ceil(86_400) * 86_400 - offset;
        let retry_after: u64 = reply.header("retry-after").unwrap().parse().unwrap();
        assert!(
            retry_after.abs_diff(midnight_in_kolkata - now) <= 2,
            "retry after {retry_after} s, midnight in {} s",
            midnight_in_kolkata - now
        );
    }
}

/// Three gateways (`fleet_size: 3`) counting on leases in the Redis at `url`, each hitting one
/// key at the whole of `limit` per window (three times it in all) for `run_for` while this
/// thread runs `meanwhile`: the times (ms from the start) of the hits admitted, in order.
fn three_gateways_at_three_times(
    url: &str,
    timeout: Duration,
    limit: u64,
    window_ms: u64,
    run_for: Duration,
    meanwhile: impl FnOnce(),
) -> Vec<(u64, u64)> {
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        let gateways: Vec<_> = (0..3)
            .map(|_| {
                let config = settings(url.to_owned(), timeout, SharedMode::Leased, 3);
                scope.spawn(move || {
                    let counters = RedisCounters::connect(&config, Arc::new(LocalCounters::new())).unwrap();
                    let mut admitted = Vec::new();
                    let pause = Duration::from_millis(window_ms / limit);
                    while started.elapsed() < run_for {
                        if counters.hit("shared", limit, window_ms, 1).allowed {
                            admitted.push((started.elapsed().as_millis() as u64, 1));
                        }
                        std::thread::sleep(pause);
                    }
                    admitted
                })
            })
            .collect();
        meanwhile();
        let mut all: Vec<(u64, u64)> = gateways.into_iter().flat_map(|gateway| gateway.join().unwrap()).collect();
        all.sort();
        all
    })
}

/// Three gateways counting on leases (units taken ahead, spent without a round trip), offered
/// three times the limit: never more than the limit in any window across the three, and most
/// of it admitted.
#[test]
fn three_gateways_on_leases_never_admit_more_than_the_limit() {
    let redis = RedisServer::start();
    let (limit, window_ms) = (200u64, 2_000u64);
    let run_for = Duration::from_secs(6);
    let admitted = three_gateways_at_three_times(&redis.url(), Duration::from_secs(1), limit, window_ms, run_for, || {});
    let most = most_in_any_window(&admitted, window_ms);
    let windows = run_for.as_millis() as u64 / window_ms;
    println!(
        "3 gateways on leases, offered 3 × {limit} per {window_ms} ms: at most {most} in any window ({:.1} % of the limit), {} admitted in {windows} windows",
        100.0 * most as f64 / limit as f64,
        admitted.len()
    );
    assert!(most <= limit, "{most} admitted in a window of {window_ms} ms with a limit of {limit}");
    assert!(admitted.len() as u64 >= windows * limit * 3 / 4, "only {} admitted in {windows} windows", admitted.len());
}

/// Three gateways on leases at their shared limit lose Redis at once: each goes on counting
/// alone, against its share less its share of what Redis had admitted, so no window, the one
/// across the loss included, admits much more than the limit (without the hand-over, each
/// gateway's fresh counter admitted its share again on top: twice the limit, measured), and
/// once what Redis admitted has left the window the gateways admit their shares.
#[test]
fn three_gateways_that_lose_redis_at_once_stay_within_the_limit() {
    let redis = RedisServer::start();
    let (limit, window_ms) = (300u64, 2_000u64);
    let (kill_at, run_for) = (Duration::from_millis(3_500), Duration::from_millis(8_000));
    let url = redis.url();
    let admitted = three_gateways_at_three_times(&url, Duration::from_millis(50), limit, window_ms, run_for, || {
        std::thread::sleep(kill_at);
        drop(redis);
    });
    let most = most_in_any_window(&admitted, window_ms);
    let kill_ms = kill_at.as_millis() as u64;
    let last_window = admitted.iter().filter(|&&(at, _)| at + window_ms >= run_for.as_millis() as u64).count() as u64;
    println!(
        "3 gateways at a limit of {limit} per {window_ms} ms losing Redis at {kill_ms} ms: at most {most} in any window \
         ({:.1} % of the limit); {last_window} admitted in the last window, counting alone",
        100.0 * most as f64 / limit as f64
    );
    assert!(most <= limit + limit / 20, "{most} admitted in a window of {window_ms} ms with a limit of {limit}");
    assert!(last_window >= limit / 2, "only {last_window} admitted in the last window, each gateway counting its share");
}

/// Redis killed under a gateway: a throttle that counts locally goes on admitting (within the
/// gateway's share), one told to refuse answers 429 with a problem saying why, none answers
/// 5xx; when Redis is back both count on it again by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_gone_each_throttle_fails_open_or_closed_as_configured() {
    let redis = RedisServer::start();
    let upstream = MockUpstream::start().await;
    let api = |name: &str, extra: &str| {
        format!(
            "  - name: {name}\n    context: /{name}\n    upstream:\n      endpoints: [\"{}/base\"]\n    policies:\n      \
             - policy: throttle\n        config: {{key_by: api, limits: [{{requests: 1000, per: 1s}}]{extra}}}\n",
            upstream.url()
        )
    };
    let config = format!(
        "listeners:\n  - address: 127.0.0.1:0\ncounters:\n  redis: {{url: \"{}\", timeout: 50ms, fleet_size: 2}}\n{ALLOW_LOOPBACK_UPSTREAMS}apis:\n{}{}",
        redis.url(),
        api("open", ""),
        api("closed", ", on_store_unavailable: refuse")
    );
    let gateway = PorticoProcess::start(&config).unwrap();
    let client = HttpClient::default();
    for name in ["open", "closed"] {
        assert_eq!(client.get(&gateway.url(&format!("/{name}/x")), &[]).await.unwrap().status, StatusCode::OK, "{name}");
    }

    // Units leased are the gateway's to spend while Redis is away: let them expire (a lease
    // of a 1 s window lives 50 ms), so that every hit of the fail-closed API needs Redis.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let port = redis.port;
    drop(redis);
    let mut statuses = std::collections::BTreeMap::<(&str, u16), usize>::new();
    for _ in 0..20 {
        for name in ["open", "closed"] {
            let reply = client.get(&gateway.url(&format!("/{name}/x")), &[]).await.unwrap();
            *statuses.entry((name, reply.status.as_u16())).or_default() += 1;
            if name == "closed" && reply.status == StatusCode::TOO_MANY_REQUESTS {
                assert!(reply.text().contains("The rate-limit store is unavailable"), "{}", reply.text());
                assert_eq!(reply.header("retry-after"), Some("1"));
            }
        }
    }
    println!("with Redis gone: {statuses:?}");
    assert_eq!(statuses.get(&("open", 200)), Some(&20), "{statuses:?}");
    assert_eq!(statuses.get(&("closed", 429)), Some(&20), "{statuses:?}");
    assert!(gateway.wait_for_log("shared rate counters unreachable", Duration::from_secs(5)));

    let _back = RedisServer::start_on(port);
    let took = portico_tests::eventually("the closed API admitting again", Duration::from_secs(10), async || {
        client.get(&gateway.url("/closed/x"), &[]).await.unwrap().status == StatusCode::OK
    })
    .await;
    println!("the fail-closed API admits again {took:?} after Redis is back");
    assert!(gateway.wait_for_log("shared rate counters reachable again", Duration::from_secs(5)));
}

/// A burst limit and a day's quota on the same tier, per operation, on Redis, end to end:
/// the burst refuses first, each operation has its own counters, and once the burst window
/// has passed the quota refuses, each 429 naming the limit that was used up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_and_quota_per_operation_on_shared_counters() {
    let redis = RedisServer::start();
    let upstream = MockUpstream::start().await;
    let config = format!(
        "listeners:\n  - address: 127.0.0.1:0\ncounters:\n  redis: {{url: \"{}\"}}\n{ALLOW_LOOPBACK_UPSTREAMS}apis:\n  \
         - name: ops\n    context: /ops\n    upstream:\n      endpoints: [\"{}/base\"]\n    operations:\n      \
         - {{method: GET, path: /a}}\n      - {{method: GET, path: /b}}\n    policies:\n      \
         - policy: throttle\n        config: {{key_by: ip, scope: operation, limits: [{{requests: 3, per: 2s}}, {{requests: 5, per: 1d}}]}}\n",
        redis.url(),
        upstream.url()
    );
    let gateway = PorticoProcess::start(&config).unwrap();
    let client = HttpClient::default();
    let call = async |path: &str| client.get(&gateway.url(path), &[]).await.unwrap();
    for i in 0..3 {
        assert_eq!(call("/ops/a").await.status, StatusCode::OK, "burst {i}");
    }
    let burst = call("/ops/a").await;
    assert_eq!(burst.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(burst.text().contains("3 requests per 2s"), "{}", burst.text());
    for i in 0..3 {
        assert_eq!(call("/ops/b").await.status, StatusCode::OK, "another operation, its own counters ({i})");
    }
    // The burst window passes; the day's quota (5) is what refuses next.
    tokio::time::sleep(Duration::from_millis(2_600)).await;
    for i in 0..2 {
        assert_eq!(call("/ops/a").await.status, StatusCode::OK, "after the burst window ({i})");
    }
    let quota = call("/ops/a").await;
    assert_eq!(quota.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(quota.text().contains("5 requests per 1d"), "{}", quota.text());
}
