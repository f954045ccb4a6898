//! The `portico` binary; everything is in [`portico_gateway::cli`].

fn main() -> std::process::ExitCode {
    portico_gateway::cli::main()
}
