//! `baton-loadtest`: replays real FaaS traces (the 2019 and 2021 Azure layouts) against a
//! cell or any HTTP endpoint, open-loop, and runs the cold-start, warm and burst sweeps
//! the Dirigent paper reports; writes a per-call CSV with InVitro's columns, a JSON
//! summary, SVG plots and a console table. See `docs/loadtest.md`.

pub mod cli;
pub mod error;
pub mod metrics;
pub mod modes;
pub mod plot;
pub mod record;
pub mod report;
pub mod runner;
pub mod schedule;
pub mod target;
pub mod trace;

pub use error::{Error, Result};

/// Runs the command line: plans, executes, writes the report and prints the table.
pub async fn run(cli: cli::Cli) -> Result<()> {
    let (plan, common) = modes::plan(&cli.mode)?;
    eprintln!(
        "{}: {} functions, {} calls, target {}",
        plan.mode,
        plan.functions.len(),
        plan.stages.iter().map(|s| s.calls.len()).sum::<usize>(),
        common.url
    );
    let (summary, written) = modes::execute(plan, &common).await?;
    println!("{}", report::table(&summary));
    eprintln!("calls:   {}", written.calls.display());
    eprintln!("summary: {}", written.summary.display());
    for plot in &written.plots {
        eprintln!("plot:    {}", plot.display());
    }
    if summary.interrupted {
        eprintln!("the run was interrupted: figures cover the calls sent before Ctrl-C");
    }
    Ok(())
}
