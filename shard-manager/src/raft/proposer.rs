//! Batches concurrent client writes into one raft entry. openraft's core takes one client
//! write at a time, so registrations sent one per call topped out near 2,500/s however
//! many were in flight. The proposer keeps a few entries in flight; whatever arrives while
//! they are being committed goes out as the next entry, a [`Command::Batch`] whose commands
//! are applied (or rejected) each on its own, in order. A lone write goes out at once, as
//! itself: batching adds no latency.

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Raft};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::TypeConfig;
use crate::state::{Command, Outcome};

/// Entries in flight at once.
const IN_FLIGHT: usize = 4;

/// Most commands in one entry.
const MAX_BATCH: usize = 512;

/// Why a proposed write did not commit on this replica (a follower: the error names the
/// leader to forward to).
pub type ProposeError = RaftError<u64, ClientWriteError<u64, BasicNode>>;

type Reply = oneshot::Sender<Result<Outcome, ProposeError>>;

/// Hands writes to the local raft node, batched. Cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::UnboundedSender<(Command, Reply)>,
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
        let stopped = || RaftError::Fatal(openraft::error::Fatal::Stopped);
        self.tx.send((command, reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(raft: Raft<TypeConfig>, mut rx: mpsc::UnboundedReceiver<(Command, Reply)>) {
    let in_flight = std::sync::Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        // Wait for room first: what queues meanwhile becomes one entry.
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let Some(first) = rx.recv().await else { return };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH
            && let Ok(next) = rx.try_recv()
        {
            batch.push(next);
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            commit(&raft, batch).await;
            drop(permit);
        });
    }
}

async fn commit(raft: &Raft<TypeConfig>, mut batch: Vec<(Command, Reply)>) {
    if batch.len() == 1 {
        let (command, reply) = batch.pop().expect("one");
        let _ = reply.send(raft.client_write(command).await.map(|r| r.data));
        return;
    }
    let (commands, replies): (Vec<Command>, Vec<Reply>) = batch.into_iter().unzip();
    match raft.client_write(Command::Batch(commands)).await.map(|r| r.data) {
        Ok(Outcome::Batch(outcomes)) if outcomes.len() == replies.len() => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        Ok(other) => {
            // The state machine answers a batch with one outcome per command.
            let outcome = Outcome::Rejected(format!("a batch was answered with {other:?}"));
            for reply in replies {
                let _ = reply.send(Ok(outcome.clone()));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
