//! The `portico` binary, built in this package so its tests find it next to them;
//! identical to the `portico` package's own.

fn main() -> std::process::ExitCode {
    portico::cli::main()
}
