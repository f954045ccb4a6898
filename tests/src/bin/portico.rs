//! The `portico` binary, built in this package so its tests can start it as a process
//! (`CARGO_BIN_EXE_portico`); identical to the gateway's own.

fn main() -> std::process::ExitCode {
    portico_gateway::cli::main()
}
