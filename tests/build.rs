//! Compiles the test policies (`tests/policies/*`) to components for the tests.

#[path = "../gateway/build/guests.rs"]
mod guests;

fn main() {
    let built = guests::build(&[
        "portico-test-misbehave",
        "portico-test-stamp-v1",
        "portico-test-stamp-v2",
        "portico-test-mediate",
        "portico-test-not-a-policy",
        "portico-test-noop",
        "portico-test-future-world",
        "portico-test-missing-export",
        "portico-test-allow-header",
        "portico-test-contract-0-1-0",
    ]);
    for path in built {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let name = stem.trim_start_matches("portico_test_").to_uppercase();
        println!("cargo:rustc-env=PORTICO_TEST_POLICY_{name}={}", path.display());
    }
}
