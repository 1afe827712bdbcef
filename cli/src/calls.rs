//! Async calls and dead letters, through a router's HTTP API (docs/async.md):
//! `baton calls get ID`, `baton dead-letters list|redrive|purge FUNCTION`.

use anyhow::Context;
use clap::Subcommand;

use crate::output::{OutputArgs, Table, cell};
use crate::tenant::{RouterArgs, send};

/// `baton calls …`
#[derive(Subcommand)]
pub enum CallsCommand {
    /// Show an async call: its state, tries, times, last error and result (`-o json` for
    /// the result's headers and body, base64).
    Get {
        /// The call's ID (`X-Call-Id`, printed by `baton invoke --async`).
        id: String,
        #[command(flatten)]
        router: RouterArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
}

/// `baton dead-letters …`
#[derive(Subcommand)]
pub enum DeadLettersCommand {
    /// List a function's dead letters, oldest first, with why each died.
    List {
        /// The function.
        function: String,
        /// Most to show (1 to 1,000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        router: RouterArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Queue a function's dead letters again, as new calls.
    Redrive {
        /// The function.
        function: String,
        #[command(flatten)]
        router: RouterArgs,
    },
    /// Delete a function's dead letters.
    Purge {
        /// The function.
        function: String,
        #[command(flatten)]
        router: RouterArgs,
    },
}

/// The table of `calls` as the router describes them.
fn call_table(calls: &[serde_json::Value]) -> Table {
    let mut table = Table::new(&["CALL", "FUNCTION", "STATE", "ATTEMPTS", "STATUS", "REASON", "LAST ERROR"]);
    for call in calls {
        table.row(vec![
            cell(&call["call_id"]),
            cell(&call["function"]),
            cell(&call["state"]),
            cell(&call["attempts"]),
            cell(&call["result"]["status"]),
            cell(&call["dead_reason"]),
            cell(&call["last_error"]),
        ]);
    }
    table
}

fn json(body: &str) -> anyhow::Result<serde_json::Value> {
    serde_json::from_str(body).context("the router's answer is not JSON")
}

/// Runs a `baton calls` command.
pub async fn calls(command: CallsCommand) -> anyhow::Result<()> {
    match command {
        CallsCommand::Get { id, router, output } => {
            let body =
                send(router.request(reqwest::Method::GET, &format!("/v1/calls/{id}"))?, "reading the call").await?;
            crate::output::print(output.output, &json(&body)?, |v| call_table(std::slice::from_ref(v)));
        }
    }
    Ok(())
}

/// Runs a `baton dead-letters` command.
pub async fn dead_letters(command: DeadLettersCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    match command {
        DeadLettersCommand::List { function, limit, router, output } => {
            let path = format!("/v1/functions/{function}/dead-letters?limit={limit}");
            let body = send(router.request(Method::GET, &path)?, "listing dead letters").await?;
            crate::output::print(output.output, &json(&body)?, |v| {
                call_table(v["dead_letters"].as_array().map(Vec::as_slice).unwrap_or_default())
            });
        }
        DeadLettersCommand::Redrive { function, router } => {
            let path = format!("/v1/functions/{function}/dead-letters/redrive");
            let body = send(router.request(Method::POST, &path)?, "redriving").await?;
            println!("{} dead letters of {function} queued again", json(&body)?["redriven"]);
        }
        DeadLettersCommand::Purge { function, router } => {
            let path = format!("/v1/functions/{function}/dead-letters");
            let body = send(router.request(Method::DELETE, &path)?, "purging").await?;
            println!("{} dead letters of {function} deleted", json(&body)?["purged"]);
        }
    }
    Ok(())
}
