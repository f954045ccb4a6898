//! The router's cost (`cargo bench -p portico-gateway --bench router`). The router is
//! private to the gateway, so its source is compiled into this benchmark as it is; the
//! policy engine's benchmarks are in `tests/benches`.

#[allow(dead_code, unused_imports)]
#[path = "../src/router.rs"]
mod router;

use router::{ApiRoutes, OperationRoute, RouteMatch, RouteTable};

fn main() {
    divan::main();
}

/// Routing a request among 1,000 APIs of 5 operations each.
#[divan::bench]
fn route_among_1000_apis(bencher: divan::Bencher) {
    let apis = (0..1000)
        .map(|i| ApiRoutes {
            hosts: vec![],
            context: format!("/api{i}/v1"),
            operations: ["/items", "/items/{id}", "/items/{id}/parts", "/orders", "/orders/{id}"]
                .iter()
                .map(|t| OperationRoute { method: Some(http::Method::GET), template: (*t).to_owned(), value: i })
                .collect(),
        })
        .collect();
    let table = RouteTable::new(apis).unwrap();
    let method = http::Method::GET;
    bencher.bench_local(|| {
        divan::black_box(matches!(
            table.route(Some("example.com"), &method, divan::black_box("/api737/v1/items/42/parts")),
            RouteMatch::Found { .. }
        ))
    });
}
