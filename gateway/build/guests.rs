//! Builds policy crates of this workspace for `wasm32-wasip2` (profile `guest`) from a
//! build script, and copies the components into `OUT_DIR`. Shared by the gateway's
//! build script (built-in policies) and the tests' (test policies).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Build `packages` and return, for each, the path of its component in `OUT_DIR`
/// (named after the package, dashes as underscores).
pub fn build(packages: &[&str]) -> Vec<PathBuf> {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let workspace = workspace_root(&manifest_dir);
    // A target directory of its own: the outer build holds the lock on the usual one.
    let target_dir = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace.join("target")).join("guests");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    ensure_target_installed();

    let mut command = Command::new(cargo);
    command
        .current_dir(&workspace)
        .args(["build", "--quiet", "--target", "wasm32-wasip2", "--profile", "guest", "--target-dir"])
        .arg(&target_dir);
    for package in packages {
        command.args(["-p", package]);
    }
    // The outer build's flags are for the host, not for the guest target.
    for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_TARGET", "CARGO_TARGET_DIR", "RUSTC_WORKSPACE_WRAPPER"] {
        command.env_remove(var);
    }
    let status = command.status().expect("run cargo to build the policy components");
    assert!(
        status.success(),
        "building {packages:?} for wasm32-wasip2 failed (is the target installed? `rustup target add wasm32-wasip2`)"
    );

    // The workspace manifest holds the `guest` profile.
    for dir in ["wit", "policy-sdk", "policies", "tests/policies", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }
    packages
        .iter()
        .map(|package| {
            let file = format!("{}.wasm", package.replace('-', "_"));
            let built = target_dir.join("wasm32-wasip2").join("guest").join(&file);
            let copy = out_dir.join(&file);
            std::fs::copy(&built, &copy).unwrap_or_else(|e| panic!("copy {}: {e}", built.display()));
            copy
        })
        .collect()
}

/// On a fresh machine the guest target is missing: add it with rustup when there is one,
/// so that `cargo build` and `cargo test` need no other set-up step.
fn ensure_target_installed() {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(rustc).args(["--print", "sysroot"]).output().ok().filter(|o| o.status.success());
    let installed = sysroot
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join("lib/rustlib/wasm32-wasip2").is_dir())
        .unwrap_or(false);
    if !installed {
        println!("cargo:warning=installing the wasm32-wasip2 target with rustup (policies are built for it)");
        let _ = Command::new("rustup").args(["target", "add", "wasm32-wasip2"]).status();
    }
}

fn workspace_root(manifest_dir: &Path) -> PathBuf {
    manifest_dir
        .ancestors()
        .find(|dir| dir.join("wit").is_dir() && dir.join("Cargo.toml").is_file())
        .expect("the workspace root holds wit/")
        .to_owned()
}
