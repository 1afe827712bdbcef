//! The function catalog's RPCs: register, read, list, delete and move functions.

use baton_model::function::federated_spec;
use baton_model::{Epoch, FunctionId, FunctionSpec, Generation, SpecError};
use baton_proto::cell::PutFunctionRequest as CellPutFunction;
use baton_proto::cell::cell_control_client::CellControlClient;
use baton_proto::shard::{
    Ack, FunctionInfo, FunctionRef, ListFunctionsRequest, ListFunctionsResponse, MoveFunctionRequest,
    PinFunctionRequest, PutFunctionRequest, PutFunctionResponse, PutFunctionsRequest, PutFunctionsResponse,
};
use baton_shardmap::{Cell, CellId, CellState, ShardMap};
use tonic::Status;

use super::{Manager, rejected, required};
use crate::admission::Admission;
use crate::state::{Command, FederationState, FunctionRecord, Rejection, Usage};

/// Longest a target cell may take to accept a function's spec.
const PREPARE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a move's preparation may take when the target's workers pull the image first.
const PREPARE_PULL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// Most functions in one `PutFunctions`.
const MAX_BATCH: usize = 1000;

/// A registration, placed.
struct PlannedPut {
    record: FunctionRecord,
    cell: CellId,
    generation: Generation,
    created: bool,
}

/// The spec a cell runs for a function, with its minimum scale raised to `sandboxes`
/// (never above its maximum, never lowered).
fn prewarmed(tenant: &str, name: &str, spec_json: &str, sandboxes: u32) -> Result<FunctionSpec, SpecError> {
    let mut spec = federated_spec(&FunctionId::new(tenant, name)?, spec_json)?;
    spec.scaling.min_scale = spec.scaling.min_scale.max(sandboxes.min(spec.scaling.max_scale));
    Ok(spec)
}

/// Checks a registration's fields, spec and executable; refusals name the field. Returns
/// what the function takes of its tenant's limits (checked when the write commits).
fn check_put(r: &PutFunctionRequest, admission: &Admission) -> Result<Usage, Status> {
    let (tenant, name) = (required("tenant", &r.tenant)?, required("name", &r.name)?);
    // Refused here with the field named, so nothing invalid is stored or pushed.
    let spec = FunctionId::new(tenant, name)
        .and_then(|id| federated_spec(&id, &r.spec_json))
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    admission.check(&spec).map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(Usage::of(&spec))
}

/// A registration of a function (`PutFunction`) or of several (`PutFunctions`), for its
/// subject only: the spec and cell do not count (see [`Command::subject`]).
fn put_subject<'a>(batch: bool, functions: impl IntoIterator<Item = (&'a String, &'a String)>) -> Command {
    let record = |(tenant, name): (&String, &String)| FunctionRecord {
        tenant: tenant.clone(),
        name: name.clone(),
        home_region: String::new(),
        spec_json: String::new(),
        usage: Usage::default(),
    };
    let mut records: Vec<(FunctionRecord, CellId)> =
        functions.into_iter().map(|f| (record(f), CellId(String::new()))).collect();
    match records.pop() {
        Some((record, cell)) if !batch => Command::PutFunction { record, cell },
        last => Command::PutFunctions(records.into_iter().chain(last).collect()),
    }
}

/// Whether a spec (JSON) runs a container image: it names one and no other runtime.
fn runs_an_image(spec_json: &str) -> bool {
    let Ok(serde_json::Value::Object(spec)) = serde_json::from_str::<serde_json::Value>(spec_json) else {
        return false;
    };
    let image = spec.get("image").and_then(serde_json::Value::as_str).is_some_and(|i| !i.is_empty());
    let runtime = spec.get("runtime").and_then(serde_json::Value::as_str).unwrap_or("oci");
    image && runtime == "oci"
}

/// What each cell last said failed: function ID -> why, by cell.
type Failures = std::collections::BTreeMap<CellId, std::collections::BTreeMap<String, String>>;

fn info(state: &FederationState, id: &str, failures: &Failures) -> Option<FunctionInfo> {
    let record = state.functions.get(id)?;
    let assignment = state.assignments.get(id);
    Some(FunctionInfo {
        // The owner's word only: a cell the function left may still report an old failure.
        last_failure: assignment
            .and_then(|a| failures.get(&a.cell))
            .and_then(|f| f.get(id))
            .cloned()
            .unwrap_or_default(),
        tenant: record.tenant.clone(),
        name: record.name.clone(),
        home_region: record.home_region.clone(),
        spec_json: record.spec_json.clone(),
        cell: assignment.map(|a| a.cell.0.clone()).unwrap_or_default(),
        generation: assignment.map(|a| a.generation).unwrap_or_default().0,
        epoch: state.epoch.0,
    })
}

impl Manager {
    pub(super) async fn put_function_inner(
        &self,
        r: PutFunctionRequest,
        request: Option<&str>,
    ) -> Result<PutFunctionResponse, Status> {
        let usage = check_put(&r, &self.admission)?;
        self.caught_up(r.min_epoch).await?;
        if let Some(first) = self.remembered(request, &put_subject(false, [(&r.tenant, &r.name)])).await? {
            let id = FunctionId::key_of(&r.tenant, &r.name);
            let cell = self.sm.read(|state| state.assignments.get(&id).map(|a| a.cell.0.clone())).await;
            return Ok(PutFunctionResponse {
                cell: cell.unwrap_or_default(),
                generation: first.generation.unwrap_or_default().0,
                epoch: first.epoch.0,
                created: first.created,
            });
        }
        let planned = self.sm.read(|state| self.plan_put(state, r, usage)).await?;
        let command = Command::PutFunction { record: planned.record, cell: planned.cell.clone() };
        let written = self.write(request, command).await?;
        Ok(PutFunctionResponse {
            cell: planned.cell.0,
            generation: written.generation.unwrap_or_default().0,
            epoch: written.epoch.0,
            // Decided when applied: of two concurrent registrations of a new function, one
            // created it.
            created: written.created,
        })
    }

    /// Registers a batch in one command: all or none.
    pub(super) async fn put_functions_inner(
        &self,
        r: PutFunctionsRequest,
        request: Option<&str>,
    ) -> Result<PutFunctionsResponse, Status> {
        if r.functions.is_empty() || r.functions.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!("functions: 1 to {MAX_BATCH} per batch")));
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut usages = Vec::with_capacity(r.functions.len());
        for (i, f) in r.functions.iter().enumerate() {
            usages.push(
                check_put(f, &self.admission)
                    .map_err(|e| Status::invalid_argument(format!("functions[{i}].{}", e.message())))?,
            );
            if !seen.insert((f.tenant.as_str(), f.name.as_str())) {
                return Err(Status::invalid_argument(format!("functions[{i}].name: {} appears twice", f.name)));
            }
        }
        self.caught_up(r.min_epoch).await?;
        let names = r.functions.iter().map(|f| (&f.tenant, &f.name));
        if let Some(first) = self.remembered(request, &put_subject(true, names)).await? {
            // Answered from the state now: which cell owns each, at which generation.
            let functions = self
                .sm
                .read(|state| {
                    let owner = |f: &PutFunctionRequest| state.assignments.get(&FunctionId::key_of(&f.tenant, &f.name));
                    r.functions
                        .iter()
                        .map(|f| PutFunctionResponse {
                            cell: owner(f).map(|a| a.cell.0.clone()).unwrap_or_default(),
                            generation: owner(f).map_or(0, |a| a.generation.0),
                            epoch: first.epoch.0,
                            created: false,
                        })
                        .collect()
                })
                .await;
            return Ok(PutFunctionsResponse { functions });
        }
        let planned = self
            .sm
            .read(|state| {
                r.functions
                    .into_iter()
                    .zip(usages)
                    .enumerate()
                    .map(|(i, (f, usage))| {
                        self.plan_put(state, f, usage)
                            .map_err(|e| Status::new(e.code(), format!("functions[{i}]: {}", e.message())))
                    })
                    .collect::<Result<Vec<_>, Status>>()
            })
            .await?;
        let command = Command::PutFunctions(planned.iter().map(|p| (p.record.clone(), p.cell.clone())).collect());
        let epoch = self.write(request, command).await?.epoch;
        let functions = planned
            .into_iter()
            .map(|p| PutFunctionResponse {
                cell: p.cell.0,
                generation: p.generation.0,
                epoch: epoch.0,
                created: p.created,
            })
            .collect();
        Ok(PutFunctionsResponse { functions })
    }

    /// Where a registration goes: its record, its cell (the current owner, or the ring's
    /// choice in its home region for a new function) and its generation after the put.
    fn plan_put(&self, state: &FederationState, r: PutFunctionRequest, usage: Usage) -> Result<PlannedPut, Status> {
        let Some(owner) = state.tenants.get(&r.tenant) else {
            return Err(rejected(&Rejection::UnknownTenant(r.tenant.clone())));
        };
        // A region named outright must have a cell (registered, in any state); a tenant's
        // default region may still be waiting for its first.
        if !r.home_region.is_empty() && !state.cells.values().any(|c| c.region == r.home_region) {
            return Err(rejected(&Rejection::UnknownRegion(r.home_region)));
        }
        let region = if r.home_region.is_empty() { owner.default_region.clone() } else { r.home_region.clone() };
        let id = FunctionId::key_of(&r.tenant, &r.name);
        let (cell, generation) = match state.assignments.get(&id) {
            Some(existing) => (existing.cell.clone(), existing.generation),
            None => {
                let images = runs_an_image(&r.spec_json);
                let cell =
                    self.placement(state, images, |ring| ring.ring_owner(&id, Some(&region)).map(|c| c.id.clone()));
                (cell?.ok_or_else(|| rejected(&Rejection::NoActiveCell))?, Generation(1))
            }
        };
        let created = !state.assignments.contains_key(&id);
        let record =
            FunctionRecord { tenant: r.tenant, name: r.name, home_region: region, spec_json: r.spec_json, usage };
        Ok(PlannedPut { record, cell, generation, created })
    }

    /// Runs `f` on the ring over the current cells, rebuilt only when the cells changed
    /// (building it costs far more than a registration's other work).
    /// A cell that said it cannot serve (no worker) is left off the ring meanwhile, unless
    /// no active cell can serve (a federation starting, its workers not registered yet):
    /// then all active cells are. For a function of a container image (`images`), so is a
    /// cell that said none of its workers runs images; when every active cell said so,
    /// the registration is refused.
    fn placement<T>(&self, state: &FederationState, images: bool, f: impl FnOnce(&ShardMap) -> T) -> Result<T, Status> {
        let active = || state.cells.values().filter(|c| c.state == CellState::Active);
        let mut unable = self.unable_cells();
        if images {
            let imageless = self.imageless_cells();
            if active().next().is_some() && active().all(|c| imageless.contains(&c.id)) {
                return Err(rejected(&Rejection::NoCellRunsImages));
            }
            unable.extend(imageless);
        }
        if !active().any(|c| !unable.contains(&c.id)) {
            unable.clear();
        }
        let cell = |c: &Cell| {
            let mut c = c.clone();
            if unable.contains(&c.id) && c.state == CellState::Active {
                c.state = CellState::Draining;
            }
            c
        };
        let mut cached = if images { &self.image_ring } else { &self.ring }.lock().expect("not poisoned");
        let fresh = cached.as_ref().is_some_and(|(cells, _)| cells.iter().cloned().eq(state.cells.values().map(cell)));
        if !fresh {
            let cells: Vec<_> = state.cells.values().map(cell).collect();
            let ring = ShardMap::from_snapshot(state.epoch, cells.iter().cloned(), []);
            *cached = Some((cells, ring));
        }
        Ok(f(&cached.as_ref().expect("just filled").1))
    }

    /// Each cell's functions whose last creation failed, as the cells last reported them.
    fn failures(&self) -> Failures {
        let health = self.health.lock().expect("not poisoned");
        health.iter().map(|(cell, h)| (cell.clone(), h.failing.clone())).collect()
    }

    pub(super) async fn get_function_inner(&self, r: FunctionRef) -> Result<FunctionInfo, Status> {
        let id = FunctionId::key_of(required("tenant", &r.tenant)?, required("name", &r.name)?);
        self.caught_up(r.min_epoch).await?;
        let failures = self.failures();
        self.sm
            .read(|state| info(state, &id, &failures))
            .await
            .ok_or_else(|| rejected(&Rejection::UnknownFunction(id.clone())))
    }

    pub(super) async fn list_functions_inner(&self, r: ListFunctionsRequest) -> Result<ListFunctionsResponse, Status> {
        self.caught_up(r.min_epoch).await?;
        let failures = self.failures();
        let listed = self
            .sm
            .read(|state| {
                let functions = state
                    .functions
                    .iter()
                    .filter(|(_, f)| r.tenant.is_empty() || f.tenant == r.tenant)
                    .filter(|(id, _)| {
                        r.cell.is_empty() || state.assignments.get(*id).is_some_and(|a| a.cell.0 == r.cell)
                    })
                    .filter_map(|(id, _)| info(state, id, &failures))
                    .collect();
                ListFunctionsResponse { functions, epoch: state.epoch.0 }
            })
            .await;
        Ok(listed)
    }

    pub(super) async fn delete_function_inner(&self, r: FunctionRef, request: Option<&str>) -> Result<Ack, Status> {
        let id = FunctionId::key_of(required("tenant", &r.tenant)?, required("name", &r.name)?);
        self.caught_up(r.min_epoch).await?;
        if let Some(first) = self.remembered(request, &Command::DeleteFunction { id: id.clone() }).await? {
            return Ok(Ack { epoch: first.epoch.0 });
        }
        if !self.sm.read(|state| state.functions.contains_key(&id)).await {
            return Err(rejected(&Rejection::UnknownFunction(id.clone())));
        }
        let epoch = self.write(request, Command::DeleteFunction { id }).await?.epoch;
        Ok(Ack { epoch: epoch.0 })
    }

    /// Graceful migration: the target gets the spec (so its data planes know the function
    /// before any call is routed there), then the new owner is committed with the next
    /// generation. Routers switch as the delta reaches them; the old owner refuses new
    /// calls with 421 from then on, lets in-flight ones finish and forgets the function.
    pub(super) async fn move_function_inner(&self, r: MoveFunctionRequest) -> Result<PutFunctionResponse, Status> {
        let (tenant, name) = (required("tenant", &r.tenant)?, required("name", &r.name)?);
        let target = CellId(required("cell", &r.cell)?.to_string());
        let id = FunctionId::key_of(tenant, name);
        let plan = self
            .sm
            .read(|state| {
                let Some(record) = state.functions.get(&id) else {
                    return Err(rejected(&Rejection::UnknownFunction(id.clone())));
                };
                let Some(cell) = state.cells.get(&target) else {
                    return Err(rejected(&Rejection::UnknownCell(target.clone())));
                };
                if cell.state != CellState::Active {
                    return Err(rejected(&Rejection::CellNotActive(target.clone())));
                }
                let already =
                    state.assignments.get(&id).filter(|a| a.cell == target).map(|a| (a.generation, state.epoch));
                Ok((record.clone(), cell.control.clone(), already))
            })
            .await?;
        let (record, control, already) = plan;
        if let Some((generation, epoch)) = already {
            return Ok(PutFunctionResponse {
                cell: target.0,
                generation: generation.0,
                epoch: epoch.0,
                created: false,
            });
        }
        let (epoch, generation) = self.migrate(&id, &record, &control, &target, "admin").await?;
        Ok(PutFunctionResponse { cell: target.0, generation: generation.0, epoch: epoch.0, created: false })
    }

    /// A graceful move of function `id` to `target` (control plane at `control`): the
    /// spec first, then the new owner, counted under `reason` (`admin`, `drain`,
    /// `balance`). Returns the epoch and the new generation.
    pub(crate) async fn migrate(
        &self,
        id: &str,
        record: &FunctionRecord,
        control: &str,
        target: &CellId,
        reason: &'static str,
    ) -> Result<(Epoch, Generation), Status> {
        // Pre-warm: the target starts as many sandboxes as the source runs now (its last
        // heartbeat's report), so the switch finds them starting or ready. The target's
        // reconciler puts the function's own spec back as soon as it sees the new owner;
        // the sandboxes then stay or go by the autoscaler's windows, like any others.
        let running = self.loads.lock().expect("not poisoned").last(id);
        self.prepare(control, &record.tenant, &record.name, &record.spec_json, running as u32).await?;
        let written = self.write(None, Command::Assign { function: id.to_string(), cell: target.clone() }).await?;
        crate::metrics::moved(reason);
        Ok((written.epoch, written.generation.unwrap_or_default()))
    }

    pub(super) async fn pin_function_inner(&self, r: PinFunctionRequest, request: Option<&str>) -> Result<Ack, Status> {
        let id = FunctionId::key_of(required("tenant", &r.tenant)?, required("name", &r.name)?);
        if let Some(first) = self.remembered(request, &Command::Pin { function: id.clone(), pinned: r.pinned }).await? {
            return Ok(Ack { epoch: first.epoch.0 });
        }
        if !self.sm.read(|state| state.functions.contains_key(&id)).await {
            return Err(rejected(&Rejection::UnknownFunction(id.clone())));
        }
        let epoch = self.write(request, Command::Pin { function: id, pinned: r.pinned }).await?.epoch;
        Ok(Ack { epoch: epoch.0 })
    }

    /// Gives a cell a function's spec before it owns it, with at least `sandboxes`
    /// sandboxes kept (pre-warming).
    pub(crate) async fn prepare(
        &self,
        control: &str,
        tenant: &str,
        name: &str,
        spec_json: &str,
        sandboxes: u32,
    ) -> Result<(), Status> {
        let spec = prewarmed(tenant, name, spec_json, sandboxes).map_err(|e| Status::internal(e.to_string()))?;
        let spec_json = serde_json::to_string(&spec).map_err(|e| Status::internal(e.to_string()))?;
        let channel = self.network.channel(control).map_err(Status::unavailable)?;
        // A function of an image: the target's workers pull it before the switch.
        let pull_first = !spec.image.is_empty();
        let mut request = tonic::Request::new(CellPutFunction { spec_json, pull_first });
        request.set_timeout(if pull_first { PREPARE_PULL_TIMEOUT } else { PREPARE_TIMEOUT });
        CellControlClient::new(channel).put_function(request).await.map_err(|s| {
            Status::unavailable(format!("preparing {} on {control}: {}", FunctionId::key_of(tenant, name), s.message()))
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_warming_raises_the_minimum_scale_within_the_maximum() {
        let spec = |json: &str, sandboxes| prewarmed("t", "f", json, sandboxes).unwrap().scaling;
        let plain = r#"{"executable":"/x","scaling":{"max_scale":10}}"#;
        assert_eq!(spec(plain, 0).min_scale, 0);
        assert_eq!(spec(plain, 4).min_scale, 4);
        assert_eq!(spec(plain, 40).min_scale, 10, "never above the maximum");
        let floor = r#"{"executable":"/x","scaling":{"min_scale":3,"max_scale":10}}"#;
        assert_eq!(spec(floor, 1).min_scale, 3, "never lowered");
        assert_eq!(prewarmed("t", "f", plain, 2).unwrap().name, "t.f");
    }
}
