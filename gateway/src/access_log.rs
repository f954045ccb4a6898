//! The access log: one JSON line per request, written by a thread of its own. A request
//! only puts its record in a bounded queue; when the writer cannot keep up, records that do
//! not fit are dropped and counted, so that a slow disk never slows requests down.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crossbeam_queue::ArrayQueue;
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

use crate::exchange::RouteInfo;
use crate::settings::{AccessLogConfig, AccessLogTarget};

/// How long the writer sleeps when it finds the queue empty.
const IDLE_WAIT: Duration = Duration::from_millis(20);

/// What one request left for its line.
#[derive(Debug)]
pub struct Record {
    /// When the response head was ready.
    pub at: SystemTime,
    /// The W3C trace id the client sent (`traceparent`), if any.
    pub trace_id: Option<[u8; 16]>,
    /// The client's address.
    pub client: IpAddr,
    /// The request's method.
    pub method: http::Method,
    /// The request's path as received.
    pub path: String,
    /// The response's status.
    pub status: u16,
    /// The API and operation, when one matched.
    pub route: Option<Arc<RouteInfo>>,
    /// The calling application and its subscription, as key-auth found them.
    pub application: Option<String>,
    /// The subscription.
    pub subscription: Option<String>,
    /// From routing to the response head.
    pub duration: Duration,
    /// From sending upstream to the upstream's response head, when it was sent.
    pub upstream: Option<Duration>,
    /// Time in policy calls, both phases.
    pub policy: Duration,
}

/// A record as its line writes it.
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
    client: IpAddr,
    method: &'a str,
    path: &'a str,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    api: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    operation: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    application: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscription: Option<&'a str>,
    duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream_ms: Option<f64>,
    policy_ms: f64,
}

impl Record {
    fn write(&self, out: &mut Vec<u8>) {
        let millis = |d: Duration| d.as_secs_f64() * 1e3;
        let line = Line {
            time: jiff::Timestamp::try_from(self.at).map(|t| t.to_string()).unwrap_or_default(),
            trace_id: self.trace_id.map(|id| crate::contract::hex::encode(&id)),
            client: self.client,
            method: self.method.as_str(),
            path: &self.path,
            status: self.status,
            api: self.route.as_deref().map(|r| r.api_name.as_str()),
            api_version: self.route.as_deref().map(|r| r.api_version.as_str()),
            operation: self.route.as_deref().map(|r| r.operation.as_str()),
            application: self.application.as_deref(),
            subscription: self.subscription.as_deref(),
            duration_ms: millis(self.duration),
            upstream_ms: self.upstream.map(millis),
            policy_ms: millis(self.policy),
        };
        // A struct of strings and numbers always serialises.
        let _ = serde_json::to_writer(&mut *out, &line);
        out.push(b'\n');
    }
}

/// The queue requests put their records in, and the writer thread that empties it.
#[derive(Debug)]
pub struct AccessLog {
    queue: ArrayQueue<Record>,
    dropped: Counter,
    stopped: AtomicBool,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl AccessLog {
    /// Start the access log `config` names (none when it is `off`), with a file relative to
    /// `base_dir`, counting dropped lines in `dropped`.
    pub fn start(config: &AccessLogConfig, base_dir: &Path, dropped: Counter) -> anyhow::Result<Option<Arc<Self>>> {
        let out: Box<dyn Write + Send> = match &config.to {
            AccessLogTarget::Off => return Ok(None),
            AccessLogTarget::Stdout => Box::new(std::io::stdout()),
            AccessLogTarget::File(path) => {
                let path = base_dir.join(path);
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| anyhow::anyhow!("access_log.to: cannot open {}: {e}", path.display()))?;
                Box::new(file)
            }
        };
        let log = Arc::new(Self::new(config.queue, dropped));
        let writer = log.clone();
        let thread = std::thread::Builder::new().name("access-log".into()).spawn(move || writer.write_until_stopped(out))?;
        *log.writer.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
        Ok(Some(log))
    }

    fn new(queue: usize, dropped: Counter) -> Self {
        Self { queue: ArrayQueue::new(queue.max(1)), dropped, stopped: AtomicBool::new(false), writer: Mutex::default() }
    }

    /// Queue a request's record; dropped (and counted) when the queue is full, or when the
    /// writer has stopped (a connection still open after the shutdown's drain).
    pub fn push(&self, record: Record) {
        if self.stopped.load(Ordering::Relaxed) || self.queue.push(record).is_err() {
            self.dropped.inc();
        }
    }

    /// Stop the writer once it has written what is queued, and wait for it (blocking).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        if let Some(thread) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = thread.join();
        }
    }

    fn write_until_stopped(&self, mut out: Box<dyn Write + Send>) {
        let mut buffer = Vec::with_capacity(64 * 1024);
        let mut failing = false;
        loop {
            // Read before draining: a stop seen here is followed by one last drain.
            let stopped = self.stopped.load(Ordering::Acquire);
            while let Some(record) = self.queue.pop() {
                record.write(&mut buffer);
                if buffer.len() >= 60 * 1024 {
                    failing = Self::flush(&mut out, &mut buffer, failing);
                }
            }
            if !buffer.is_empty() {
                failing = Self::flush(&mut out, &mut buffer, failing);
            }
            if stopped {
                return;
            }
            std::thread::sleep(IDLE_WAIT);
        }
    }

    /// Write `buffer` out and empty it; a failure is logged once until writes succeed again.
    fn flush(out: &mut Box<dyn Write + Send>, buffer: &mut Vec<u8>, failing: bool) -> bool {
        let result = out.write_all(buffer).and_then(|()| out.flush());
        buffer.clear();
        match result {
            Ok(()) => false,
            Err(error) => {
                if !failing {
                    tracing::error!(%error, "cannot write the access log; its lines are lost until it can");
                }
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: u16) -> Record {
        Record {
            at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            trace_id: Some([0x4b; 16]),
            client: IpAddr::from([10, 0, 0, 7]),
            method: http::Method::GET,
            path: "/pets/v1/items/\"1\"".into(),
            status,
            route: Some(Arc::new(RouteInfo { api_name: "pets".into(), api_version: "v1".into(), operation: "GET /items/{id}".into() })),
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
        let log = AccessLog::new(2, dropped.clone());
        for status in [200, 201, 202, 203, 204] {
            log.push(record(status));
        }
        assert_eq!(dropped.get(), 3);
        assert_eq!((log.queue.pop().map(|r| r.status), log.queue.pop().map(|r| r.status)), (Some(200), Some(201)));
    }

    #[test]
    fn a_line_is_one_json_object() {
        let mut out = Vec::new();
        record(200).write(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches('\n').count(), 1);
        let line: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            line,
            serde_json::json!({"time": "2023-11-14T22:13:20.123Z", "trace_id": "4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b", "client": "10.0.0.7",
                "method": "GET", "path": "/pets/v1/items/\"1\"", "status": 200, "api": "pets", "api_version": "v1",
                "operation": "GET /items/{id}", "application": "app-1", "duration_ms": 2.5, "upstream_ms": 1.25, "policy_ms": 0.04})
        );
    }
}
