//! The `countersign` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    countersign::main()
}
