//! Arguments and exit codes shared by several subcommands.

use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct ConfigArg {
    /// The TOML configuration file (defaults and TRUSTGATE_* variables apply without one).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
}

/// Exit code of `decide` and `inspect` when nothing matched.
pub const EXIT_NOT_FOUND: u8 = 1;
/// Exit code for input or configuration that cannot be used.
pub const EXIT_BAD_INPUT: u8 = 2;
