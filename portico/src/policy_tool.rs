//! `portico policy`: write, build and test gateway policies in Rust, Python or JavaScript.
//! `new` scaffolds a project that builds as it is; `build` makes the component with the
//! language's toolchain and checks it against this gateway's `portico:policy` world; `test`
//! runs it on the gateway's own engine against a fixture file, with the host services mocked;
//! `push` uploads it to a control plane's policy registry.

mod build;
mod capture;
mod compare;
mod contract;
mod fixtures;
mod harness;
mod mocks;
mod outcome;
mod push;
mod report;
mod scaffold;
mod toolchain;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use portico_gateway::contract::units::Duration;

pub use build::{BuildOptions, Built, Language, Project, build};
pub use fixtures::Fixtures;
pub use harness::{Harness, Needs};
pub use push::{Push, SCHEMA_FILE, push};
pub use report::{CaseReport, Report};
pub use scaffold::new_project;
pub use toolchain::{COMPONENTIZE_JS, COMPONENTIZE_PY, Toolchains};

/// The `portico policy` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Create a policy project that builds and passes its fixtures as it is.
    New {
        /// The language: rust, python or js.
        #[arg(long, value_enum)]
        lang: Language,
        /// The policy's name (lower case, digits and dashes); also the folder created.
        name: String,
        /// The folder to create it in (default: the current one).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Build a policy project into a component and check that it fits this gateway.
    Build {
        /// The project's folder.
        #[arg(default_value = ".")]
        project: PathBuf,
        /// The component file to write (default: PROJECT/dist/NAME.wasm).
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Where the Python and JavaScript toolchains are kept (installed on first use).
        #[arg(long, env = "PORTICO_TOOLCHAINS")]
        toolchains: Option<PathBuf>,
    },
    /// Run a policy against a fixture file: a project (built first) or a component file.
    Test {
        /// A project's folder, or a component (`.wasm`).
        #[arg(default_value = ".")]
        target: PathBuf,
        /// The fixture file (default: PROJECT/fixtures.yaml).
        #[arg(long, short)]
        fixtures: Option<PathBuf>,
        /// Each call's deadline instead of the fixture file's `timeout` (e.g. `1s` on a
        /// loaded CI runner, where a wall-clock deadline can fail a case for the machine's sake).
        #[arg(long)]
        timeout: Option<Duration>,
        /// Where the Python and JavaScript toolchains are kept (installed on first use).
        #[arg(long, env = "PORTICO_TOOLCHAINS")]
        toolchains: Option<PathBuf>,
    },
    /// Upload a policy to a control plane's registry as NAME@VERSION: a project (built and
    /// checked first) or a component file.
    Push {
        /// A project's folder, or a component (`.wasm`).
        #[arg(default_value = ".")]
        target: PathBuf,
        /// The control plane's URL (`https://…`; `http://` for loopback and tests).
        #[arg(long, env = "PORTICO_CONTROL_PLANE")]
        control_plane: String,
        /// PEM file of the CA certificates the control plane's certificate must chain to
        /// (or that certificate itself); the system's roots by default.
        #[arg(long, env = "PORTICO_CONTROL_PLANE_CA")]
        control_plane_ca: Option<PathBuf>,
        /// The version to publish (immutable once uploaded).
        #[arg(long)]
        version: String,
        /// The name in the registry (default: the project's name, or the file's stem).
        #[arg(long)]
        name: Option<String>,
        /// What the policy does.
        #[arg(long, default_value = "")]
        description: String,
        /// A JSON Schema file for its configuration (default: the project's config.schema.json).
        #[arg(long)]
        schema: Option<PathBuf>,
        /// A file holding a session token (from POST /api/v1/auth/login); the token may also
        /// be given in PORTICO_TOKEN. Never on the command line, which every local user can read.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Log in as this user instead (the password from PORTICO_PASSWORD).
        #[arg(long)]
        user: Option<String>,
        /// Where the Python and JavaScript toolchains are kept (installed on first use).
        #[arg(long, env = "PORTICO_TOOLCHAINS")]
        toolchains: Option<PathBuf>,
    },
}

/// Run a `portico policy` subcommand. Progress goes to stderr, results to stdout; a
/// failed build, check or case is an error (so the process exits non-zero).
pub fn run(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::New { lang, name, dir } => {
            let project = new_project(lang, &name, &dir)?;
            println!("created {} policy `{name}` in {}", lang.name(), project.display());
            println!("next: portico policy test {}", project.display());
            Ok(())
        }
        PolicyCommand::Build { project, out, toolchains } => {
            let project = Project::open(&project)?;
            let options = BuildOptions { toolchains: toolchains_at(toolchains), out, cargo_target_dir: None };
            let harness = Harness::new()?;
            let (built, needs) = build_and_check(&project, &options, &harness)?;
            println!("{}", describe_build(&built, needs));
            Ok(())
        }
        PolicyCommand::Test { target, fixtures, timeout, toolchains } => {
            let harness = match timeout {
                Some(timeout) => Harness::new()?.with_timeout(timeout.0),
                None => Harness::new()?,
            };
            let (name, component, fixtures_path) = if target.is_file() {
                let fixtures = fixtures.context("testing a component file needs --fixtures FILE")?;
                let name = target.file_stem().and_then(|s| s.to_str()).unwrap_or("policy").to_owned();
                let bytes = std::fs::read(&target).with_context(|| format!("cannot read {}", target.display()))?;
                (name, bytes, fixtures)
            } else {
                let project = Project::open(&target)?;
                let options = BuildOptions { toolchains: toolchains_at(toolchains), out: None, cargo_target_dir: None };
                let fixtures = fixtures.unwrap_or_else(|| project.fixtures());
                let (built, needs) = build_and_check(&project, &options, &harness)?;
                eprintln!("{}", describe_build(&built, needs));
                (built.project.name, built.bytes, fixtures)
            };
            let fixtures = Fixtures::load(&fixtures_path)?;
            let report = test(&harness, fixtures.policy.as_deref().unwrap_or(&name), &component, &fixtures)?;
            print!("{report}");
            if !report.passed() {
                bail!("{} of {} cases of policy `{}` failed", report.failed(), report.cases.len(), report.policy);
            }
            Ok(())
        }
        PolicyCommand::Push {
            target,
            control_plane,
            control_plane_ca,
            version,
            name,
            description,
            schema,
            token_file,
            user,
            toolchains,
        } => {
            let token = match (&token_file, std::env::var_os("PORTICO_TOKEN")) {
                (None, None) => None,
                _ => Some(crate::secret::read(token_file.as_deref(), "PORTICO_TOKEN", "the session token").map_err(anyhow::Error::msg)?),
            };
            let (default_name, component, project_schema) = if target.is_file() {
                let stem = target.file_stem().and_then(|s| s.to_str()).unwrap_or("policy").to_owned();
                (stem, std::fs::read(&target).with_context(|| format!("cannot read {}", target.display()))?, None)
            } else {
                let project = Project::open(&target)?;
                let options = BuildOptions { toolchains: toolchains_at(toolchains), out: None, cargo_target_dir: None };
                let harness = Harness::new()?;
                let (built, needs) = build_and_check(&project, &options, &harness)?;
                eprintln!("{}", describe_build(&built, needs));
                (built.project.name, built.bytes, push::project_schema(&target))
            };
            let pushed = push(&Push {
                control_plane,
                control_plane_ca,
                token,
                user,
                password: std::env::var("PORTICO_PASSWORD").ok(),
                name: name.unwrap_or(default_name),
                version,
                description,
                component,
                schema: schema.or(project_schema),
            })?;
            println!(
                "pushed {} (sha256 {}, {} bytes)",
                pushed["reference"].as_str().unwrap_or("?"),
                pushed["digest"].as_str().unwrap_or("?"),
                pushed["size"]
            );
            println!("attach it as: {{\"policy\": \"{}\", \"config\": {{…}}}}", pushed["reference"].as_str().unwrap_or("?"));
            Ok(())
        }
    }
}

fn toolchains_at(root: Option<PathBuf>) -> Toolchains {
    Toolchains::at(root.unwrap_or_else(Toolchains::default_root))
}

/// Build a project, then check the component as a gateway would load it: it must fit the
/// world, and when the project has fixtures, `init` must accept their configuration.
pub fn build_and_check(project: &Project, options: &BuildOptions, harness: &Harness) -> anyhow::Result<(Built, Option<Needs>)> {
    eprintln!("building {} policy `{}`…", project.language.name(), project.name);
    let built = build(project, options)?;
    let compiled = harness.compile(&project.name, &built.bytes)?;
    let fixtures = project.fixtures();
    let needs = if fixtures.is_file() {
        let fixtures = Fixtures::load(&fixtures)?;
        Some(harness.init(&compiled, &fixtures.config, Some(&fixtures))?)
    } else {
        None
    };
    Ok((built, needs))
}

/// Compile a component under `name` and run a fixture file against it.
pub fn test(harness: &Harness, name: &str, component: &[u8], fixtures: &Fixtures) -> anyhow::Result<Report> {
    let compiled = harness.compile(name, component)?;
    Ok(harness.run(&compiled, fixtures))
}

fn describe_build(built: &Built, needs: Option<Needs>) -> String {
    let mut text = format!(
        "built `{}` with {} in {:.1}s: {} ({:.1} MB), fits {}",
        built.project.name,
        built.toolchain,
        built.elapsed.as_secs_f64(),
        relative(&built.component),
        built.bytes.len() as f64 / 1e6,
        portico_gateway::policy::WIT_PACKAGE,
    );
    if let Some(needs) = needs {
        text.push_str(&format!(
            "; init accepts the fixtures' config (needs {needs}; instance memory {:.1} MiB)",
            needs.instance_memory as f64 / (1024.0 * 1024.0)
        ));
    }
    text
}

fn relative(path: &Path) -> String {
    let shown = std::env::current_dir().ok().and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_owned));
    shown.unwrap_or_else(|| path.to_owned()).display().to_string()
}
