//! The `countersign` binary; everything lives in the library.

/// mimalloc instead of the system allocator: glibc's malloc took about 15 % of the server's CPU
/// under load (arena locking, consolidation) and kept freed memory after load spikes.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // A child process started to render one email template (bounded; see the server's email::render).
    if let Some(code) = countersign_server::channels::email::render::child_main_if_asked() {
        return code;
    }
    countersign::main()
}
