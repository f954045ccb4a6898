//! The floor of our own stack: a reverse proxy with hyper and hyper-util's pooled client
//! and nothing else, on the same runtime flavour as the gateway (multi-thread, `--workers`).

use http::Uri;
use http_body_util::{Either, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

fn main() {
    let workers: usize = portico_bench::arg("--workers", "1").parse().expect("--workers N");
    let listen = portico_bench::arg("--listen", "127.0.0.1:18082").parse().expect("--listen ADDR");
    let upstream: Uri = portico_bench::arg("--upstream", "http://127.0.0.1:18081").parse().expect("--upstream URL");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let client = Client::builder(TokioExecutor::new()).build_http::<hyper::body::Incoming>();
        portico_bench::serve(listen, move |request: http::Request<hyper::body::Incoming>| {
            let client = client.clone();
            let upstream = upstream.clone();
            async move {
                let (mut head, body) = request.into_parts();
                let path = head.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
                head.uri = format!("http://{}{path}", upstream.authority().expect("authority")).parse().expect("uri");
                head.headers.remove(http::header::HOST);
                match client.request(http::Request::from_parts(head, body)).await {
                    Ok(response) => response.map(Either::Left),
                    Err(_) => {
                        let mut response = http::Response::new(Either::Right(Empty::<bytes::Bytes>::new()));
                        *response.status_mut() = http::StatusCode::BAD_GATEWAY;
                        response
                    }
                }
            }
        })
        .await;
    });
}
