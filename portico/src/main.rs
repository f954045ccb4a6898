//! The `portico` binary; everything is in [`portico::cli`].

fn main() -> std::process::ExitCode {
    portico::cli::main()
}
