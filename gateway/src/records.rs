//! What each request leaves behind, handled off the request thread: its access-log line
//! ([`access_log`]) and its usage tally ([`crate::analytics`]). A request only puts its
//! [`Record`] in a bounded queue; a thread of its own empties it. When that thread cannot
//! keep up, records that do not fit are dropped and counted, so that a slow disk never
//! slows requests down.

pub mod access_log;

use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_queue::ArrayQueue;
use prometheus_client::metrics::counter::Counter;

use crate::analytics::Usage;
use crate::exchange::RouteInfo;

/// How long the thread sleeps when it finds the queue empty.
const IDLE_WAIT: Duration = Duration::from_millis(20);

/// What one request left behind.
#[derive(Debug)]
pub struct Record {
    /// When the response head was ready (made wall-clock time on the records thread,
    /// which spares the request a reading of the wall clock).
    pub at: Instant,
    /// What only its access-log line needs; `None` when the request is not logged.
    pub line: Option<RequestLine>,
    /// The response's status.
    pub status: u16,
    /// The API and operation, when one matched.
    pub route: Option<Arc<RouteInfo>>,
    /// The calling application, as key-auth found it.
    pub application: Option<String>,
    /// Its subscription.
    pub subscription: Option<String>,
    /// From routing to the response head.
    pub duration: Duration,
    /// From sending upstream to the upstream's response head, when it was sent.
    pub upstream: Option<Duration>,
    /// Time in policy calls, both phases.
    pub policy: Duration,
}

/// The request as received, for its access-log line.
#[derive(Debug)]
pub struct RequestLine {
    /// The W3C trace id the client sent (`traceparent`), if any.
    pub trace_id: Option<[u8; 16]>,
    /// The client's address.
    pub client: IpAddr,
    /// The request's method.
    pub method: http::Method,
    /// The request's path as received.
    pub path: PathText,
}

/// The longest path kept in place: with its length byte and the tag, a `PathText` is 64
/// bytes.
const INLINE_PATH: usize = 62;

/// A path kept in the record itself when it is short (most are), so that the records
/// thread frees nothing the request's thread allocated.
#[derive(Debug)]
pub enum PathText {
    /// Up to `INLINE_PATH` bytes, in place.
    Inline(u8, [u8; INLINE_PATH]),
    /// A longer one.
    Heap(Box<str>),
}

impl PathText {
    /// `path`, in place when it fits.
    pub fn new(path: &str) -> Self {
        let mut bytes = [0u8; INLINE_PATH];
        match bytes.get_mut(..path.len()) {
            Some(place) => {
                place.copy_from_slice(path.as_bytes());
                Self::Inline(path.len() as u8, bytes)
            }
            None => Self::Heap(path.into()),
        }
    }

    /// Its bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Inline(len, bytes) => &bytes[..usize::from(*len)],
            Self::Heap(text) => text.as_bytes(),
        }
    }
}

/// The queue requests put their records in, and the thread that empties it.
#[derive(Debug)]
pub struct Recorder {
    queue: ArrayQueue<Record>,
    /// Whether there is an access log (records may carry lines).
    logging: bool,
    usage: Option<Arc<Usage>>,
    dropped: Counter,
    stopped: AtomicBool,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Recorder {
    /// Start the thread that writes access-log lines to `log` and tallies `usage`; none is
    /// needed when both are absent. `queue` records may wait; records that find it full
    /// are counted in `dropped` (and in `usage`'s drops).
    pub fn start(
        log: Option<Box<dyn Write + Send>>,
        usage: Option<Arc<Usage>>,
        queue: usize,
        dropped: Counter,
    ) -> anyhow::Result<Option<Arc<Self>>> {
        if log.is_none() && usage.is_none() {
            return Ok(None);
        }
        let recorder = Arc::new(Self::new(log.is_some(), usage, queue, dropped));
        let running = recorder.clone();
        let thread = std::thread::Builder::new().name("records".into()).spawn(move || running.run_until_stopped(log))?;
        *recorder.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
        Ok(Some(recorder))
    }

    fn new(logging: bool, usage: Option<Arc<Usage>>, queue: usize, dropped: Counter) -> Self {
        Self { queue: ArrayQueue::new(queue.max(1)), logging, usage, dropped, stopped: AtomicBool::new(false), thread: Mutex::default() }
    }

    /// Whether records' lines are written.
    pub fn logging(&self) -> bool {
        self.logging
    }

    /// Whether routed requests are tallied for usage analytics.
    pub fn tallying(&self) -> bool {
        self.usage.is_some()
    }

    /// Queue a request's record; dropped (and counted) when the queue is full, or when the
    /// thread has stopped (a connection still open after the shutdown's drain).
    pub fn push(&self, record: Record) {
        if self.stopped.load(Ordering::Relaxed) {
            return self.count_dropped(&record);
        }
        if let Err(record) = self.queue.push(record) {
            self.count_dropped(&record);
        }
    }

    #[cold]
    #[inline(never)]
    fn count_dropped(&self, record: &Record) {
        self.dropped.inc();
        if let (Some(usage), Some(_)) = (&self.usage, &record.route) {
            usage.count_dropped(1);
        }
    }

    /// Stop the thread once it has handled what is queued, and wait for it (blocking).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        if let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = thread.join();
        }
    }

    fn run_until_stopped(&self, mut log: Option<Box<dyn Write + Send>>) {
        let mut buffer = Vec::with_capacity(64 * 1024);
        let mut clock = access_log::Clock::default();
        let mut failing = false;
        loop {
            // Read before draining: a stop seen here is followed by one last drain.
            let stopped = self.stopped.load(Ordering::Acquire);
            if !self.queue.is_empty() {
                let mut tallies = self.usage.as_ref().map(|usage| usage.tallies());
                let mut now = (Instant::now(), since_epoch(SystemTime::now()));
                while let Some(record) = self.queue.pop() {
                    // A record queued after `now` was read gets a later reading.
                    if record.at > now.0 {
                        now = (Instant::now(), since_epoch(SystemTime::now()));
                    }
                    // Worked out once per record, as a `Duration`: each step through
                    // `SystemTime` costs a checked subtraction of timespecs.
                    let at = now.1.saturating_sub(now.0.duration_since(record.at));
                    if let (Some(out), Some(line)) = (&mut log, &record.line) {
                        access_log::write(&mut clock, at, &record, line, &mut buffer);
                        if buffer.len() >= 60 * 1024 {
                            failing = access_log::flush(out, &mut buffer, failing);
                        }
                    }
                    if let (Some(tallies), Some(route)) = (&mut tallies, &record.route) {
                        tallies.add(at, route, record.application, record.status, record.duration);
                    }
                }
            }
            if let Some(out) = &mut log
                && !buffer.is_empty()
            {
                failing = access_log::flush(out, &mut buffer, failing);
            }
            if stopped {
                return;
            }
            std::thread::sleep(IDLE_WAIT);
        }
    }
}

/// `time` as a span since the Unix epoch (zero before it).
fn since_epoch(time: SystemTime) -> Duration {
    time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wall-clock time the access log's tests write lines at (since the Unix epoch).
    pub(super) fn at() -> Duration {
        Duration::from_millis(1_700_000_000_123)
    }

    pub(super) fn record(status: u16) -> Record {
        Record {
            at: Instant::now(),
            line: Some(RequestLine {
                trace_id: Some([0x4b; 16]),
                client: IpAddr::from([10, 0, 0, 7]),
                method: http::Method::GET,
                path: PathText::new("/pets/v1/items/\"1\""),
            }),
            status,
            route: Some(Arc::new(RouteInfo::new("pets".into(), "v1".into(), "GET /items/{id}".into()))),
            application: Some("app-1".into()),
            subscription: None,
            duration: Duration::from_micros(2_500),
            upstream: Some(Duration::from_micros(1_250)),
            policy: Duration::from_micros(40),
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let dropped = Counter::default();
        let usage = Arc::new(Usage::default());
        let recorder = Recorder::new(true, Some(usage.clone()), 2, dropped.clone());
        for status in [200, 201, 202, 203, 204] {
            recorder.push(record(status));
        }
        let mut unrouted = record(200);
        unrouted.route = None;
        recorder.push(unrouted);
        assert_eq!(dropped.get(), 4);
        assert_eq!(usage.dropped(), 3, "only routed requests are tallied, so only they count as dropped tallies");
        let popped = (recorder.queue.pop().map(|r| r.status), recorder.queue.pop().map(|r| r.status));
        assert_eq!(popped, (Some(200), Some(201)));
    }

    #[test]
    fn the_thread_tallies_and_writes_what_was_queued_before_it_stopped() {
        let usage = Arc::new(Usage::default());
        let path = std::env::temp_dir().join(format!("portico-records-{}.log", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        let recorder = Recorder::start(Some(Box::new(file)), Some(usage.clone()), 16, Counter::default()).unwrap().unwrap();
        let mut unlogged = record(503);
        unlogged.line = None;
        // Answered a minute ago (a record stamps a monotonic instant; its line, the wall clock).
        let mut earlier = record(404);
        earlier.at = Instant::now().checked_sub(Duration::from_secs(60)).unwrap();
        for record in [record(200), earlier, unlogged] {
            recorder.push(record);
        }
        recorder.stop();
        let lines = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(lines.lines().count(), 2, "{lines}");
        let ago = |line: &str| {
            let line: serde_json::Value = serde_json::from_str(line).unwrap();
            let at: jiff::Timestamp = line["time"].as_str().unwrap().parse().unwrap();
            jiff::Timestamp::now().duration_since(at).as_secs_f64()
        };
        let ages: Vec<f64> = lines.lines().map(ago).collect();
        assert!((0.0..5.0).contains(&ages[0]) && (60.0..65.0).contains(&ages[1]), "{ages:?}");
        let tallied: u64 = usage.tallies().take().values().map(|tally| tally.requests).sum();
        assert_eq!(tallied, 3);
    }
}
