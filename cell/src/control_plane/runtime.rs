//! Carries out the [`ControlPlaneState`]'s commands: calls workers, publishes routing changes to
//! data planes, and runs the autoscaling and worker-health loops.
//!
//! Lock order: only the state lock exists here; routing changes are broadcast while it is
//! held, so data planes see versions in order. Nothing awaits while holding it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_proto::worker::worker_client::WorkerClient;
use baton_proto::worker::{
    CreateSandboxRequest, DeleteSandboxRequest, DropImageRequest, ListSandboxesRequest, PullImageRequest, SandboxSpec,
    SandboxState,
};
use baton_service::tls::Tls;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use baton_proto::SandboxId;

use super::state::{Command, ControlPlaneState, ListedSandbox, StateConfig};
use crate::routing::{Creation, RoutingSnapshot, RoutingUpdate};
use crate::store::{CellStore, StoreError};
use baton_model::function::FunctionSpec;

/// Runtime settings of the control plane.
#[derive(Debug, Clone)]
pub struct ControlPlaneSettings {
    /// Decision settings.
    pub state: StateConfig,
    /// How often every function's autoscaler runs.
    pub autoscale_interval: Duration,
    /// Most processes per sandbox.
    pub sandbox_pids: u32,
    /// Timeout of each call to a worker (creation included).
    pub worker_call_timeout: Duration,
    /// Longest a worker may take to pull an image, besides `worker_call_timeout`.
    pub image_pull_timeout: Duration,
    /// How often data planes report load.
    pub load_report_interval: Duration,
    /// How it connects to workers.
    pub tls: Tls,
}

pub(crate) struct Inner {
    pub(crate) state: Mutex<ControlPlaneState>,
    pub(crate) store: CellStore,
    pub(crate) routing: broadcast::Sender<RoutingUpdate>,
    urgent: mpsc::UnboundedSender<String>,
    channels: Mutex<HashMap<String, Channel>>,
    settings: ControlPlaneSettings,
    /// Tenants' registry credentials (a federated cell's, from the shard manager).
    credentials: std::sync::OnceLock<Arc<dyn super::CredentialSource>>,
}

/// The control plane. Cheap to clone.
#[derive(Clone)]
pub struct ControlPlane {
    pub(crate) inner: Arc<Inner>,
}

impl ControlPlane {
    /// Loads the store, starts recovery (listing every known worker) and the loops, which
    /// run until `stop` turns true.
    pub async fn start(
        settings: ControlPlaneSettings,
        store: CellStore,
        stop: watch::Receiver<bool>,
    ) -> Result<Self, StoreError> {
        let functions = store.functions().await?;
        let workers = store.workers().await?;
        let (routing, _) = broadcast::channel(4096);
        let (urgent, urgent_rx) = mpsc::unbounded_channel();
        tracing::info!(functions = functions.len(), workers = workers.len(), "control plane recovering from its store");
        let plane = Self {
            inner: Arc::new(Inner {
                state: Mutex::new(ControlPlaneState::new(settings.state.clone())),
                store,
                routing,
                urgent,
                channels: Mutex::default(),
                settings,
                credentials: std::sync::OnceLock::new(),
            }),
        };
        plane.apply(|st| st.recover(functions, workers, Instant::now()));
        tokio::spawn(plane.clone().autoscale_loop(urgent_rx, stop.clone()));
        tokio::spawn(plane.clone().health_loop(stop));
        Ok(plane)
    }

    /// Runs `f` on the state, broadcasts its routing changes under the lock, and carries out
    /// the other commands in the background.
    pub(crate) fn apply<T>(&self, f: impl FnOnce(&mut ControlPlaneState) -> T) -> T
    where
        T: Commands,
    {
        let mut state = self.inner.state.lock().expect("state lock");
        let result = f(&mut state);
        let mut rest = Vec::new();
        for command in result.commands() {
            match command {
                Command::Publish(update) => {
                    metrics::gauge!(crate::metrics::ROUTING_VERSION).set(update.version as f64);
                    let _ = self.inner.routing.send(update.clone());
                }
                other => rest.push(other.clone()),
            }
        }
        drop(state);
        for command in rest {
            tokio::spawn(self.clone().execute(command));
        }
        result
    }

    /// The routing table now and a receiver of every later change, with nothing missed
    /// or repeated between them.
    pub fn watch_routing(&self) -> (RoutingSnapshot, broadcast::Receiver<RoutingUpdate>) {
        let state = self.inner.state.lock().expect("state lock");
        (state.snapshot(), self.inner.routing.subscribe())
    }

    /// Asks for an immediate autoscaler run of `function`.
    pub(crate) fn urge(&self, function: String) {
        let _ = self.inner.urgent.send(function);
    }

    /// Changes the state where no command can result.
    pub(crate) fn read_mut<T>(&self, f: impl FnOnce(&mut ControlPlaneState) -> T) -> T {
        f(&mut self.inner.state.lock().expect("state lock"))
    }

    /// How often data planes should report load.
    pub(crate) fn load_report_interval_ms(&self) -> u32 {
        self.inner.settings.load_report_interval.as_millis() as u32
    }

    /// Reads the state.
    pub fn read<T>(&self, f: impl FnOnce(&ControlPlaneState) -> T) -> T {
        f(&self.inner.state.lock().expect("state lock"))
    }

    /// Where tenants' registry credentials come from (set once, by a federated cell).
    pub fn set_credentials(&self, source: Arc<dyn super::CredentialSource>) {
        let _ = self.inner.credentials.set(source);
    }

    /// The image `spec` runs, with its tenant's credentials for the registry when it has
    /// some (a lookup that fails pulls anonymously, and says so).
    async fn image_with_credentials(&self, spec: &FunctionSpec) -> Option<baton_proto::worker::Image> {
        let mut image = image_of(spec)?;
        let (Some(source), Some((tenant, _))) = (self.inner.credentials.get(), spec.name.split_once('.')) else {
            return Some(image);
        };
        let registry = baton_model::image::registry_of(&spec.image);
        match source.get(tenant, &registry).await {
            Ok(Some(login)) => {
                image.credentials = Some(baton_proto::worker::RegistryCredentials {
                    username: login.username,
                    password: login.password,
                })
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(
                function = spec.name, %registry, error = e,
                "the tenant's registry credentials could not be read; pulling anonymously"
            ),
        }
        Some(image)
    }

    /// Has every healthy worker that runs images pull `spec`'s image now, and waits (each
    /// pull bounded by `image_pull_timeout`). Returns how many have it; an error when none
    /// could get it, with a worker's reason.
    pub async fn pull_everywhere(&self, spec: &FunctionSpec) -> Result<usize, String> {
        let Some(image) = self.image_with_credentials(spec).await else { return Ok(0) };
        let workers = self.read(ControlPlaneState::image_workers);
        if workers.is_empty() {
            return Err("no worker of this cell runs container images".into());
        }
        let timeout = self.inner.settings.worker_call_timeout + self.inner.settings.image_pull_timeout;
        let pulls = workers.into_iter().map(|(node_id, address)| {
            let mut request =
                tonic::Request::new(PullImageRequest { node_id: node_id.to_string(), image: Some(image.clone()) });
            request.set_timeout(timeout);
            let mut client = self.client(&address);
            async move { client.pull_image(request).await.map_err(|s| format!("worker {node_id}: {}", s.message())) }
        });
        let results = futures::future::join_all(pulls).await;
        let pulled = results.iter().filter(|r| r.is_ok()).count();
        match results.into_iter().find_map(Result::err) {
            Some(error) if pulled == 0 => Err(error),
            _ => Ok(pulled),
        }
    }

    fn client(&self, address: &str) -> WorkerClient<Channel> {
        let mut channels = self.inner.channels.lock().expect("channels lock");
        let channel = channels.entry(address.to_string()).or_insert_with(|| {
            let endpoint = Endpoint::from_shared(format!("http://{address}"))
                .expect("worker addresses are host:port")
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(1));
            self.inner.settings.tls.channel(&endpoint)
        });
        WorkerClient::new(channel.clone())
    }

    async fn execute(self, command: Command) {
        let timeout = self.inner.settings.worker_call_timeout;
        match command {
            Command::Create { sandbox_id, node_id, address, spec } => {
                let requested = unix_micros();
                let mut sandbox = self.sandbox_spec(&spec);
                sandbox.image = self.image_with_credentials(&spec).await;
                let request = CreateSandboxRequest {
                    node_id: node_id.to_string(),
                    sandbox_id: sandbox_id.to_string(),
                    spec: Some(sandbox),
                };
                let mut request = tonic::Request::new(request);
                // A creation may pull the image first (unless it was pre-pulled).
                let pull = if spec.image.is_empty() { Duration::ZERO } else { self.inner.settings.image_pull_timeout };
                request.set_timeout(timeout + pull);
                let result = self
                    .client(&address)
                    .create_sandbox(request)
                    .await
                    .map(|r| {
                        let r = r.into_inner();
                        let l = r.latency.unwrap_or_default();
                        let creation = Creation {
                            took: Duration::from_micros(l.total_us),
                            requested_unix_us: requested,
                            answered_unix_us: unix_micros(),
                            phases: [l.image_us, l.cgroup_us, l.spawn_us, l.readiness_us].map(Duration::from_micros),
                        };
                        (r.endpoint, creation)
                    })
                    .map_err(|status| format!("{}: {}", status.code(), status.message()));
                crate::metrics::creation(result.is_ok());
                self.apply(|st| st.created(&sandbox_id, result, Instant::now()));
            }
            Command::Delete { sandbox_id, node_id, address, after, at_most } => {
                let retired = Instant::now();
                tokio::time::sleep(after).await;
                // A call a data plane sent just before the routing change may still run
                // there: wait while one reports it, within the function's timeout.
                let recheck = self.inner.settings.load_report_interval.max(Duration::from_millis(10));
                while retired.elapsed() < at_most && self.read(|st| st.holds_calls(sandbox_id.as_str(), Instant::now()))
                {
                    tokio::time::sleep(recheck).await;
                }
                let mut request = tonic::Request::new(DeleteSandboxRequest {
                    node_id: node_id.to_string(),
                    sandbox_id: sandbox_id.to_string(),
                    grace_period_ms: 0,
                });
                request.set_timeout(timeout);
                match self.client(&address).delete_sandbox(request).await {
                    Ok(_) => {}
                    Err(status) if status.code() == tonic::Code::NotFound => {}
                    Err(status) => {
                        tracing::warn!(sandbox = %sandbox_id, %status, "deleting a sandbox failed")
                    }
                }
                self.apply(|st| {
                    st.deleted(sandbox_id.as_str());
                    Vec::new()
                });
            }
            Command::List { node_id, address } => {
                let mut delay = Duration::from_millis(100);
                for _ in 0..10 {
                    let mut request = tonic::Request::new(ListSandboxesRequest { node_id: node_id.to_string() });
                    request.set_timeout(timeout);
                    match self.client(&address).list_sandboxes(request).await {
                        Ok(response) => {
                            let listed = response
                                .into_inner()
                                .sandboxes
                                .into_iter()
                                .filter_map(|s| {
                                    // A worker only lists IDs it accepted, so this is a
                                    // worker of another version or not ours.
                                    let Ok(sandbox_id) = SandboxId::new(s.sandbox_id.as_str()) else {
                                        tracing::warn!(node = %node_id, sandbox = ?s.sandbox_id, "ignoring a listed sandbox with an invalid ID");
                                        return None;
                                    };
                                    Some(ListedSandbox {
                                        running: s.state == SandboxState::Running as i32,
                                        sandbox_id,
                                        function: s.function_id,
                                        endpoint: s.endpoint,
                                    })
                                })
                                .collect();
                            self.apply(|st| st.worker_listing(&node_id, listed));
                            return;
                        }
                        Err(status) => {
                            tracing::debug!(node = %node_id, %status, "listing a worker's sandboxes failed; retrying");
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(2));
                        }
                    }
                }
                tracing::warn!(
                    node = %node_id,
                    "could not list the worker's sandboxes; scaling goes on without its listing \
                     (sandboxes it may hold are adopted or deleted when it next registers)"
                );
                self.read_mut(|st| st.listing_failed(node_id.as_str()));
            }
            Command::Pull { node_id, address, spec } => {
                let Some(image) = self.image_with_credentials(&spec).await else { return };
                let mut request =
                    tonic::Request::new(PullImageRequest { node_id: node_id.to_string(), image: Some(image) });
                request.set_timeout(timeout + self.inner.settings.image_pull_timeout);
                let outcome = match self.client(&address).pull_image(request).await {
                    Ok(r) if r.get_ref().cached => "cached",
                    Ok(_) => "pulled",
                    Err(status) => {
                        tracing::warn!(
                            node = %node_id, function = spec.name, image = spec.image, %status,
                            "pre-pulling an image failed; the first sandbox will pull it"
                        );
                        "failed"
                    }
                };
                crate::metrics::prepull(outcome);
            }
            Command::DropImage { node_id, address, digest } => {
                let mut request = tonic::Request::new(DropImageRequest { node_id: node_id.to_string(), digest });
                request.set_timeout(timeout);
                if let Err(status) = self.client(&address).drop_image(request).await {
                    tracing::debug!(node = %node_id, %status, "dropping an unused image failed; the cache evicts it");
                }
            }
            Command::Publish(_) => unreachable!("published under the state lock"),
        }
    }

    fn sandbox_spec(&self, spec: &FunctionSpec) -> SandboxSpec {
        SandboxSpec {
            function_id: spec.name.clone(),
            executable: spec.executable.clone(),
            args: spec.args.clone(),
            env: spec.env.clone().into_iter().collect(),
            port: None,
            resources: Some(baton_proto::worker::Resources {
                cpu_millis: spec.resources.cpu_millis,
                memory_mib: spec.resources.memory_mib,
                pids: self.inner.settings.sandbox_pids,
            }),
            readiness_timeout_ms: 0,
            readiness_path: String::new(),
            image: image_of(spec),
        }
    }

    async fn autoscale_loop(self, mut urgent: mpsc::UnboundedReceiver<String>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.inner.settings.autoscale_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let started = std::time::Instant::now();
                    let names = self.read(ControlPlaneState::function_names);
                    for name in names {
                        self.apply(|st| st.evaluate(&name, Instant::now()));
                    }
                    crate::metrics::decision(started.elapsed());
                    crate::metrics::totals(self.read(ControlPlaneState::totals));
                }
                Some(name) = urgent.recv() => {
                    let started = std::time::Instant::now();
                    self.apply(|st| st.evaluate(&name, Instant::now()));
                    crate::metrics::decision(started.elapsed());
                }
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    async fn health_loop(self, mut stop: watch::Receiver<bool>) {
        let period = (self.inner.settings.state.worker_timeout / 4).max(Duration::from_millis(50));
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = tick.tick() => { self.apply(|st| st.check_workers(Instant::now())); }
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

/// What a state operation returns that may hold commands.
pub(crate) trait Commands {
    fn commands(&self) -> &[Command];
}

impl Commands for Vec<Command> {
    fn commands(&self) -> &[Command] {
        self
    }
}

impl Commands for Option<Vec<Command>> {
    fn commands(&self) -> &[Command] {
        self.as_deref().unwrap_or(&[])
    }
}

impl Commands for (bool, Vec<Command>) {
    fn commands(&self) -> &[Command] {
        &self.1
    }
}

/// The image a function's sandboxes run, as a worker is asked for it; `None` for a process.
pub(crate) fn image_of(spec: &FunctionSpec) -> Option<baton_proto::worker::Image> {
    (!spec.image.is_empty()).then(|| baton_proto::worker::Image {
        reference: spec.image.clone(),
        digest: spec.image_digest.clone(),
        command: spec.command.clone(),
        port: spec.port.map_or(0, u32::from),
        credentials: None,
    })
}

/// Now as Unix microseconds (0 before 1970).
fn unix_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}
