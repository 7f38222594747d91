//! The `countersign` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    // A child process started to render one email template (bounded; see the server's email::render).
    if let Some(code) = countersign_server::channels::email::render::child_main_if_asked() {
        return code;
    }
    countersign::main()
}
