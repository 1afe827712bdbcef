//! A federated cell runs the functions the shard map gives it, and only those. The
//! reconciler follows the map: a function assigned to this cell is fetched from the shard
//! manager and put into the local control plane (named `tenant.name`); a function that
//! moved away is removed once its calls have had time to finish (its timeout: the data
//! planes already refuse new calls for it with 421); one deleted is removed at once, its
//! control plane letting busy sandboxes finish their calls. Work that fails
//! (the shard manager unreachable) is retried every second. Every read asks the shard
//! manager for a state at least as new as the map that prompted it, so a replica that lags
//! cannot hand back an older spec. The shard manager also pushes specs to new owners;
//! both paths end in the same idempotent put.

use std::collections::BTreeMap;
use std::time::Duration;

use baton_model::function::{FunctionSpec, federated_spec};
use baton_model::{Epoch, FunctionId};
use baton_proto::shard::{FunctionRef, ListFunctionsRequest};
use baton_shardmap::{CellId, Change, MapEvent, MapView};
use tokio::sync::{mpsc, watch};

use crate::control_plane::{ControlPlane, FunctionError};

/// Extra time after a function's timeout before a function that left is removed.
const REMOVAL_MARGIN: Duration = Duration::from_secs(1);

/// What the reconciler works with.
pub struct Reconciler {
    /// This cell.
    pub me: CellId,
    /// The local control plane.
    pub plane: ControlPlane,
    /// The shard manager, for specs.
    pub shard_manager: baton_shardmap::Replicas,
    /// The followed map.
    pub view: MapView,
}

/// Work left to do.
#[derive(Default)]
struct Pending {
    /// Full resynchronisation wanted (after a snapshot).
    resync: bool,
    /// Functions to fetch and put, each with the epoch of the map that assigned (or
    /// updated) it: the spec must be read from a state at least that new.
    fetch: BTreeMap<FunctionId, Epoch>,
}

impl Reconciler {
    /// Runs until `stopped` turns true.
    pub async fn run(self, mut events: mpsc::UnboundedReceiver<MapEvent>, mut stopped: watch::Receiver<bool>) {
        let mut pending = Pending::default();
        let mut retry = tokio::time::interval(Duration::from_secs(1));
        // After a long round (replicas behind, each waited for), wait a second again
        // rather than catching up on the ticks missed.
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(MapEvent::Snapshot) => pending.resync = true,
                    Some(MapEvent::Delta(delta)) => {
                        for change in delta.changes {
                            self.note(change, delta.epoch, &mut pending);
                        }
                    }
                    None => return,
                },
                _ = retry.tick() => {}
                _ = stopped.wait_for(|s| *s) => return,
            }
            self.work(&mut pending).await;
        }
    }

    fn note(&self, change: Change, epoch: Epoch, pending: &mut Pending) {
        let (function, mine) = match change {
            Change::Assign { function, assignment } => (function, assignment.cell == self.me),
            Change::Forget { function } => (function, false),
            _ => return,
        };
        let Ok(id) = FunctionId::from_key(&function) else {
            tracing::warn!(function, "the shard map names a function that is not tenant/name; ignored");
            return;
        };
        if mine {
            pending.fetch.insert(id, epoch);
        } else {
            pending.fetch.remove(&id);
            self.leave(&id);
        }
    }

    async fn work(&self, pending: &mut Pending) {
        if pending.resync {
            match self.resync().await {
                Ok(()) => pending.resync = false,
                Err(e) => tracing::warn!(error = %e, "listing this cell's functions failed; retrying"),
            }
        }
        for (id, epoch) in std::mem::take(&mut pending.fetch) {
            if let Err(e) = self.fetch(&id, epoch).await {
                tracing::warn!(function = %id, error = %e, "fetching an assigned function failed; retrying");
                pending.fetch.insert(id, epoch);
            }
        }
    }

    /// Puts every function the map gives this cell; schedules the removal of the others.
    async fn resync(&self) -> Result<(), String> {
        let min_epoch = self.view.epoch();
        let request = ListFunctionsRequest { tenant: String::new(), cell: self.me.0.clone(), min_epoch: min_epoch.0 };
        let listed = self
            .shard_manager
            .call(request, |mut c, r| async move { c.list_functions(r).await })
            .await
            .map_err(|s| s.message().to_string())?;
        // The map may have moved on since the list was read: the map we follow decides.
        let mut wanted = BTreeMap::new();
        for f in listed.functions {
            match FunctionId::new(&f.tenant, &f.name) {
                Ok(id) if self.owns(&id) => {
                    wanted.insert(id, f.spec_json);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(tenant = f.tenant, name = f.name, error = %e, "the shard manager listed a malformed function; ignored")
                }
            }
        }
        // One refused spec does not hold the others (or the removals) back.
        let mut failed = None;
        for (id, spec_json) in &wanted {
            if let Err(e) = self.put(id, spec_json).await {
                tracing::warn!(function = %id, error = %e, "putting an assigned function failed");
                failed = Some(e);
            }
        }
        let local: Vec<String> = self.plane.read(|st| st.function_names());
        for id in local.iter().filter_map(|name| FunctionId::from_cell_name(name)) {
            if !wanted.contains_key(&id) {
                self.leave(&id);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Whether the followed map gives function `id` to this cell.
    fn owns(&self, id: &FunctionId) -> bool {
        self.view.read().assignment(&id.key()).is_some_and(|a| a.cell == self.me)
    }

    async fn fetch(&self, id: &FunctionId, min_epoch: Epoch) -> Result<(), String> {
        let request = FunctionRef { tenant: id.tenant().into(), name: id.name().into(), min_epoch: min_epoch.0 };
        let answer = self.shard_manager.call(request, |mut c, r| async move { c.get_function(r).await }).await;
        match answer {
            // Moved on since the assignment was noted: nothing to put.
            Ok(_) if !self.owns(id) => Ok(()),
            Ok(info) => self.put(id, &info.spec_json).await,
            // Deleted since: the Forget delta follows.
            Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
            Err(status) => Err(status.message().to_string()),
        }
    }

    /// Puts the spec locally unless the control plane already has exactly it.
    async fn put(&self, id: &FunctionId, spec_json: &str) -> Result<(), String> {
        let spec = federated_spec(id, spec_json).map_err(|e| e.to_string())?;
        if self.plane.function_spec(&spec.name).is_ok_and(|(have, _)| have == spec) {
            return Ok(());
        }
        let name = spec.name.clone();
        self.plane.put_function_spec(spec).await.map_err(|e| e.to_string())?;
        tracing::info!(function = name, "function assigned to this cell");
        Ok(())
    }

    /// A function left this cell. One that moved away is removed after its calls have had
    /// time to finish here, unless it came back meanwhile; one deleted (no assignment left)
    /// is removed at once, freeing its capacity: its control plane still lets a busy
    /// sandbox's calls finish and removes idle ones after `scale_down_drain`.
    fn leave(&self, id: &FunctionId) {
        let local = id.cell_name();
        let Ok((spec, _)) = self.plane.function_spec(&local) else { return };
        let (plane, view, me, key) = (self.plane.clone(), self.view.clone(), self.me.clone(), id.key());
        let deleted = view.read().assignment(&key).is_none();
        tokio::spawn(async move {
            if !deleted {
                tokio::time::sleep(grace(&spec)).await;
            }
            if view.read().assignment(&key).is_some_and(|a| a.cell == me) {
                return;
            }
            match plane.delete_function_spec(&local).await {
                Ok(()) => tracing::info!(function = local, "function left this cell; removed"),
                Err(FunctionError::NotFound(_)) => {}
                Err(e) => tracing::warn!(function = local, error = %e, "removing a function that left failed"),
            }
        });
    }
}

/// How long a function that left keeps running here: its longest call.
fn grace(spec: &FunctionSpec) -> Duration {
    spec.timeout + REMOVAL_MARGIN
}
