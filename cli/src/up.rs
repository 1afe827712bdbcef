//! `baton up`: a complete federation on this machine from the workspace's binaries — one
//! shard manager, cells (each a `baton-cell` with the embedded store, or Redis with
//! `--redis`, and one process-runtime `baton-worker`), and a router — then a dev tenant,
//! a key, and the sample functions `echo` and `spin`. Writes `$BATON_HOME/env`; Ctrl-C
//! (or SIGTERM) stops every process it started, the workers deleting their sandboxes, and
//! removes its data folder. Logs are kept in `$BATON_HOME/logs/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use baton_proto::shard::shard_manager_client::ShardManagerClient;
use baton_proto::shard::{CreateApiKeyRequest, ListCellsRequest, PutTenantRequest};
use baton_service::tls::{Authority, Role, Tls};
use clap::Args;

use crate::observe::Target;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tonic::transport::Channel;

/// `baton up` options.
#[derive(Args)]
pub struct UpArgs {
    /// Router port: the tenant API and invocations (0: any free port).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Shard manager gRPC port (0: any free port).
    #[arg(long, default_value_t = 7500)]
    shard_manager_port: u16,
    /// Cells to start.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=16))]
    cells: u16,
    /// First port handed to sandboxes; each cell's worker takes the next 1,000.
    #[arg(long, default_value_t = 20000)]
    sandbox_ports: u16,
    /// Keep the cells' state in Redis at this URL instead of the embedded store.
    #[arg(long)]
    redis: Option<String>,
    /// Port of the local image registry (Debian's docker-registry) holding the sample
    /// image `samples/echo:1` (0: any free port). Started when docker-registry and runc
    /// are installed and baton up runs as root (workers run images only then).
    #[arg(long, default_value_t = 5000)]
    registry_port: u16,
    /// Also start a Prometheus (Debian's prometheus package) scraping every process, with
    /// baton's recording rules and alerts (infra/prometheus).
    #[arg(long)]
    observe: bool,
    /// Port of that Prometheus (0: any free port).
    #[arg(long, default_value_t = 9090)]
    prometheus_port: u16,
    /// Send the router's and cells' spans of calls to this OpenTelemetry collector
    /// (OTLP/gRPC, e.g. http://127.0.0.1:4317).
    #[arg(long)]
    otlp_endpoint: Option<String>,
    /// Share of calls traced with --otlp-endpoint (0 to 1).
    #[arg(long, default_value_t = 0.01, requires = "otlp_endpoint")]
    trace_sample_ratio: f64,
    /// The router and cells record no metrics (`[metrics] enabled = false`): for measuring
    /// what metrics cost (scripts/bench-observability-cost.sh).
    #[arg(long, conflicts_with = "observe")]
    no_metrics: bool,
}

impl UpArgs {
    /// The `[traces]` and `[metrics]` settings of the router and cells, as environment
    /// variables of their processes alone (the worker and shard manager have neither).
    fn observability_env(&self) -> Vec<(&'static str, String)> {
        let mut env = Vec::new();
        if let Some(endpoint) = &self.otlp_endpoint {
            env.push(("BATON_TRACES__OTLP_ENDPOINT", endpoint.clone()));
            env.push(("BATON_TRACES__SAMPLE_RATIO", self.trace_sample_ratio.to_string()));
        }
        if self.no_metrics {
            env.push(("BATON_METRICS__ENABLED", "false".to_string()));
        }
        env
    }
}

/// Lines of a failed process's log shown with the error.
const LOG_TAIL: usize = 5;

/// What says why a process stopped: the error its `main` returned (`Error: …` and its
/// causes, without a backtrace), or else the last lines it logged.
fn log_excerpt(text: &str) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    match lines.iter().rposition(|l| l.starts_with("Error: ")) {
        Some(start) => {
            lines[start..].iter().copied().take_while(|l| !l.starts_with("Stack backtrace:")).take(LOG_TAIL).collect()
        }
        None => lines[lines.len().saturating_sub(LOG_TAIL)..].to_vec(),
    }
}

/// The processes started, stopped (SIGTERM, then SIGKILL after 10 s) in reverse order
/// however `baton up` ends.
struct Processes {
    /// Name, process, log file.
    children: Vec<(String, Child, PathBuf)>,
    run_dir: PathBuf,
    /// The sample functions' copies, where the sandbox user can run them; removed last.
    functions: Option<tempfile::TempDir>,
    /// Processes whose exit was already reported.
    reported: std::collections::HashSet<String>,
    /// Every process's admin port, for `--observe`'s Prometheus.
    targets: Vec<Target>,
}

impl Processes {
    fn spawn(&mut self, name: &str, command: &mut Command, logs: &Path) -> anyhow::Result<()> {
        let path = logs.join(format!("{name}.log"));
        let log = std::fs::File::create(&path)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        self.children.push((name.to_string(), child, path));
        Ok(())
    }

    /// The first process that has exited and was not reported yet, if any: its name, and
    /// which, how and the end of its log.
    fn exited(&mut self) -> Option<(String, String)> {
        let reported = &self.reported;
        let (name, message) =
            self.children.iter_mut().filter(|(name, ..)| !reported.contains(name)).find_map(|(name, child, log)| {
                let status = child.try_wait().ok().flatten()?;
                let excerpt = log_excerpt(&std::fs::read_to_string(&*log).unwrap_or_default()).join("\n  ");
                Some((name.clone(), format!("{name} exited ({status}); from {}:\n  {excerpt}", log.display())))
            })?;
        self.reported.insert(name.clone());
        Some((name, message))
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        // Newest first: the router stops taking calls before the cells and workers go.
        while let Some((name, mut child, _)) = self.children.pop() {
            // An exited child is reaped already: its PID may belong to someone else now.
            if child.try_wait().ok().flatten().is_some() {
                continue;
            }
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    eprintln!("{name} did not stop within 10 s; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(crate::ports::free()?)
}

fn port_or_free(port: u16) -> anyhow::Result<u16> {
    if port == 0 { free_port() } else { Ok(port) }
}

async fn wait_port(port: u16, what: &str, processes: &mut Processes) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        if let Some((_, exited)) = processes.exited() {
            bail!("{what} did not start: {exited}");
        }
        if Instant::now() > deadline {
            bail!("{what} did not listen on port {port} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Runs `baton up` until a signal (which also interrupts the start).
pub async fn run(args: UpArgs, home: PathBuf) -> anyhow::Result<()> {
    let signal = baton_service::shutdown::ShutdownSignal::install();
    let stop = signal.wait();
    tokio::pin!(stop);
    let (run_dir, logs) = (home.join("run"), home.join("logs"));
    let mut processes = Processes {
        children: Vec::new(),
        run_dir: run_dir.clone(),
        functions: None,
        reported: Default::default(),
        targets: Vec::new(),
    };
    let interrupted = tokio::select! {
        started = start(&args, &home, &mut processes) => {
            started?;
            false
        }
        _ = &mut stop => true,
    };
    if !interrupted {
        println!("Logs: {}. Ctrl-C stops everything.", logs.display());
        tokio::select! {
            _ = &mut stop => println!("stopping…"),
            exited = watch(&mut processes) => eprintln!("{exited}\nstopping everything"),
        }
    }
    drop(processes);
    println!("stopped");
    Ok(())
}

/// Starts everything, deploys the samples, writes the env file.
async fn start(args: &UpArgs, home: &Path, processes: &mut Processes) -> anyhow::Result<()> {
    // The workers' sandboxes take 1,000 ports each from here: no process of ours gets one.
    crate::ports::avoid(args.sandbox_ports..args.sandbox_ports.saturating_add(args.cells.saturating_mul(1000)));
    let bin_dir = std::env::current_exe()?.parent().context("the baton binary's folder")?.to_path_buf();
    let bin = |name: &str| -> anyhow::Result<PathBuf> {
        let path = bin_dir.join(name);
        if !path.exists() {
            bail!("{} is missing: build every binary first (cargo build --release --bins)", path.display());
        }
        Ok(path)
    };
    for name in ["baton-shard-manager", "baton-cell", "baton-worker", "baton-router", "baton-fn-echo", "baton-fn-spin"]
    {
        bin(name)?;
    }
    let (run_dir, logs) = (home.join("run"), home.join("logs"));
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    std::fs::create_dir_all(&logs)?;

    let pki = Pki::create(&run_dir.join("tls"))?;
    // The key tenants' registry credentials are sealed with (removed with the run folder).
    let secrets_key = run_dir.join("secrets.key");
    let mut random = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut random)?;
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&secrets_key, &hex).with_context(|| format!("writing {}", secrets_key.display()))?;
    if args.observe {
        // Said now rather than after everything started.
        crate::observe::available().map_err(|why| anyhow::anyhow!("--observe: {why}"))?;
    }
    if let Some(endpoint) = &args.otlp_endpoint {
        let traces = baton_service::TracesConfig {
            otlp_endpoint: endpoint.clone(),
            sample_ratio: args.trace_sample_ratio,
            ..Default::default()
        };
        traces.validate().map_err(|e| anyhow::anyhow!("--otlp-endpoint, --trace-sample-ratio: {e}"))?;
    }
    let sm_port = port_or_free(args.shard_manager_port)?;
    let sm_url = format!("http://127.0.0.1:{sm_port}");
    let sm_admin = admin_target(&mut processes.targets, "baton-shard-manager", None)?;
    processes.spawn(
        "shard-manager",
        pki.give(
            Command::new(bin("baton-shard-manager")?)
                .args(["--listen", &format!("127.0.0.1:{sm_port}"), "--admin-listen", &sm_admin, "--data-dir"])
                .arg(run_dir.join("shard-manager"))
                .env("BATON_SECRETS__KEY_FILE", &secrets_key),
            Role::ShardManager,
        ),
        &logs,
    )?;
    wait_port(sm_port, "the shard manager", processes).await?;

    // Chosen now: the workers let sandboxes call functions through it.
    let router_port = port_or_free(args.port)?;
    for i in 1..=args.cells {
        let peers = Peers { sm_url: &sm_url, router_port, pki: &pki };
        start_cell(i, args, &peers, &run_dir, &logs, &bin, processes).await?;
    }
    let operator = pki.tls(Role::Operator)?;
    let channel = operator.connect_url(&sm_url).await.map_err(|e| anyhow::anyhow!("the shard manager: {e}"))?;
    let mut sm = ShardManagerClient::new(channel);
    wait_cells(&mut sm, args.cells.into(), processes).await?;
    let request = PutTenantRequest {
        name: "dev".into(),
        default_region: "local".into(),
        max_functions: 0,
        executables: true,
        ..Default::default()
    };
    sm.put_tenant(request).await.map_err(|s| anyhow::anyhow!("creating tenant dev: {}", s.message()))?;
    let key = sm
        .create_api_key(CreateApiKeyRequest { tenant: "dev".into() })
        .await
        .map_err(|s| anyhow::anyhow!("creating a key: {}", s.message()))?
        .into_inner()
        .key;

    let router_admin = admin_target(&mut processes.targets, "baton-router", None)?;
    // Async calls queue in the Redis the cells use, or in the router's own file.
    let queue = match &args.redis {
        Some(url) => ("BATON_ASYNC__REDIS_URL", url.clone()),
        None => ("BATON_ASYNC__PATH", run_dir.join("router-calls.redb").display().to_string()),
    };
    processes.spawn(
        "router",
        pki.give(
            Command::new(bin("baton-router")?)
                .args(["--listen", &format!("127.0.0.1:{router_port}"), "--admin-listen", &router_admin])
                .args(["--shard-managers", &sm_url])
                .env(queue.0, queue.1)
                // Local receivers of callbacks are the point of a local federation.
                .env("BATON_ASYNC__CALLBACK_PRIVATE_NETWORKS", "true")
                .envs(args.observability_env()),
            Role::Router,
        ),
        &logs,
    )?;
    wait_port(router_port, "the router", processes).await?;
    let url = format!("http://127.0.0.1:{router_port}");
    deploy_samples(&url, &key, &bin, processes).await?;
    let sample_image = match images_available() {
        Ok(()) => Some(start_registry(args.registry_port, &run_dir, &logs, &bin, processes).await?),
        Err(why) => {
            println!("No container images here: {why}.");
            None
        }
    };

    let (cert, key_file) = pki.files(Role::Operator);
    let mut env = format!(
        "export BATON_URL={url}\nexport BATON_API_KEY={key}\nexport BATON_SHARD_MANAGER={sm_url}\n\
         export BATON_CA={}\nexport BATON_CERT={}\nexport BATON_KEY={}\n",
        pki.ca().display(),
        cert.display(),
        key_file.display()
    );
    if let Some(image) = &sample_image {
        env.push_str(&format!("export BATON_SAMPLE_IMAGE={image}\n"));
    }
    if args.observe {
        let url = start_prometheus(args.prometheus_port, &run_dir, &logs, processes).await?;
        env.push_str(&format!("export BATON_PROMETHEUS_URL={url}\n"));
    }
    let env_file = home.join("env");
    write_private(&env_file, &env).with_context(|| format!("writing {}", env_file.display()))?;
    println!("baton is up: {} cells, a router on {url}, tenant dev with echo and spin.\n", args.cells);
    print!("{env}");
    println!("\n(written to {}) Try:\n", env_file.display());
    println!("  source {} && {} invoke echo -d hello\n", env_file.display(), bin_dir.join("baton").display());
    if sample_image.is_some() {
        println!("and a container image from the local registry:\n");
        println!("  baton functions deploy hello --image $BATON_SAMPLE_IMAGE && baton invoke hello -d '{{\"x\":1}}'\n");
    }

    Ok(())
}

/// A free port for the admin endpoints of a process of `job`, recorded as a target to
/// scrape; returns the listen address.
fn admin_target(targets: &mut Vec<Target>, job: &'static str, cell: Option<&str>) -> anyhow::Result<String> {
    let address = format!("127.0.0.1:{}", free_port()?);
    targets.push(Target { job, address: address.clone(), cell: cell.map(str::to_string) });
    Ok(address)
}

/// Starts a Prometheus on `port` scraping every process started with baton's rules;
/// returns its URL.
async fn start_prometheus(port: u16, run_dir: &Path, logs: &Path, processes: &mut Processes) -> anyhow::Result<String> {
    let dir = run_dir.join("prometheus");
    let config =
        crate::observe::write(&dir, &processes.targets).with_context(|| format!("writing {}", dir.display()))?;
    let port = port_or_free(port)?;
    processes.spawn(
        "prometheus",
        Command::new(crate::observe::PROGRAM)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=1d"),
        logs,
    )?;
    wait_port(port, "prometheus", processes).await?;
    let url = format!("http://127.0.0.1:{port}");
    println!("Prometheus on {url}, scraping every process every {} with baton's rules.", crate::observe::INTERVAL);
    Ok(url)
}

/// Writes `text` to `path`, readable by this user only (mode 0600): it holds an API key.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    // A file left by an older `baton up` keeps its mode when opened: set it.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes())
}

/// Resolves when a process the federation cannot do without exits (the shard manager, the
/// router, the registry, Prometheus). A cell or a worker that exits is reported and the
/// rest goes on, as a federation does: the shard manager fails the cell's functions over
/// to the others (try it: kill one).
async fn watch(processes: &mut Processes) -> String {
    loop {
        if let Some((name, exited)) = processes.exited() {
            if !name.starts_with("cell-") {
                return exited;
            }
            eprintln!("{exited}\nthe federation goes on without it: its functions fail over to the other cells");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Where a cell and its worker find the rest of the federation.
struct Peers<'a> {
    /// The shard manager's URL.
    sm_url: &'a str,
    /// The router's port (sandboxes may call functions through it).
    router_port: u16,
    /// The certificates.
    pki: &'a Pki,
}

async fn start_cell(
    i: u16,
    args: &UpArgs,
    peers: &Peers<'_>,
    run_dir: &Path,
    logs: &Path,
    bin: &impl Fn(&str) -> anyhow::Result<PathBuf>,
    processes: &mut Processes,
) -> anyhow::Result<()> {
    let id = format!("cell-{i}");
    let cell_admin = admin_target(&mut processes.targets, "baton-cell", Some(&id))?;
    let worker_admin = admin_target(&mut processes.targets, "baton-worker", Some(&id))?;
    let (control, http, worker) = (free_port()?, free_port()?, free_port()?);
    let store = match &args.redis {
        Some(url) => format!("redis_url = {url:?}"),
        None => format!("path = {:?}", run_dir.join(format!("{id}.redb")).display().to_string()),
    };
    let cell_toml = run_dir.join(format!("{id}.toml"));
    std::fs::write(
        &cell_toml,
        format!(
            "[cell]\nid = \"{id}\"\nadmin_listen = \"{cell_admin}\"\n[control_plane]\nlisten = \"127.0.0.1:{control}\"\n\
             [data_plane]\nlisten = \"127.0.0.1:{http}\"\n[store]\n{store}\n[federation]\nshard_manager = \"{sm_url}\"\n",
            sm_url = peers.sm_url
        ),
    )?;
    let mut cell = Command::new(bin("baton-cell")?);
    cell.envs(args.observability_env());
    processes.spawn(&id, peers.pki.give(cell.arg("--config").arg(&cell_toml), Role::Cell), logs)?;
    wait_port(control, &id, processes).await?;
    let first = args.sandbox_ports + 1000 * (i - 1);
    let worker_toml = run_dir.join(format!("{id}-worker.toml"));
    std::fs::write(
        &worker_toml,
        format!(
            "[worker]\nnode_id = \"{id}-w1\"\nlisten = \"127.0.0.1:{worker}\"\nadmin_listen = \"{worker_admin}\"\n\
             state_dir = {state:?}\non_shutdown = \"delete\"\n[process]\nport_range_start = {first}\n\
             port_range_end = {last}\ncgroup_parent = \"baton-up-{pid}-{id}\"\n\
             [process.network]\nfilter = {filter}\nlocal_ports = [{router_port}]\n\
             [control_plane]\n\
             address = \"http://127.0.0.1:{control}\"\n",
            state = run_dir.join(format!("{id}-worker")).display().to_string(),
            last = first + 999,
            pid = std::process::id(),
            filter = network_filter(),
            router_port = peers.router_port,
        ),
    )?;
    processes.spawn(
        &format!("{id}-worker"),
        peers.pki.give(Command::new(bin("baton-worker")?).arg("--config").arg(&worker_toml), Role::Worker),
        logs,
    )?;
    wait_port(worker, &format!("{id}'s worker"), processes).await
}

/// The private authority of one `baton up` and a certificate per role, under
/// `$BATON_HOME/run/tls/` (removed with the run folder): every connection between its
/// processes is mutual TLS, and the CLI gets the operator's through `$BATON_HOME/env`.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn create(dir: &Path) -> anyhow::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().mode(0o700).create(dir).with_context(|| format!("creating {}", dir.display()))?;
        let authority = Authority::generate("baton up")?;
        std::fs::write(dir.join("ca.pem"), authority.cert_pem())?;
        for role in [Role::ShardManager, Role::Cell, Role::Worker, Role::Router, Role::Operator] {
            let issued = authority.issue(role, &["127.0.0.1", "localhost"])?;
            std::fs::write(dir.join(format!("{}.pem", role.as_str())), issued.cert_pem)?;
            write_private(&dir.join(format!("{}.key", role.as_str())), &issued.key_pem)?;
        }
        // The authority's key is not kept: nothing issues certificates after start.
        Ok(Self { dir: dir.to_path_buf() })
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn files(&self, role: Role) -> (PathBuf, PathBuf) {
        (self.dir.join(format!("{}.pem", role.as_str())), self.dir.join(format!("{}.key", role.as_str())))
    }

    /// `command` with the `[tls]` of `role` in its environment.
    fn give<'c>(&self, command: &'c mut Command, role: Role) -> &'c mut Command {
        let (cert, key) = self.files(role);
        command
            .env("BATON_TLS__CA", self.ca())
            .env("BATON_TLS__CERT", cert)
            .env("BATON_TLS__KEY", key)
            .env_remove("BATON_TLS__PLAINTEXT")
    }

    fn tls(&self, role: Role) -> anyhow::Result<Tls> {
        let (cert, key) = self.files(role);
        Ok(Tls::for_tool(Some(&self.ca()), Some(&cert), Some(&key), role)?)
    }
}

/// Whether the workers filter their sandboxes' connections: always where `nft` runs; on a
/// machine without nftables, `baton up` still starts, saying once what that leaves open.
fn network_filter() -> bool {
    static FILTER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FILTER.get_or_init(|| {
        let works = Command::new("nft").arg("--version").output().is_ok_and(|o| o.status.success());
        if !works && nix::unistd::geteuid().is_root() {
            eprintln!(
                "warning: nftables (nft) is not installed, so sandboxes can connect to this machine's ports; \
                 install it (apt-get install nftables) for the packet filter"
            );
        }
        works
    })
}

async fn wait_cells(
    sm: &mut ShardManagerClient<Channel>,
    cells: usize,
    processes: &mut Processes,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(listed) = sm.list_cells(ListCellsRequest {}).await
            && listed.into_inner().cells.iter().filter(|c| c.state == "active").count() >= cells
        {
            return Ok(());
        }
        if let Some((_, exited)) = processes.exited() {
            bail!("the cells did not all register: {exited}");
        }
        if Instant::now() > deadline {
            bail!("the cells did not register with the shard manager within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether this machine's workers run images: root, runc and a registry to hold them.
fn images_available() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("workers run container images only as root".into());
    }
    for (program, package) in [("runc", "runc"), ("docker-registry", "docker-registry")] {
        if Command::new(program).arg("--version").output().is_err() {
            return Err(format!("{program} is not installed (apt-get install {package})"));
        }
    }
    Ok(())
}

/// Starts a registry on `port` holding the sample image (`baton-fn-echo` and the libraries
/// it loads); returns the image's reference.
async fn start_registry(
    port: u16,
    run_dir: &Path,
    logs: &Path,
    bin: &impl Fn(&str) -> anyhow::Result<PathBuf>,
    processes: &mut Processes,
) -> anyhow::Result<String> {
    let port = port_or_free(port)?;
    let config = run_dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            run_dir.join("registry").display()
        ),
    )?;
    processes.spawn("registry", Command::new("docker-registry").arg("serve").arg(&config), logs)?;
    wait_port(port, "the image registry", processes).await?;
    let image = format!("127.0.0.1:{port}/samples/echo:1");
    let files = baton_image::build::program_with_libraries(&bin("baton-fn-echo")?, "/usr/local/bin/baton-fn-echo")
        .context("packing baton-fn-echo into the sample image")?;
    let layer = baton_image::build::layer(&files).context("packing the sample image's layer")?;
    let run =
        baton_image::build::RunConfig { entrypoint: vec!["/usr/local/bin/baton-fn-echo".into()], ..Default::default() };
    let settings = baton_image::ResolverSettings::default();
    baton_image::build::push(&image, vec![layer], &run, &baton_image::Credentials::Anonymous, &settings)
        .await
        .map_err(|e| anyhow::anyhow!("pushing the sample image: {e}"))?;
    Ok(image)
}

/// Deploys `echo` and `spin` through the router and waits until `echo` answers.
async fn deploy_samples(
    url: &str,
    key: &str,
    bin: &impl Fn(&str) -> anyhow::Result<PathBuf>,
    processes: &mut Processes,
) -> anyhow::Result<()> {
    // Sandboxes run as the unprivileged sandbox user, who may not reach the checkout (one
    // under /root, say): the samples run from copies in a folder everyone may enter.
    let functions =
        tempfile::Builder::new().prefix("baton-up-functions-").tempdir().context("a folder for the samples")?;
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    for (name, binary) in [("echo", "baton-fn-echo"), ("spin", "baton-fn-spin")] {
        let copy = baton_worker::process::reachable_copy(&bin(binary)?, functions.path())
            .with_context(|| format!("copying {binary}"))?;
        let spec = serde_json::json!({
            "name": name,
            "executable": copy.display().to_string(),
            "resources": {"cpu_millis": 100, "memory_mib": 64},
        });
        loop {
            // The router answers 401 until its map holds the new key.
            let answer = client.post(format!("{url}/v1/functions")).bearer_auth(key).json(&spec).send().await;
            match answer {
                Ok(a) if a.status().is_success() => break,
                Ok(a) if a.status() != 401 && a.status() != 503 => {
                    bail!("deploying {name}: {} {}", a.status(), a.text().await.unwrap_or_default())
                }
                _ if Instant::now() > deadline => bail!("the router did not take {name} within 30 s"),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
    processes.functions = Some(functions);
    loop {
        let answer = client.post(format!("{url}/function/echo")).bearer_auth(key).body("ready?").send().await;
        if answer.is_ok_and(|a| a.status() == 200) {
            return Ok(());
        }
        if let Some((_, exited)) = processes.exited() {
            bail!("echo did not answer: {exited}");
        }
        if Instant::now() > deadline {
            bail!("echo did not answer through the router within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_excerpt_is_the_error_and_its_causes_without_the_backtrace() {
        let log = "INFO starting\nError: opening the store: refused\n\nCaused by:\n    0: refused\n\nStack backtrace:\n   0: main\n";
        assert_eq!(log_excerpt(log), ["Error: opening the store: refused", "Caused by:", "    0: refused"]);
        let log: String = (1..=8).map(|i| format!("line {i}\n")).collect();
        assert_eq!(log_excerpt(&log), ["line 4", "line 5", "line 6", "line 7", "line 8"], "no error: the last lines");
    }
}
