//! The `portico` command line: parse, set up logging, run a profile.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use portico_gateway::contract::units;
use portico_gateway::settings::{AccessLogTarget, Settings};

#[derive(Parser)]
#[command(name = "portico", version, about = "Portico API gateway")]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Log filter (tracing env-filter syntax); RUST_LOG overrides it.
    #[arg(long, default_value = "info", global = true)]
    log: String,
    /// Worker threads (default: one per core).
    #[arg(long, global = true)]
    workers: Option<usize>,
    /// Where a gateway writes its access log: `stdout`, `off` or a file; instead of a
    /// settings file's `access_log.to` (default: stdout).
    #[arg(long, global = true, value_parser = access_log_target)]
    access_log: Option<AccessLogTarget>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway from a declarative configuration file.
    Serve {
        /// The YAML configuration.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a configuration file (and compile its policies) without running it.
    CheckConfig {
        /// The YAML configuration.
        config: PathBuf,
    },
    /// Run the control plane and a gateway in one process (WSO2 pattern 0; pattern 1 with
    /// two nodes on one PostgreSQL).
    AllInOne(crate::all_in_one::Options),
    /// Run the control plane alone; gateways connect to it (WSO2 pattern 2; with
    /// `--key-manager-url`, patterns 4 and 5).
    ControlPlane(crate::control_plane::Options),
    /// Run a key-manager node alone: the OAuth2 authorization server on the control plane's
    /// PostgreSQL, for the control plane's `--key-manager-url` (WSO2 patterns 4 and 5).
    KeyManager(crate::control_plane::KeyManagerOptions),
    /// Run a gateway fed by a control plane, serving from its last-known-good cache while
    /// the control plane is away.
    Gateway(GatewayOptions),
    /// Write, build and test policies in Rust, Python or JavaScript.
    #[command(subcommand)]
    Policy(crate::policy_tool::PolicyCommand),
}

/// The `gateway` profile's options.
#[derive(clap::Args)]
struct GatewayOptions {
    /// The control plane's URL: `https://host:port` (`http://` for loopback and tests).
    #[arg(long, env = "PORTICO_CONTROL_PLANE")]
    control_plane: String,
    /// PEM file of the CA certificates the control plane's certificate must chain to (or
    /// that certificate itself, pinned); the system's roots by default.
    #[arg(long, env = "PORTICO_CONTROL_PLANE_CA")]
    control_plane_ca: Option<PathBuf>,
    /// PEM certificate chain this gateway presents to the control plane (mutual TLS, for a
    /// control plane started with `--fleet-client-ca`); with `--client-key`.
    #[arg(long, env = "PORTICO_CLIENT_CERT", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// PEM private key of `--client-cert`.
    #[arg(long, env = "PORTICO_CLIENT_KEY", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// The environment this gateway serves.
    #[arg(long, default_value = "default")]
    environment: String,
    /// A file holding the environment's gateway token (from POST
    /// /api/v1/environments/{name}/gateway-tokens); otherwise it is read from
    /// PORTICO_GATEWAY_TOKEN. Never on the command line, which every local user can read.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The last-known-good cache folder (snapshot and modules).
    #[arg(long, default_value = ".portico-gateway")]
    cache_dir: PathBuf,
    /// Where API traffic is served (plain HTTP; for TLS, use `--settings`).
    #[arg(long, default_value = "127.0.0.1:8080", conflicts_with = "settings")]
    listen: String,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    #[arg(long, default_value = "127.0.0.1:9901", conflicts_with = "settings")]
    admin: String,
    /// How long the gateway goes on serving after SIGTERM or SIGINT with its `/readyz`
    /// answering 503, so that a load balancer sees it leave first (`10s`); a second signal
    /// ends it. In a settings file, `drain_delay`.
    #[arg(long, default_value = "0s", conflicts_with = "settings")]
    drain_delay: units::Duration,
    /// The gateway's own settings file (YAML: `listeners` with their TLS certificates,
    /// `admin`, `limits`, `compiled_cache`, `drain_delay`), instead of `--listen`, `--admin`
    /// and `--drain-delay`.
    #[arg(long)]
    settings: Option<PathBuf>,
    /// The gateway's id in the fleet; by default one made at first start and kept in the cache.
    #[arg(long)]
    id: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Run the `portico` command with the process's arguments.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format, &cli.log);
    match cli.command {
        Command::CheckConfig { config } => match portico_gateway::file_mode::check(&config) {
            Ok(version) => {
                println!("{}: ok (version {version})", config.display());
                ExitCode::SUCCESS
            }
            Err(problems) => {
                eprintln!("{problems}");
                ExitCode::FAILURE
            }
        },
        Command::AllInOne(options) => run(cli.workers, crate::all_in_one::run(options, cli.access_log)),
        Command::ControlPlane(options) => run(cli.workers, crate::control_plane::run(options)),
        Command::KeyManager(options) => run(cli.workers, crate::control_plane::run_key_manager(options)),
        Command::Gateway(options) => {
            let token = match crate::secret::read(options.token_file.as_deref(), "PORTICO_GATEWAY_TOKEN", "the gateway token") {
                Ok(token) => token,
                Err(reason) => {
                    eprintln!("{reason}");
                    return ExitCode::FAILURE;
                }
            };
            let (settings, settings_dir) = match &options.settings {
                Some(file) => match Settings::load(file) {
                    Ok(settings) => (settings, file.parent().map(PathBuf::from).unwrap_or_default()),
                    Err(problems) => {
                        eprintln!("{problems}");
                        return ExitCode::FAILURE;
                    }
                },
                None => (Settings::plain(&options.listen, Some(&options.admin), options.drain_delay), PathBuf::from(".")),
            };
            let settings = settings.with_access_log(cli.access_log);
            run(
                cli.workers,
                portico_gateway::fleet::run(portico_gateway::fleet::Options {
                    control_plane: options.control_plane,
                    control_plane_ca: options.control_plane_ca,
                    client_certificate: options
                        .client_cert
                        .zip(options.client_key)
                        .map(|(cert, key)| portico_gateway::settings::CertificateConfig { cert, key, server_names: Vec::new() }),
                    environment: options.environment,
                    token,
                    id: options.id,
                    cache_dir: options.cache_dir,
                    settings,
                    settings_dir,
                }),
            )
        }
        Command::Policy(command) => match crate::policy_tool::run(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        },
        Command::Serve { config } => run(cli.workers, portico_gateway::file_mode::run(config, cli.access_log)),
    }
}

/// Run `main` on a multi-thread runtime; an error is logged and fails the process.
fn run(workers: Option<usize>, main: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        runtime.worker_threads(workers.max(1));
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stdout);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

fn access_log_target(text: &str) -> Result<AccessLogTarget, String> {
    match AccessLogTarget::from(text.to_owned()) {
        AccessLogTarget::File(path) if path.as_os_str().is_empty() => Err("name a file, or `stdout` or `off`".into()),
        target => Ok(target),
    }
}
