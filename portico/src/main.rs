//! The `portico` binary; everything is in [`portico::cli`].

// mimalloc, not glibc's malloc: fewer instructions per allocation on the request path
// (callgrind, S2: -3.6 % per request), and memory freed after a burst (a snapshot's
// compile, a flood of connections) goes back to the system instead of staying in a thread's
// arena. It is built not to ask for transparent huge pages (`no_thp`): when it asked, the
// gateway held 106 MiB at 1,000 open connections instead of 81 (a kernel that gives them to
// every process needs `MIMALLOC_ALLOW_THP=0` for the same).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    portico::cli::main()
}
