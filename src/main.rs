//! The `trustgate` binary: parse the command line and hand over to the library.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = trustgate::cli::Cli::parse();
    match trustgate::cli::main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("trustgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
