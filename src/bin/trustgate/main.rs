//! The `trustgate` binary: the command line and the tools that are not the product (the demo,
//! the load tool, the simulator's command). The product itself is the `trustgate` library.
//!
//! - `cli`: the subcommands and their dispatch; `args`: arguments and exit codes they share.
//! - `decide`, `inspect` (with `local`: the store, or the running instance): one-shot queries.
//! - `audit`: the decision audit read back. `whatif`: the audited requests replayed against a
//!   candidate policy set (here, or by the running instance that holds the store).
//! - `history`: one device's timeline from the events topic.
//! - `replay`: the state rebuilt from the events topic and swapped in.
//! - `poll`: the poller alone, or its request budget.
//! - `stream`: the Secure Endpoint Event Stream (AMQP) consumer alone.
//! - `demo`: the whole story in one command. `bench`: the end-to-end load tool.

mod args;
mod audit;
mod bench;
mod cli;
mod decide;
mod demo;
mod history;
mod inspect;
mod local;
mod poll;
mod replay;
mod stream;
mod whatif;

use clap::Parser;
use std::process::ExitCode;

/// See `trustgate::allocator`: 1.85× the catch-up rate of glibc's malloc (#11).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    trustgate::allocator::limit_arenas();
    match cli::run(cli::Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("trustgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
