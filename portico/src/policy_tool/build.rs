//! Building a policy project into a component with its language's toolchain: cargo for
//! Rust, componentize-py for Python, componentize-js for JavaScript. The project's own
//! `wit/` is used when it has one (that is what it was written against), else the contract
//! of this `portico`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::contract::{self, TempWit};
use super::toolchain::{COMPONENTIZE_JS, COMPONENTIZE_PY, Toolchains};

/// A language policies are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    /// A `cdylib` crate on `portico-policy-sdk`, built for `wasm32-wasip2`.
    Rust,
    /// `app.py`, built with componentize-py.
    Python,
    /// `policy.js` (an ES module), built with componentize-js.
    Js,
}

impl Language {
    /// Its name as the command line spells it.
    pub fn name(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::Python => "python",
            Language::Js => "js",
        }
    }
}

/// A policy project on disk.
#[derive(Debug, Clone)]
pub struct Project {
    /// Its folder.
    pub dir: PathBuf,
    /// The policy's name (the crate's, `package.json`'s, or the folder's for Python).
    pub name: String,
    /// Its language.
    pub language: Language,
}

impl Project {
    /// Recognise the project in `dir`: `Cargo.toml` is Rust, `package.json` or `policy.js` is
    /// JavaScript, `app.py` is Python.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let dir = dir.canonicalize().with_context(|| format!("no policy project at {}", dir.display()))?;
        let folder_name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("policy").to_owned();
        if dir.join("Cargo.toml").is_file() {
            let manifest = std::fs::read_to_string(dir.join("Cargo.toml"))?;
            let name = package_name(&manifest).with_context(|| format!("{} names no package", dir.join("Cargo.toml").display()))?;
            return Ok(Self { dir, name, language: Language::Rust });
        }
        if dir.join("package.json").is_file() || dir.join("policy.js").is_file() {
            let name = match std::fs::read_to_string(dir.join("package.json")) {
                Ok(text) => {
                    let package: serde_json::Value =
                        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", dir.join("package.json").display()))?;
                    package["name"].as_str().map(|n| n.rsplit('/').next().unwrap_or(n).to_owned()).unwrap_or(folder_name)
                }
                Err(_) => folder_name,
            };
            return Ok(Self { dir, name, language: Language::Js });
        }
        if dir.join("app.py").is_file() {
            return Ok(Self { dir, name: folder_name, language: Language::Python });
        }
        bail!(
            "{} is not a policy project: it has no Cargo.toml (Rust), app.py (Python) or policy.js / package.json (JavaScript)",
            dir.display()
        )
    }

    /// Where `build` puts the component unless told: `dist/<name>.wasm`.
    pub fn default_output(&self) -> PathBuf {
        self.dir.join("dist").join(format!("{}.wasm", self.name))
    }

    /// The fixture file `test` reads unless told: `fixtures.yaml`.
    pub fn fixtures(&self) -> PathBuf {
        self.dir.join("fixtures.yaml")
    }

    /// The JavaScript module componentize-js builds: `package.json`'s `main`, else `policy.js`.
    fn js_entry(&self) -> PathBuf {
        std::fs::read_to_string(self.dir.join("package.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|package| package["main"].as_str().map(|main| self.dir.join(main)))
            .unwrap_or_else(|| self.dir.join("policy.js"))
    }
}

/// `[package] name` of a Cargo manifest.
fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package && let Some(value) = line.strip_prefix("name").map(str::trim_start).and_then(|rest| rest.strip_prefix('=')) {
            return Some(value.trim().trim_matches('"').to_owned());
        }
    }
    None
}

/// How to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Where the Python and JavaScript toolchains are (installed there when missing).
    pub toolchains: Toolchains,
    /// The component file to write (default: [`Project::default_output`]).
    pub out: Option<PathBuf>,
    /// cargo's target folder for Rust projects (default: cargo's own choice).
    pub cargo_target_dir: Option<PathBuf>,
}

/// A component just built.
#[derive(Debug, Clone)]
pub struct Built {
    /// The project.
    pub project: Project,
    /// The component file.
    pub component: PathBuf,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// The toolchain that made it, with its version.
    pub toolchain: String,
    /// How long the build took (installing a toolchain included).
    pub elapsed: Duration,
}

/// Build `project` into a component file.
pub fn build(project: &Project, options: &BuildOptions) -> anyhow::Result<Built> {
    let started = Instant::now();
    let out = options.out.clone().unwrap_or_else(|| project.default_output());
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let own_wit = project.dir.join("wit");
    let temp_wit;
    let wit = if own_wit.is_dir() {
        own_wit
    } else {
        temp_wit = TempWit::new().context("cannot write the WIT contract to a temporary folder")?;
        temp_wit.path().to_owned()
    };
    let toolchain = match project.language {
        Language::Rust => build_rust(project, options, &out)?,
        Language::Python => {
            // componentize-py's interpreter leaves bytecode next to the sources.
            let pycache = project.dir.join("__pycache__");
            let had_pycache = pycache.exists();
            let mut command = options.toolchains.componentize_py()?;
            command
                .current_dir(&project.dir)
                .arg("-d")
                .arg(&wit)
                .args(["-w", contract::WORLD, "componentize", "-p", ".", "app", "-o"])
                .arg(&out);
            let built = run_tool(command, project, "componentize-py");
            if !had_pycache {
                let _ = std::fs::remove_dir_all(&pycache);
            }
            built?;
            format!("componentize-py {COMPONENTIZE_PY}")
        }
        Language::Js => {
            let entry = project.js_entry();
            if !entry.is_file() {
                bail!("JavaScript policy `{}`: {} does not exist", project.name, entry.display());
            }
            let mut command = options.toolchains.componentize_js()?;
            // `http` and `fetch-event` would make the component import wasi:http, which a
            // gateway does not give policies.
            command
                .current_dir(&project.dir)
                .arg(&entry)
                .arg("--wit")
                .arg(&wit)
                .args(["--world-name", contract::WORLD, "-d", "http", "fetch-event", "-o"])
                .arg(&out);
            run_tool(command, project, "componentize-js")?;
            format!("componentize-js {COMPONENTIZE_JS}")
        }
    };
    let bytes = std::fs::read(&out).with_context(|| format!("the build of `{}` wrote no {}", project.name, out.display()))?;
    Ok(Built { project: project.clone(), component: out, bytes, toolchain, elapsed: started.elapsed() })
}

/// Run a guest toolchain; its output is shown only when it fails.
fn run_tool(mut command: Command, project: &Project, tool: &str) -> anyhow::Result<()> {
    let output = command.stdin(Stdio::null()).output().with_context(|| format!("cannot run {tool}"))?;
    if !output.status.success() {
        bail!(
            "{tool} could not build policy `{}` ({}):\n{}{}",
            project.name,
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn build_rust(project: &Project, options: &BuildOptions, out: &Path) -> anyhow::Result<String> {
    ensure_wasm_target();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(&project.dir).args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "--message-format",
        "json-render-diagnostics",
    ]);
    if let Some(target_dir) = &options.cargo_target_dir {
        command.arg("--target-dir").arg(target_dir);
    }
    // Flags meant for the host build (when run from cargo) are wrong for the guest.
    for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_TARGET", "RUSTC_WORKSPACE_WRAPPER"] {
        command.env_remove(var);
    }
    let output = command.stdin(Stdio::null()).output().context("cannot run cargo")?;
    if !output.status.success() {
        bail!("cargo could not build policy `{}` ({}):\n{}", project.name, output.status, String::from_utf8_lossy(&output.stderr));
    }
    let manifest = project.dir.join("Cargo.toml");
    let artifact = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .filter(|message| message["manifest_path"].as_str().map(Path::new).is_some_and(|path| same_file(path, &manifest)))
        .flat_map(|message| message["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|file| file.as_str().map(PathBuf::from))
        .find(|file| file.extension().is_some_and(|e| e == "wasm"));
    let Some(artifact) = artifact else {
        bail!("cargo built no .wasm for policy `{}`: is it a `cdylib` (`[lib] crate-type = [\"cdylib\"]`)?", project.name);
    };
    std::fs::copy(&artifact, out).with_context(|| format!("cannot copy {} to {}", artifact.display(), out.display()))?;
    let version = Command::new("rustc").arg("--version").output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    Ok(version.unwrap_or_else(|| "cargo".to_owned()))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Add the guest target with rustup when it is missing, as the workspace build does.
fn ensure_wasm_target() {
    let sysroot = Command::new("rustc").args(["--print", "sysroot"]).output().ok().filter(|o| o.status.success());
    let installed =
        sysroot.is_some_and(|o| Path::new(String::from_utf8_lossy(&o.stdout).trim()).join("lib/rustlib/wasm32-wasip2").is_dir());
    if !installed {
        eprintln!("adding the wasm32-wasip2 target with rustup");
        let _ = Command::new("rustup").args(["target", "add", "wasm32-wasip2"]).status();
    }
}

#[cfg(test)]
mod tests {
    use super::package_name;

    #[test]
    fn package_names_are_read_from_the_package_table() {
        let manifest = "[workspace]\n\n[package]\nname = \"require-tenant\"\nversion = \"0.1.0\"\n\n[dependencies]\nname = \"x\"\n";
        assert_eq!(package_name(manifest).as_deref(), Some("require-tenant"));
        assert_eq!(package_name("[lib]\nname = \"x\"\n"), None);
    }
}
