//! The benchmark harness's smoke run: `bench/run.py --smoke` puts every system it compares
//! (direct, the minimal proxy, nginx, Envoy, Pingora and this build of Portico) under a
//! second of load per scenario, and fails unless each one answered correctly. It judges no
//! speed; it keeps the harness from rotting. Its own test binary, so cargo runs it alone.

use std::process::Command;

use portico_tests::{policy_builds, portico_binary, target_dir, workspace_root};

#[test]
fn every_benchmarked_system_answers() {
    let policy = policy_builds::built("bench/policies/json-transform");
    let output = Command::new("python3")
        .arg(workspace_root().join("bench/run.py"))
        .arg("--smoke")
        .arg("--portico")
        .arg(portico_binary())
        .arg("--policy")
        .arg(&policy.component)
        .arg("--out")
        .arg(target_dir().join("bench-smoke.md"))
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}\n{stderr}");
    assert!(output.status.success(), "the smoke run failed:\n{stderr}");
    for system in ["direct to backend", "minimal hyper proxy", "nginx", "envoy", "pingora", "portico TLS", "JSON transform 10 KiB"] {
        assert!(stdout.contains(system), "no figures for {system} in the report");
    }
}
