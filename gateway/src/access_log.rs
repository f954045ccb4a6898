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

impl Record {
    /// Append the record's line. Written by hand rather than through serde: the field names
    /// are constants and most values need no escaping, which makes a line cost a quarter
    /// of what serde_json took (the writer thread's share of a request with the log on).
    fn write(&self, out: &mut Vec<u8>) {
        let time = jiff::Timestamp::try_from(self.at).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        out.extend_from_slice(b"{\"time\":\"");
        // Writing to a Vec cannot fail.
        let _ = write!(out, "{time:.3}\"");
        if let Some(id) = self.trace_id {
            out.extend_from_slice(b",\"trace_id\":\"");
            out.extend_from_slice(crate::contract::hex::encode(&id).as_bytes());
            out.push(b'"');
        }
        out.extend_from_slice(b",\"client\":\"");
        match self.client {
            // Through `Display` an IPv4 address costs as much as the rest of the line.
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        out.push(b'.');
                    }
                    out.extend_from_slice(itoa::Buffer::new().format(octet).as_bytes());
                }
            }
            IpAddr::V6(v6) => {
                let _ = write!(out, "{v6}");
            }
        }
        out.push(b'"');
        string(out, "method", self.method.as_str());
        string(out, "path", &self.path);
        out.extend_from_slice(b",\"status\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.status).as_bytes());
        if let Some(route) = &self.route {
            string(out, "api", &route.api_name);
            string(out, "api_version", &route.api_version);
            string(out, "operation", &route.operation);
        }
        for (key, value) in [("application", &self.application), ("subscription", &self.subscription)] {
            if let Some(value) = value {
                string(out, key, value);
            }
        }
        millis(out, "duration_ms", self.duration);
        if let Some(upstream) = self.upstream {
            millis(out, "upstream_ms", upstream);
        }
        millis(out, "policy_ms", self.policy);
        out.extend_from_slice(b"}\n");
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `,"key":"value"`, the value escaped as JSON requires (`"`, `\` and control characters).
fn string(out: &mut Vec<u8>, key: &str, value: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":\"");
    let mut plain = 0;
    for (i, &byte) in value.as_bytes().iter().enumerate() {
        let escaped: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..0x20 => &[b'\\', b'u', b'0', b'0', HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 15)]],
            _ => continue,
        };
        out.extend_from_slice(&value.as_bytes()[plain..i]);
        out.extend_from_slice(escaped);
        plain = i + 1;
    }
    out.extend_from_slice(&value.as_bytes()[plain..]);
    out.push(b'"');
}

/// `,"key":milliseconds` with microsecond precision.
fn millis(out: &mut Vec<u8>, key: &str, duration: Duration) {
    let micros = duration.as_micros();
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    out.extend_from_slice(itoa::Buffer::new().format(micros / 1000).as_bytes());
    let fraction = (micros % 1000) as u16;
    out.extend_from_slice(&[b'.', b'0' + (fraction / 100) as u8, b'0' + (fraction / 10 % 10) as u8, b'0' + (fraction % 10) as u8]);
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
    fn any_text_comes_back_whole_from_its_line() {
        let mut hostile = record(200);
        hostile.path = "/\"quoted\"\\back\\slash\n\r\t\u{1}\u{1f}\u{7f}é€😀".into();
        hostile.application = Some(String::from("\\\""));
        hostile.trace_id = None;
        hostile.upstream = None;
        hostile.duration = Duration::from_micros(12_345_678);
        let mut out = Vec::new();
        hostile.write(&mut out);
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["path"], hostile.path.as_str());
        assert_eq!(line["application"], "\\\"");
        assert_eq!(line["duration_ms"], 12_345.678);
        assert!(line.get("trace_id").is_none() && line.get("upstream_ms").is_none(), "{line}");
        for client in ["0.0.0.0", "255.255.255.255", "192.168.10.7", "::1", "2001:db8::8a2e:370:7334", "::ffff:10.0.0.1"] {
            hostile.client = client.parse().unwrap();
            out.clear();
            hostile.write(&mut out);
            let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(line["client"], client);
        }
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
