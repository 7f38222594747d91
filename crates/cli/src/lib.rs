//! The `countersign` command line: argument parsing, configuration, and one module per command.

mod cli;
mod commands;
pub mod config;
mod exit;

use clap::Parser;
use std::process::ExitCode;

/// Runs the command line and turns the outcome into an exit code: 0 success, 2 usage, 1 or the
/// code a failure carries (see `exit::Exit`).
pub fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            exit::code(&err)
        }
    }
}
