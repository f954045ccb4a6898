//! The guest toolchains for Python and JavaScript policies, installed on first use into a
//! cache folder at pinned versions: componentize-py from PyPI (`pip install --target`) and
//! componentize-js from npm (on a lockfile kept here). Rust needs only cargo and
//! the `wasm32-wasip2` target.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context as _, bail};
use sha2::{Digest, Sha256};

/// The componentize-py release Python policies are built with.
pub const COMPONENTIZE_PY: &str = "0.25.1";
/// The componentize-js release JavaScript policies are built with.
pub const COMPONENTIZE_JS: &str = "0.23.0";

/// The npm project that pins componentize-js and everything it pulls in.
const JS_PACKAGE: &str = include_str!("toolchain/componentize-js/package.json");
const JS_LOCKFILE: &str = include_str!("toolchain/componentize-js/package-lock.json");

/// Runs componentize-py's entry point with the interpreter that installed it.
const PY_LAUNCHER: &str = "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; sys.exit(script())";

/// Installs of one process are serialised; separate processes race safely (each installs
/// into a folder of its own and renames it into place).
static INSTALLING: Mutex<()> = Mutex::new(());

/// Where the toolchains live.
#[derive(Debug, Clone)]
pub struct Toolchains {
    root: PathBuf,
}

impl Toolchains {
    /// Toolchains kept under `root`.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The user's cache: `$PORTICO_TOOLCHAINS`, else `$XDG_CACHE_HOME/portico/toolchains`,
    /// else `~/.cache/portico/toolchains`.
    pub fn default_root() -> PathBuf {
        if let Some(dir) = std::env::var_os("PORTICO_TOOLCHAINS").filter(|d| !d.is_empty()) {
            return dir.into();
        }
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))
            .unwrap_or_else(std::env::temp_dir);
        cache.join("portico").join("toolchains")
    }

    /// The folder they are kept in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A `componentize-py` command (installing it first when missing).
    pub fn componentize_py(&self) -> anyhow::Result<Command> {
        let python = python();
        let dir = self.root.join(format!("componentize-py-{COMPONENTIZE_PY}"));
        self.install(&dir, &format!("componentize-py {COMPONENTIZE_PY}"), |staging| {
            let mut pip = Command::new(&python);
            pip.args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input", "--no-deps", "--target"])
                .arg(staging)
                .arg(format!("componentize-py=={COMPONENTIZE_PY}"))
                .env("PIP_ROOT_USER_ACTION", "ignore");
            run_installer(pip, "pip", "Python policies need Python 3.10 or newer with pip (set PORTICO_PYTHON to choose the interpreter)")
        })?;
        let mut command = Command::new(python);
        command.args(["-c", PY_LAUNCHER]).env("PYTHONPATH", &dir);
        Ok(command)
    }

    /// A `componentize-js` command (installing it first when missing).
    pub fn componentize_js(&self) -> anyhow::Result<Command> {
        // Named after the lockfile too, so that a change to it installs afresh.
        let lock = Sha256::digest(JS_LOCKFILE.as_bytes());
        let dir = self.root.join(format!("componentize-js-{COMPONENTIZE_JS}-{:02x}{:02x}{:02x}{:02x}", lock[0], lock[1], lock[2], lock[3]));
        self.install(&dir, &format!("componentize-js {COMPONENTIZE_JS}"), |staging| {
            std::fs::write(staging.join("package.json"), JS_PACKAGE)?;
            std::fs::write(staging.join("package-lock.json"), JS_LOCKFILE)?;
            // `npm install` keeps to the lockfile's versions. (`npm ci` would refuse it: npm
            // leaves the optional packages of other platforms out of a lockfile.)
            let mut npm = Command::new("npm");
            npm.args(["install", "--no-audit", "--no-fund", "--loglevel", "error"]).current_dir(staging);
            run_installer(npm, "npm", "JavaScript policies need Node.js 18 or newer with npm")
        })?;
        let mut command = Command::new("node");
        command.arg(dir.join("node_modules/@bytecodealliance/componentize-js/src/cli.js"));
        Ok(command)
    }

    /// Make `dir` by running `fill` on a staging folder, unless it is there already.
    fn install(&self, dir: &Path, what: &str, fill: impl FnOnce(&Path) -> anyhow::Result<()>) -> anyhow::Result<()> {
        let _serial = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
        if dir.is_dir() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.root).with_context(|| format!("cannot create {}", self.root.display()))?;
        let staging =
            self.root.join(format!(".installing-{}-{}", dir.file_name().and_then(|n| n.to_str()).unwrap_or("tool"), std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging)?;
        eprintln!("installing {what} into {} (once)", dir.display());
        let started = Instant::now();
        let filled = fill(&staging);
        if let Err(error) = filled {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(error.context(format!("installing {what} failed")));
        }
        if std::fs::rename(&staging, dir).is_err() {
            // Another process finished first; its copy is as good as ours.
            let _ = std::fs::remove_dir_all(&staging);
            if !dir.is_dir() {
                bail!("cannot move {} into place at {}", what, dir.display());
            }
        }
        eprintln!("installed {what} in {:.1}s", started.elapsed().as_secs_f64());
        Ok(())
    }
}

/// The Python interpreter: `$PORTICO_PYTHON`, else `python3`.
fn python() -> PathBuf {
    std::env::var_os("PORTICO_PYTHON").filter(|p| !p.is_empty()).map(PathBuf::from).unwrap_or_else(|| "python3".into())
}

fn run_installer(mut command: Command, tool: &str, needs: &str) -> anyhow::Result<()> {
    let output = command.stdin(Stdio::null()).output().map_err(|error| anyhow::anyhow!("cannot run `{tool}` ({error}): {needs}"))?;
    if !output.status.success() {
        bail!(
            "`{tool}` failed ({}): {needs}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}
