//! A federated cell runs the functions the shard map gives it, and only those. The
//! reconciler follows the map: a function assigned to this cell is fetched from the shard
//! manager and put into the local control plane (named `tenant.name`); a function that
//! moved away or was deleted is removed once its calls have had time to finish (its
//! timeout: the data planes already refuse new calls for it with 421). Work that fails
//! (the shard manager unreachable) is retried every second. Every read asks the shard
//! manager for a state at least as new as the map that prompted it, so a replica that lags
//! cannot hand back an older spec. The shard manager also pushes specs to new owners;
//! both paths end in the same idempotent put.

use std::collections::BTreeMap;
use std::time::Duration;

use baton_proto::cell::cell_control_server::CellControl;
use baton_proto::cell::{DeleteFunctionRequest, PutFunctionRequest};
use baton_proto::shard::{FunctionRef, ListFunctionsRequest};
use baton_shardmap::{CellId, Change, MapEvent, MapView};
use tokio::sync::{mpsc, watch};
use tonic::Request;

use crate::control_plane::ControlPlane;
use crate::function::{FunctionSpec, federated_name, federated_spec};

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
    /// Function IDs to fetch and put, each with the epoch of the map that assigned (or
    /// updated) it: the spec must be read from a state at least that new.
    fetch: BTreeMap<String, u64>,
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

    fn note(&self, change: Change, epoch: u64, pending: &mut Pending) {
        match change {
            Change::Assign { function, assignment } if assignment.cell == self.me => {
                pending.fetch.insert(function, epoch);
            }
            Change::Assign { function, .. } | Change::Forget { function } => {
                pending.fetch.remove(&function);
                self.leave(&function);
            }
            _ => {}
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
        let request = ListFunctionsRequest { tenant: String::new(), cell: self.me.0.clone(), min_epoch };
        let listed = self
            .shard_manager
            .call(request, |mut c, r| async move { c.list_functions(r).await })
            .await
            .map_err(|s| s.message().to_string())?;
        // The map may have moved on since the list was read: the map we follow decides.
        let mut wanted = BTreeMap::new();
        for f in listed.functions {
            if self.owns(&format!("{}/{}", f.tenant, f.name)) {
                wanted.insert(federated_name(&f.tenant, &f.name), f);
            }
        }
        // One refused spec does not hold the others (or the removals) back.
        let mut failed = None;
        for f in wanted.values() {
            if let Err(e) = self.put(&f.tenant, &f.name, &f.spec_json).await {
                tracing::warn!(function = %federated_name(&f.tenant, &f.name), error = %e, "putting an assigned function failed");
                failed = Some(e);
            }
        }
        let local: Vec<String> = self.plane.read(|st| st.function_names());
        for name in local.into_iter().filter(|n| n.contains('.') && !wanted.contains_key(n)) {
            self.leave(&name.replacen('.', "/", 1));
        }
        failed.map_or(Ok(()), Err)
    }

    /// Whether the followed map gives function `id` to this cell.
    fn owns(&self, id: &str) -> bool {
        self.view.read().assignment(id).is_some_and(|a| a.cell == self.me)
    }

    async fn fetch(&self, id: &str, min_epoch: u64) -> Result<(), String> {
        let Some((tenant, name)) = id.split_once('/') else {
            return Err(format!("{id:?} is not tenant/name"));
        };
        let request = FunctionRef { tenant: tenant.into(), name: name.into(), min_epoch };
        let answer = self.shard_manager.call(request, |mut c, r| async move { c.get_function(r).await }).await;
        match answer {
            // Moved on since the assignment was noted: nothing to put.
            Ok(_) if !self.owns(id) => Ok(()),
            Ok(info) => self.put(tenant, name, &info.spec_json).await,
            // Deleted since: the Forget delta follows.
            Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
            Err(status) => Err(status.message().to_string()),
        }
    }

    /// Puts the spec locally unless the control plane already has exactly it.
    async fn put(&self, tenant: &str, name: &str, spec_json: &str) -> Result<(), String> {
        let spec = federated_spec(tenant, name, spec_json).map_err(|e| e.to_string())?;
        if self.plane.read(|st| st.function(&spec.name)).is_some_and(|(have, _)| have == spec) {
            return Ok(());
        }
        let spec_json = serde_json::to_string(&spec).map_err(|e| e.to_string())?;
        self.plane.put_function(Request::new(PutFunctionRequest { spec_json })).await.map_err(|s| s.to_string())?;
        tracing::info!(function = spec.name, "function assigned to this cell");
        Ok(())
    }

    /// A function left this cell: remove it after its calls have had time to finish,
    /// unless it came back meanwhile.
    fn leave(&self, id: &str) {
        let Some((tenant, name)) = id.split_once('/') else { return };
        let local = federated_name(tenant, name);
        let Some(spec) = self.plane.read(|st| st.function(&local)).map(|(spec, _)| spec) else { return };
        let (plane, view, me, id) = (self.plane.clone(), self.view.clone(), self.me.clone(), id.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(grace(&spec)).await;
            if view.read().assignment(&id).is_some_and(|a| a.cell == me) {
                return;
            }
            match plane.delete_function(Request::new(DeleteFunctionRequest { name: local.clone() })).await {
                Ok(_) => tracing::info!(function = local, "function left this cell; removed"),
                Err(status) if status.code() == tonic::Code::NotFound => {}
                Err(status) => tracing::warn!(function = local, %status, "removing a function that left failed"),
            }
        });
    }
}

/// How long a function that left keeps running here: its longest call.
fn grace(spec: &FunctionSpec) -> Duration {
    spec.timeout + REMOVAL_MARGIN
}
