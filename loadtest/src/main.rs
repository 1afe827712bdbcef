//! `baton-loadtest`: see the library for what it does and `--help` for its options.

use std::process::ExitCode;

use baton_loadtest::{Error, cli::Cli};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("baton-loadtest: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(baton_loadtest::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("baton-loadtest: {e}");
            // Bad input is a usage error (2, as clap uses); a target that fails is 1.
            ExitCode::from(if matches!(e, Error::Target(_)) { 1 } else { 2 })
        }
    }
}
