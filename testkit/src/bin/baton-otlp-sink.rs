//! `baton-otlp-sink ADDR`: an OTLP/gRPC receiver that keeps nothing but a count, for
//! benchmarks that need a real collector at the other end of baton's span export
//! (scripts/bench-observability-cost.sh). Prints the spans received when it gets SIGTERM
//! or SIGINT.

use baton_testkit::otlp::Collector;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:4317".to_string());
    let collector = Collector::counting(tokio::net::TcpListener::bind(&addr).await?);
    eprintln!("baton-otlp-sink: receiving spans on {}", collector.endpoint);
    let (mut term, mut int) = (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    println!("{}", collector.received());
    Ok(())
}
