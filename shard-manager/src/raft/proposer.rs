//! Batches concurrent client writes into one raft entry. openraft's core takes one client
//! write at a time, so registrations sent one per call topped out near 2,000/s however
//! many were in flight. The proposer keeps a few entries in flight; whatever arrives while
//! they are being committed goes out as the next entry, a [`Command::Batch`] whose commands
//! are applied (or rejected) each on its own, in order. A lone write goes out at once, as
//! itself: batching adds no latency.
//!
//! Order: entries are handed to raft in the order their commands were queued (only the
//! wait for the outcome runs apart), so a write queued after another commits after it.
//! One proposer serves a replica: its own writes and those followers forward to it.

use std::sync::Arc;

use openraft::error::{ClientWriteError, Fatal, RaftError};
use openraft::{BasicNode, Raft};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::TypeConfig;
use crate::state::{Command, Outcome};

/// Entries in flight at once.
const IN_FLIGHT: usize = 4;

/// Most commands in one entry.
const MAX_BATCH: usize = 512;

/// Most spec bytes in one merged entry (a raft entry travels whole in one message).
const MAX_BATCH_BYTES: usize = 1 << 20;

/// Why a proposed write did not commit on this replica (a follower: the error names the
/// leader to forward to).
pub type ProposeError = RaftError<u64, ClientWriteError<u64, BasicNode>>;

type Reply = oneshot::Sender<Result<Outcome, ProposeError>>;
type Queued = (Command, Reply);

/// Hands writes to the local raft node, batched. Cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::UnboundedSender<Queued>,
}

impl Proposer {
    /// A proposer for `raft`; its task ends with the last clone.
    pub fn new(raft: Raft<TypeConfig>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, rx));
        Self { tx }
    }

    /// Commits `command` on the local raft node (an error if it does not lead).
    pub async fn write(&self, command: Command) -> Result<Outcome, ProposeError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send((command, reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> ProposeError {
    RaftError::Fatal(Fatal::Stopped)
}

/// How much of an entry's size a command accounts for: its specs.
fn weight(command: &Command) -> usize {
    match command.inner() {
        Command::PutFunction { record, .. } => record.spec_json.len(),
        Command::PutFunctions(functions) => functions.iter().map(|(record, _)| record.spec_json.len()).sum(),
        _ => 0,
    }
}

async fn run(raft: Raft<TypeConfig>, mut rx: mpsc::UnboundedReceiver<Queued>) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    // A command taken from the queue that did not fit the last entry.
    let mut held: Option<Queued> = None;
    loop {
        // Wait for room first: what queues meanwhile becomes one entry.
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let first = match held.take() {
            Some(queued) => queued,
            None => match rx.recv().await {
                Some(queued) => queued,
                None => return,
            },
        };
        // A bulk registration is an entry of its own.
        let alone = matches!(first.0.inner(), Command::PutFunctions(_));
        let mut bytes = weight(&first.0);
        let mut batch = vec![first];
        while !alone
            && batch.len() < MAX_BATCH
            && let Ok(next) = rx.try_recv()
        {
            let size = weight(&next.0);
            if matches!(next.0.inner(), Command::PutFunctions(_)) || bytes + size > MAX_BATCH_BYTES {
                held = Some(next);
                break;
            }
            bytes += size;
            batch.push(next);
        }
        // A caller that gave up (its deadline passed) does not want its write made later.
        batch.retain(|(_, reply)| !reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let (commands, replies): (Vec<Command>, Vec<Reply>) = batch.into_iter().unzip();
        crate::metrics::entry(commands.len());
        let single = commands.len() == 1;
        let command = if single { commands.into_iter().next().expect("one") } else { Command::Batch(commands) };
        // Handed to raft here, in queue order; only the wait runs apart.
        match raft.client_write_ff(command).await {
            Err(fatal) => answer_all(replies, Err(RaftError::Fatal(fatal))),
            Ok(answer) => {
                tokio::spawn(async move {
                    let result = match answer.await {
                        Ok(Ok(response)) => Ok(response.data),
                        Ok(Err(e)) => Err(RaftError::APIError(e)),
                        Err(_) => Err(stopped()),
                    };
                    answer_each(replies, single, result);
                    drop(permit);
                });
            }
        }
    }
}

fn answer_all(replies: Vec<Reply>, result: Result<Outcome, ProposeError>) {
    for reply in replies {
        let _ = reply.send(result.clone());
    }
}

/// Gives each caller its own outcome: a batch's outcomes in order.
fn answer_each(replies: Vec<Reply>, single: bool, result: Result<Outcome, ProposeError>) {
    match result {
        Ok(Outcome::Batch(outcomes)) if !single && outcomes.len() == replies.len() => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        Ok(outcome) if single => answer_all(replies, Ok(outcome)),
        Ok(other) => panic!("a batch of {} commands was answered with {other:?}", replies.len()),
        Err(e) => answer_all(replies, Err(e)),
    }
}
