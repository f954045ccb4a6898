//! Compiles the built-in policies (`policies/*`) to components that the gateway embeds.

#[path = "build/guests.rs"]
mod guests;

fn main() {
    let built = guests::build(&["portico-policy-key-auth", "portico-policy-throttle", "portico-policy-headers"]);
    for path in built {
        println!("cargo:rustc-env=PORTICO_BUILTIN_{}={}", env_name(&path), path.display());
    }
}

fn env_name(path: &std::path::Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    stem.trim_start_matches("portico_policy_").to_uppercase()
}
