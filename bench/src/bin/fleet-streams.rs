//! A fleet without gateways, for the fleet-scale benchmark (`bench/fleet_scale.py`): N
//! lightweight clients of the fleet protocol in one process, each opening its environment's
//! event stream as a gateway of its own and acknowledging every version it is sent at once
//! (as a gateway does once it applied it), without building anything.
//!
//! It prints one JSON line when every stream has had its first version, then one per later
//! version once every stream acknowledged it: when the first and the last stream received
//! it and when the last acknowledgement was answered (Unix milliseconds).
//!
//!     fleet-streams --url http://127.0.0.1:19080 --token pgw_… [--environment default] [--streams 1000]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use portico_gateway::contract::fleet::{
    ACK_PATH, ENVIRONMENT_EVENT, ENVIRONMENT_HEADER, EventReader, GATEWAY_HEADER, PROTOCOL_HEADER, PROTOCOL_VERSION, REVOCATIONS_EVENT,
    STREAM_PATH,
};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// What the streams saw of one version.
#[derive(Default)]
struct Seen {
    kind: &'static str,
    /// Size of the event's data.
    bytes: usize,
    received: usize,
    first_received_ms: u64,
    all_received_ms: u64,
    acked: usize,
}

struct Fleet {
    streams: usize,
    versions: Mutex<HashMap<String, Seen>>,
    /// Versions seen first by each stream (the snapshot on connecting), until all had one.
    connected: Mutex<usize>,
}

impl Fleet {
    fn received(&self, version: &str, kind: &'static str, bytes: usize, first: bool) {
        let now = now_ms();
        let mut versions = self.versions.lock().expect("lock");
        let seen = versions.entry(version.to_owned()).or_insert_with(|| Seen { kind, bytes, first_received_ms: now, ..Seen::default() });
        seen.received += 1;
        if seen.received == self.streams {
            seen.all_received_ms = now;
        }
        drop(versions);
        if first {
            let mut connected = self.connected.lock().expect("lock");
            *connected += 1;
            if *connected == self.streams {
                println!("{{\"connected\": {}, \"at_ms\": {now}}}", self.streams);
            }
        }
    }

    fn acked(&self, version: &str) {
        let now = now_ms();
        let mut versions = self.versions.lock().expect("lock");
        let Some(seen) = versions.get_mut(version) else { return };
        seen.acked += 1;
        if seen.acked == self.streams {
            println!(
                "{{\"version\": \"{version}\", \"kind\": \"{}\", \"bytes\": {}, \"streams\": {}, \"first_received_ms\": {}, \"all_received_ms\": {}, \"all_acked_ms\": {now}}}",
                seen.kind, seen.bytes, self.streams, seen.first_received_ms, seen.all_received_ms
            );
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[derive(serde::Deserialize)]
struct Versioned {
    version: String,
}

struct Stream {
    fleet: Arc<Fleet>,
    client: HttpClient,
    url: String,
    token: String,
    environment: String,
    id: String,
}

impl Stream {
    fn request(&self, method: Method, path: &str, body: Bytes) -> Request<Full<Bytes>> {
        Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url))
            .header("authorization", format!("Bearer {}", self.token))
            .header(PROTOCOL_HEADER, PROTOCOL_VERSION.to_string())
            .header(GATEWAY_HEADER, &self.id)
            .header(ENVIRONMENT_HEADER, &self.environment)
            .header("content-type", "application/json")
            .body(Full::new(body))
            .expect("a request")
    }

    /// Follow the stream, opening it again when it ends.
    async fn run(self: Arc<Self>) {
        let mut first = true;
        loop {
            if let Err(error) = self.follow(&mut first).await {
                eprintln!("{}: {error}", self.id);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn follow(self: &Arc<Self>, first: &mut bool) -> Result<(), String> {
        let response = self.client.request(self.request(Method::GET, STREAM_PATH, Bytes::new())).await.map_err(|e| e.to_string())?;
        if response.status() != StatusCode::OK {
            return Err(format!("stream answered {}", response.status()));
        }
        let mut body = response.into_body();
        let mut reader = EventReader::default();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| e.to_string())?;
            let Ok(data) = frame.into_data() else { continue };
            for (name, data) in reader.push(&data)? {
                self.event(&name, &data, first);
            }
        }
        Err("stream ended".to_owned())
    }

    fn event(self: &Arc<Self>, name: &str, data: &str, first: &mut bool) {
        let kind = [ENVIRONMENT_EVENT, REVOCATIONS_EVENT].into_iter().find(|kind| *kind == name);
        let (Some(kind), Ok(versioned)) = (kind, serde_json::from_str::<Versioned>(data)) else { return };
        self.fleet.received(&versioned.version, kind, data.len(), std::mem::take(first));
        let stream = self.clone();
        tokio::spawn(async move {
            let ack = Bytes::from(format!("{{\"running\": \"{}\"}}", versioned.version));
            match stream.client.request(stream.request(Method::POST, ACK_PATH, ack)).await {
                Ok(response) if response.status() == StatusCode::NO_CONTENT => {
                    let _ = response.into_body().collect().await;
                    stream.fleet.acked(&versioned.version);
                }
                Ok(response) => eprintln!("{}: acknowledgement answered {}", stream.id, response.status()),
                Err(error) => eprintln!("{}: acknowledgement failed: {error}", stream.id),
            }
        });
    }
}

fn main() {
    let url = portico_bench::arg("--url", "http://127.0.0.1:19080");
    let token = portico_bench::arg("--token", "");
    let environment = portico_bench::arg("--environment", "default");
    let streams: usize = portico_bench::arg("--streams", "1000").parse().expect("--streams N");
    assert!(!token.is_empty(), "--token: the environment's gateway token");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: HttpClient = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(streams).build(connector);
        let fleet = Arc::new(Fleet { streams, versions: Mutex::default(), connected: Mutex::new(0) });
        for n in 0..streams {
            let stream = Arc::new(Stream {
                fleet: fleet.clone(),
                client: client.clone(),
                url: url.clone(),
                token: token.clone(),
                environment: environment.clone(),
                id: format!("simulated-{n}"),
            });
            tokio::spawn(stream.run());
            // Not all at once: a thousand gateways do not start in the same millisecond.
            if n % 50 == 49 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        std::future::pending::<()>().await;
    });
}
