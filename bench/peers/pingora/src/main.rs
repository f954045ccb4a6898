//! A Pingora reverse proxy for the benchmark: one listener, one fixed upstream, one
//! worker thread, upstream connections kept alive. Nothing else, so it measures the
//! framework's floor as `minimal-proxy` measures ours.
//!
//!     pingora-peer LISTEN_ADDR UPSTREAM_ADDR

use async_trait::async_trait;
use pingora_core::server::Server;
use pingora_core::server::configuration::ServerConf;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};

struct Fixed {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Fixed {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _: &mut Session, _: &mut ()) -> pingora_core::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream.as_str(), false, String::new())))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, upstream] = args.as_slice() else {
        eprintln!("usage: pingora-peer LISTEN_ADDR UPSTREAM_ADDR");
        std::process::exit(2);
    };
    let conf = ServerConf { threads: 1, work_stealing: false, ..ServerConf::default() };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora_proxy::http_proxy_service(&server.configuration, Fixed { upstream: upstream.clone() });
    proxy.add_tcp(listen);
    server.add_service(proxy);
    server.run_forever();
}
