//! The benchmark backend: answers every request with the same 1 KiB body.

use bytes::Bytes;
use http_body_util::Full;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addr = portico_bench::arg("--listen", "127.0.0.1:18081").parse().expect("--listen ADDR");
    let body = Bytes::from(vec![b'x'; 1024]);
    portico_bench::serve(addr, move |_request| {
        let body = body.clone();
        async move { http::Response::new(Full::new(body)) }
    })
    .await;
}
