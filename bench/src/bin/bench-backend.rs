//! The benchmark backend: answers a request without a body with the same 1 KiB body, and
//! echoes a request's body back (with its content type) when it has one.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addr = portico_bench::arg("--listen", "127.0.0.1:18081").parse().expect("--listen ADDR");
    let kib = Bytes::from(vec![b'x'; 1024]);
    portico_bench::serve(addr, move |request: http::Request<hyper::body::Incoming>| {
        let kib = kib.clone();
        async move {
            let (head, body) = request.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            if body.is_empty() {
                return http::Response::new(Full::new(kib));
            }
            let mut response = http::Response::new(Full::new(body));
            if let Some(content_type) = head.headers.get(http::header::CONTENT_TYPE) {
                response.headers_mut().insert(http::header::CONTENT_TYPE, content_type.clone());
            }
            response
        }
    })
    .await;
}
