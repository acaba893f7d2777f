//! The agent's main loop (upstream `felix/daemon` + `InternalDataplane`): syncer and interface
//! monitor in, calculation graph, nftables dataplane and endpoint manager out.
//!
//! Ordering guarantees:
//! - nothing touches the kernel before the datastore *and* the interface monitor are in sync;
//! - the first nft apply replaces our table atomically (reconciling a previous run's table
//!   without an enforcement gap); later applies are incremental;
//! - `applied_revision` moves to the revision of the last processed datastore event only after
//!   the nft transaction and the endpoint pass that carry its effects succeeded.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use calico_datastore::client::Client;
use calico_datastore::{KvStore, Revision};
use calico_linux::nft::{Nft, NftCli, NftError, TableFamily};
use calico_linux::{Netlink, ProcSysctl, RtNetlink, Sysctl};
use calico_model::{AnyResource, KindInfo};
use felix_calc::msg::{ToDataplane, WorkloadEndpointId};
use felix_calc::{CalcGraph, Update};
use felix_nft::{NftDataplane, PoolNat};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use crate::config::{ConfigError, FelixConfig, Layer, Merged};
use crate::endpoints::{EndpointConfig, EndpointManager, EndpointStatus};
use crate::ifacemon::{self, IfaceEvent};
use crate::report::{self, EndpointReporter};
use crate::status::{self, Health, Metrics, resync_state};
use crate::syncer::{SyncEvent, Syncer, update_kind};

/// Why the agent stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Shutdown was requested (SIGTERM/SIGINT).
    Shutdown,
    /// A configuration change needs a new process (listeners, address families); the
    /// supervisor restarts Felix.
    RestartRequired(String),
}

/// Exit status of `calico-felix` when a configuration change needs a restart.
pub const RESTART_EXIT_CODE: i32 = 129;

/// Errors that stop the agent before its main loop runs.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("datastore configuration: {0}")]
    Datastore(#[from] calico_datastore::config::ConfigError),
    #[error("netlink: {0}")]
    Netlink(#[from] calico_linux::NetlinkError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("{what} server on {addr}: {source}")]
    Listen {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
}

/// An [`Nft`] that counts calls and errors (`felix_nft_calls` / `felix_nft_errors`).
#[derive(Clone)]
struct CountingNft {
    inner: Arc<dyn Nft>,
    metrics: Arc<Metrics>,
}

#[async_trait]
impl Nft for CountingNft {
    async fn apply(&self, script: &str) -> Result<(), NftError> {
        self.metrics.nft_calls.inc();
        let r = self.inner.apply(script).await;
        if r.is_err() {
            self.metrics.nft_errors.inc();
        }
        r
    }
    async fn list_table(
        &self,
        family: TableFamily,
        name: &str,
    ) -> Result<Option<serde_json::Value>, NftError> {
        self.metrics.nft_calls.inc();
        let r = self.inner.list_table(family, name).await;
        if r.is_err() {
            self.metrics.nft_errors.inc();
        }
        r
    }
    async fn delete_table(&self, family: TableFamily, name: &str) -> Result<bool, NftError> {
        self.metrics.nft_calls.inc();
        self.inner.delete_table(family, name).await
    }
    async fn apply_elements(
        &self,
        family: TableFamily,
        table: &str,
        changes: &[calico_linux::nft::ElementChange],
    ) -> Result<(), NftError> {
        self.metrics.nft_calls.inc();
        let r = self.inner.apply_elements(family, table, changes).await;
        if r.is_err() {
            self.metrics.nft_errors.inc();
        }
        r
    }
}

/// A drift check's listing of our table, running as its own task.
type DriftListing = tokio::task::JoinHandle<Result<Option<serde_json::Value>, NftError>>;

/// Applies a `LogSeverityScreen` value to the process's logging.
pub type LogLevelSetter = Box<dyn Fn(&str) + Send + Sync>;

/// Everything the process needs to start.
pub struct Startup {
    pub env: BTreeMap<String, String>,
    pub kv: Arc<dyn KvStore>,
    /// Set by the caller when a readiness gate from outside (felix-routes) should be added.
    pub readiness_gates: Vec<(String, watch::Receiver<bool>)>,
    /// Called with `LogSeverityScreen` whenever it changes (live log level).
    pub set_log_level: Option<LogLevelSetter>,
}

/// Reads the FelixConfiguration layers (`node.<node>`, `default`) once, retrying while the
/// datastore is unreachable.
async fn initial_layers(
    client: &Client,
    node: &str,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(Option<Layer>, Option<Layer>)> {
    let Some(kind) = KindInfo::lookup("FelixConfiguration") else {
        return Some((None, None));
    };
    let mut delay = Duration::from_millis(200);
    loop {
        let mut out = Vec::new();
        let mut failed = None;
        for name in [format!("node.{node}"), "default".to_string()] {
            match client.get(kind, "", &name).await {
                Ok(res) => out.push(spec_layer(&name, &res)),
                Err(e) if e.is_not_found() => out.push(None),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        match failed {
            None => {
                let global = out.pop().flatten();
                let node_layer = out.pop().flatten();
                return Some((node_layer, global));
            }
            Some(e) => warn!(error = %e, "reading FelixConfiguration failed; retrying"),
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return None,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

fn spec_layer(name: &str, res: &AnyResource) -> Option<Layer> {
    match res {
        AnyResource::FelixConfiguration(r) => Some(Layer::from_spec(name, &r.spec)),
        _ => None,
    }
}

fn merged(env: &Layer, node: &Option<Layer>, global: &Option<Layer>) -> Merged {
    let mut layers: Vec<&Layer> = vec![env];
    layers.extend(node.iter());
    layers.extend(global.iter());
    Merged::new(&layers)
}

fn endpoint_config(cfg: &FelixConfig) -> EndpointConfig {
    EndpointConfig {
        device_route_protocol: cfg.device_route_protocol,
        remove_external_routes: cfg.remove_external_routes,
        ipv6: cfg.ipv6_support,
        status_dir: (!cfg.endpoint_status_path_prefix.as_os_str().is_empty())
            .then(|| cfg.endpoint_status_path_prefix.join("endpoint-status")),
        workload_prefixes: cfg.interface_prefixes.clone(),
        interface_exclude: cfg.interface_exclude.clone(),
    }
}

fn ticker(period: Duration) -> Option<tokio::time::Interval> {
    (!period.is_zero()).then(|| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    })
}

async fn tick(t: &mut Option<tokio::time::Interval>) {
    match t {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Runs Felix until shutdown or a restart-requiring configuration change.
pub async fn run(start: Startup, shutdown: watch::Receiver<bool>) -> Result<Exit, AgentError> {
    run_with(start, None, shutdown).await
}

/// The kernel touchpoints the agent uses; [`KernelDeps::real`] in production, fakes in tests.
pub struct KernelDeps {
    pub nft: Arc<dyn Nft>,
    pub netlink: Arc<dyn Netlink>,
    pub sysctl: Arc<dyn Sysctl>,
}

impl KernelDeps {
    /// `nft` from PATH, rtnetlink and /proc/sys of the process's own namespace.
    pub fn real() -> Result<KernelDeps, AgentError> {
        Ok(KernelDeps {
            nft: Arc::new(NftCli::new()),
            netlink: Arc::new(RtNetlink::connect()?),
            sysctl: Arc::new(ProcSysctl::new()),
        })
    }
}

/// [`run`] with the given kernel touchpoints (`None`: the real ones).
pub async fn run_with(
    start: Startup,
    kernel: Option<KernelDeps>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Exit, AgentError> {
    let node = crate::config::node_name(&start.env);
    let env_layer = Layer::from_env(&start.env);
    // Validate the environment alone first, so a typo fails fast and names its variable.
    FelixConfig::from_merged(&node, &Merged::new(&[&env_layer]))?;
    let client = Client::new(Arc::clone(&start.kv));
    let Some((node_layer, global_layer)) = initial_layers(&client, &node, &mut shutdown).await
    else {
        return Ok(Exit::Shutdown);
    };
    let m = merged(&env_layer, &node_layer, &global_layer);
    let cfg = FelixConfig::from_merged(&node, &m)?;
    if let Some(f) = &start.set_log_level {
        f(&cfg.log_severity_screen);
    }
    info!(node = %node, ?cfg, "felix starting");

    let health = Health::new();
    for (name, rx) in start.readiness_gates {
        health.add_readiness_gate(&name, rx);
    }
    let metrics = Metrics::new(&node)?;
    metrics.resync_state.set(resync_state::WAIT_FOR_DATASTORE);
    let mut servers = Vec::new();
    if cfg.health_enabled {
        let addr = status::resolve(&cfg.health_host, cfg.health_port)
            .await
            .map_err(|source| AgentError::Listen {
                what: "health",
                addr: format!("{}:{}", cfg.health_host, cfg.health_port),
                source,
            })?;
        servers.push(
            status::serve(
                "health",
                addr,
                status::health_router(Arc::clone(&health)),
                shutdown.clone(),
            )
            .await
            .map_err(|source| AgentError::Listen {
                what: "health",
                addr: addr.to_string(),
                source,
            })?,
        );
    }
    if cfg.prometheus_metrics_enabled {
        let addr = status::resolve(&cfg.prometheus_metrics_host, cfg.prometheus_metrics_port)
            .await
            .map_err(|source| AgentError::Listen {
                what: "metrics",
                addr: format!(
                    "{}:{}",
                    cfg.prometheus_metrics_host, cfg.prometheus_metrics_port
                ),
                source,
            })?;
        servers.push(
            status::serve(
                "metrics",
                addr,
                status::metrics_router(Arc::clone(&metrics)),
                shutdown.clone(),
            )
            .await
            .map_err(|source| AgentError::Listen {
                what: "metrics",
                addr: addr.to_string(),
                source,
            })?,
        );
    }

    let kernel = match kernel {
        Some(k) => k,
        None => KernelDeps::real()?,
    };
    let (netlink, sysctl) = (kernel.netlink, kernel.sysctl);

    // Inner shutdown for our own tasks, so a restart exit stops them too.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (sync_tx, sync_rx) = mpsc::channel(1024);
    tokio::spawn(Syncer::new(Arc::clone(&start.kv), sync_tx).run(stop_rx.clone()));
    let (if_tx, if_rx) = mpsc::channel(1024);
    tokio::spawn(ifacemon::run(
        Arc::clone(&netlink),
        cfg.interface_refresh_interval,
        if_tx,
        stop_rx.clone(),
    ));
    if route_sync_enabled(&start.env) {
        let (ready_tx, ready_rx) = watch::channel(false);
        health.add_readiness_gate("felix-routes", ready_rx);
        tokio::spawn(route_sync(
            Arc::clone(&start.kv),
            node.clone(),
            routes_config(&start.env, &cfg),
            ready_tx,
            stop_rx.clone(),
        ));
    }
    let (cfg_tx, cfg_rx) = watch::channel(cfg.clone());
    let (ep_tx, ep_rx) = watch::channel(BTreeMap::new());
    tokio::spawn(reporter(
        Arc::clone(&start.kv),
        Arc::clone(&health),
        cfg_rx,
        ep_rx,
        stop_rx.clone(),
    ));

    let mut agent = Agent::new(AgentParts {
        node,
        env_layer,
        node_layer,
        global_layer,
        restart_key: m.restart_key(),
        cfg,
        kernel: KernelDeps {
            nft: kernel.nft,
            netlink,
            sysctl,
        },
        health: Arc::clone(&health),
        metrics,
        cfg_tx,
        ep_tx,
        set_log_level: start.set_log_level,
    });
    let exit = agent.main_loop(sync_rx, if_rx, &mut shutdown).await;
    let _ = stop_tx.send(true);
    for s in servers {
        s.abort();
    }
    Ok(exit)
}

struct Agent {
    node: String,
    env_layer: Layer,
    node_layer: Option<Layer>,
    global_layer: Option<Layer>,
    restart_key: Vec<(String, String)>,
    cfg: FelixConfig,
    cfg_tx: watch::Sender<FelixConfig>,
    ep_tx: watch::Sender<BTreeMap<WorkloadEndpointId, EndpointStatus>>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    graph: CalcGraph,
    nft: NftDataplane<CountingNft>,
    eps: EndpointManager,
    sysctl: Arc<dyn Sysctl>,
    set_log_level: Option<LogLevelSetter>,
    pools: BTreeMap<String, PoolNat>,
    /// Cluster-wide resource identities by kind (for the `felix_cluster_*` gauges).
    /// Per kind, a 64-bit hash of each resource's (namespace, name): only counted for the
    /// `felix_cluster_num_*` gauges, so the names themselves are not kept.
    cluster: BTreeMap<&'static str, std::collections::HashSet<u64>>,
    pending_rev: Revision,
    ds_in_sync: bool,
    if_in_sync: bool,
    graph_dirty: bool,
    nft_dirty: bool,
    eps_dirty: bool,
    nft_resync_due: bool,
    /// The periodic drift check's listing of our table, running beside the loop (listing a
    /// large table takes longer than most changes), with the dataplane generation it started
    /// at; and how many listings in a row came back stale.
    drift_listing: Option<(u64, DriftListing)>,
    stale_listings: u32,
    applied_once: bool,
    retry_at: Option<Instant>,
    retry_delay: Duration,
    grace_at: Option<Instant>,
    started: Instant,
    restart: Option<String>,
    active_policies: BTreeSet<felix_calc::msg::PolicyId>,
    active_sets: BTreeSet<String>,
}

const MAX_BATCH: usize = 1000;

/// What [`Agent::new`] needs.
struct AgentParts {
    node: String,
    env_layer: Layer,
    node_layer: Option<Layer>,
    global_layer: Option<Layer>,
    restart_key: Vec<(String, String)>,
    cfg: FelixConfig,
    kernel: KernelDeps,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    cfg_tx: watch::Sender<FelixConfig>,
    ep_tx: watch::Sender<BTreeMap<WorkloadEndpointId, EndpointStatus>>,
    set_log_level: Option<LogLevelSetter>,
}

impl Agent {
    fn new(p: AgentParts) -> Agent {
        let nft = CountingNft {
            inner: p.kernel.nft,
            metrics: Arc::clone(&p.metrics),
        };
        Agent {
            restart_key: p.restart_key,
            env_layer: p.env_layer,
            node_layer: p.node_layer,
            global_layer: p.global_layer,
            nft: NftDataplane::new(nft, p.cfg.nft_config()),
            eps: EndpointManager::new(
                p.kernel.netlink,
                Arc::clone(&p.kernel.sysctl),
                endpoint_config(&p.cfg),
            ),
            sysctl: p.kernel.sysctl,
            set_log_level: p.set_log_level,
            graph: CalcGraph::new(p.node.clone()),
            node: p.node,
            cfg: p.cfg,
            cfg_tx: p.cfg_tx,
            ep_tx: p.ep_tx,
            health: p.health,
            metrics: p.metrics,
            pools: BTreeMap::new(),
            cluster: BTreeMap::new(),
            pending_rev: 0,
            ds_in_sync: false,
            if_in_sync: false,
            graph_dirty: false,
            nft_dirty: true,
            eps_dirty: true,
            nft_resync_due: false,
            drift_listing: None,
            stale_listings: 0,
            applied_once: false,
            retry_at: None,
            retry_delay: Duration::from_millis(100),
            grace_at: None,
            started: Instant::now(),
            restart: None,
            active_policies: BTreeSet::new(),
            active_sets: BTreeSet::new(),
        }
    }

    async fn main_loop(
        &mut self,
        mut sync_rx: mpsc::Receiver<SyncEvent>,
        mut if_rx: mpsc::Receiver<IfaceEvent>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Exit {
        let mut nft_tick = ticker(self.cfg.nft_refresh_interval);
        let mut route_tick = ticker(self.cfg.route_refresh_interval);
        let mut beat = tokio::time::interval(Duration::from_secs(5));
        let mut if_open = true;
        let mut intervals = (
            self.cfg.nft_refresh_interval,
            self.cfg.route_refresh_interval,
        );
        loop {
            self.health.beat();
            let deadline = [self.retry_at, self.grace_at].into_iter().flatten().min();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            let mut listing = self.drift_listing.take();
            let listing_done = async {
                match listing.as_mut() {
                    Some((_, h)) => h.await,
                    None => std::future::pending().await,
                }
            };
            let mut listed = None;
            let mut drift_tick = false;
            tokio::select! {
                _ = shutdown.changed() => {
                    info!("shutting down; the dataplane stays programmed");
                    return Exit::Shutdown;
                }
                ev = sync_rx.recv() => {
                    let Some(ev) = ev else {
                        error!("datastore syncer stopped");
                        return Exit::RestartRequired("datastore syncer stopped".into());
                    };
                    self.on_sync(ev);
                    for _ in 0..MAX_BATCH {
                        match sync_rx.try_recv() {
                            Ok(ev) => self.on_sync(ev),
                            Err(_) => break,
                        }
                    }
                }
                ev = if_rx.recv(), if if_open => {
                    if ev.is_none() {
                        // Only on shutdown, or if the monitor task died; the periodic route
                        // pass keeps working from the last known interfaces.
                        warn!("interface monitor stopped");
                        if_open = false;
                    }
                    if let Some(ev) = ev {
                        self.on_iface(ev);
                        for _ in 0..MAX_BATCH {
                            match if_rx.try_recv() {
                                Ok(ev) => self.on_iface(ev),
                                Err(_) => break,
                            }
                        }
                    }
                }
                () = tick(&mut nft_tick) => drift_tick = true,
                res = listing_done => listed = Some(res),
                () = tick(&mut route_tick) => self.eps_dirty = true,
                () = sleep => {
                    let now = Instant::now();
                    if self.grace_at.is_some_and(|g| g <= now) {
                        self.grace_at = None;
                        self.eps_dirty = true;
                    }
                    if self.retry_at.is_some_and(|r| r <= now) {
                        self.retry_at = None;
                    }
                }
                _ = beat.tick() => {}
            }
            match (listed, listing) {
                (Some(res), Some((generation, _))) => self.on_drift_listing(generation, res).await,
                (_, pending) => self.drift_listing = pending,
            }
            if drift_tick {
                self.start_drift_listing();
            }
            if let Some(why) = self.restart.take() {
                return Exit::RestartRequired(why);
            }
            let now_intervals = (
                self.cfg.nft_refresh_interval,
                self.cfg.route_refresh_interval,
            );
            if now_intervals != intervals {
                intervals = now_intervals;
                nft_tick = ticker(intervals.0);
                route_tick = ticker(intervals.1);
            }
            let first_pending = !self.applied_once;
            self.maybe_apply().await;
            if first_pending && self.applied_once {
                // The first (full) apply of a big table can outlast the refresh interval; the
                // first drift check comes one interval after it, not as the missed tick.
                nft_tick = ticker(intervals.0);
            }
        }
    }

    fn count(&mut self, update: &Update) {
        let hash = |ns: &str, name: &str| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (ns, name).hash(&mut h);
            h.finish()
        };
        let (kind, id, present) = match update {
            Update::Upsert(r) => {
                let m = r.metadata();
                (r.kind(), hash(&m.namespace, &m.name), true)
            }
            Update::Delete(id) => {
                let Some(k) = calico_model::KINDS.iter().find(|k| k.kind == id.kind) else {
                    return;
                };
                (k.kind, hash(&id.namespace, &id.name), false)
            }
            Update::InSync => return,
        };
        let set = self.cluster.entry(kind).or_default();
        if present {
            set.insert(id);
        } else {
            set.remove(&id);
        }
        let n = |s: &BTreeMap<&'static str, std::collections::HashSet<u64>>, k: &str| {
            i64::try_from(s.get(k).map_or(0, std::collections::HashSet::len)).unwrap_or(i64::MAX)
        };
        let m = &self.metrics;
        m.cluster_num_workload_endpoints
            .set(n(&self.cluster, "WorkloadEndpoint"));
        m.cluster_num_host_endpoints
            .set(n(&self.cluster, "HostEndpoint"));
        m.cluster_num_policies
            .set(n(&self.cluster, "NetworkPolicy") + n(&self.cluster, "GlobalNetworkPolicy"));
        m.cluster_num_profiles.set(n(&self.cluster, "Profile"));
        m.cluster_num_tiers.set(n(&self.cluster, "Tier"));
    }

    fn on_sync(&mut self, ev: SyncEvent) {
        match ev {
            SyncEvent::Update { update, revision } => {
                self.pending_rev = self.pending_rev.max(revision);
                self.count(&update);
                let kind = update_kind(&update).to_string();
                match kind.as_str() {
                    "FelixConfiguration" => self.on_felix_config(&update),
                    "IPPool" => self.on_pool(&update),
                    _ => {}
                }
                let t = Instant::now();
                if let Err(e) = self.graph.apply(update) {
                    warn!(error = %e, "resource treated as deleted");
                }
                self.metrics
                    .calc_update_time
                    .observe(t.elapsed().as_secs_f64());
                self.graph_dirty = true;
            }
            SyncEvent::InSync { revision } => {
                self.pending_rev = self.pending_rev.max(revision);
                if !self.ds_in_sync {
                    self.ds_in_sync = true;
                    if let Err(e) = self.graph.apply(Update::InSync) {
                        warn!(error = %e, "in-sync marker");
                    }
                    self.health.set_datastore_in_sync(true);
                    self.metrics.resync_state.set(resync_state::IN_SYNC);
                    info!(revision, "datastore in sync");
                }
                self.graph_dirty = true;
            }
            SyncEvent::Progress { revision } => {
                self.pending_rev = self.pending_rev.max(revision);
                self.graph_dirty = true;
            }
            SyncEvent::Connection(ok) => {
                self.health.set_datastore_ok(ok);
                if !ok && self.ds_in_sync {
                    self.metrics
                        .resync_state
                        .set(resync_state::RESYNC_IN_PROGRESS);
                } else if ok && self.ds_in_sync {
                    self.metrics.resync_state.set(resync_state::IN_SYNC);
                }
            }
        }
    }

    fn on_iface(&mut self, ev: IfaceEvent) {
        match ev {
            IfaceEvent::State(l) => {
                debug!(iface = %l.name, up = l.is_up(), "interface state");
                self.eps.link_state(l);
            }
            IfaceEvent::Removed(l) => {
                debug!(iface = %l.name, "interface removed");
                self.eps.link_removed(&l);
            }
            IfaceEvent::InSync => {
                self.if_in_sync = true;
                self.health.set_ifaces_in_sync(true);
                info!("interface monitor in sync");
            }
        }
        self.eps_dirty = true;
    }

    fn on_pool(&mut self, update: &Update) {
        match update {
            Update::Upsert(r) => {
                if let AnyResource::IPPool(p) = &**r {
                    match p.spec.cidr.parse::<ipnet::IpNet>() {
                        Ok(cidr) => {
                            self.pools.insert(
                                p.metadata.name.clone(),
                                PoolNat {
                                    cidr,
                                    nat_outgoing: p.spec.nat_outgoing,
                                    disabled: p.spec.disabled,
                                },
                            );
                        }
                        Err(_) => {
                            warn!(pool = %p.metadata.name, cidr = %p.spec.cidr, "IP pool with an invalid CIDR ignored");
                            self.pools.remove(&p.metadata.name);
                        }
                    }
                }
            }
            Update::Delete(id) => {
                self.pools.remove(&id.name);
            }
            Update::InSync => return,
        }
        self.nft.set_ip_pools(self.pools.clone());
        self.nft_dirty = true;
    }

    fn on_felix_config(&mut self, update: &Update) {
        let (name, layer) = match update {
            Update::Upsert(r) => (r.metadata().name.clone(), spec_layer(&r.metadata().name, r)),
            Update::Delete(id) => (id.name.clone(), None),
            Update::InSync => return,
        };
        if name == "default" {
            self.global_layer = layer;
        } else if name == format!("node.{}", self.node) {
            self.node_layer = layer;
        } else {
            return;
        }
        let m = merged(&self.env_layer, &self.node_layer, &self.global_layer);
        if m.restart_key() != self.restart_key {
            let changed: Vec<String> = m
                .restart_key()
                .iter()
                .zip(&self.restart_key)
                .filter(|(a, b)| a != b)
                .map(|(a, _)| a.0.clone())
                .collect();
            self.restart = Some(format!(
                "FelixConfiguration change needs a restart (fields: {})",
                changed.join(", ")
            ));
            return;
        }
        match FelixConfig::from_merged(&self.node, &m) {
            Ok(cfg) if cfg != self.cfg => {
                info!(config = %name, "applying configuration change live");
                if cfg.log_severity_screen != self.cfg.log_severity_screen
                    && let Some(f) = &self.set_log_level
                {
                    f(&cfg.log_severity_screen);
                }
                self.nft.set_config(cfg.nft_config());
                self.eps.set_config(endpoint_config(&cfg));
                self.cfg = cfg.clone();
                let _ = self.cfg_tx.send(cfg);
                self.nft_dirty = true;
                self.eps_dirty = true;
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "configuration change rejected; keeping the previous one"),
        }
    }

    fn flush_graph(&mut self) {
        let t = Instant::now();
        let msgs = self.graph.flush();
        let t_flush = t.elapsed();
        self.graph_dirty = false;
        if msgs.is_empty() {
            return;
        }
        for msg in &msgs {
            let kind = match msg {
                ToDataplane::InSync => "InSync",
                ToDataplane::IpSetUpdate(u) => {
                    self.active_sets.insert(u.id.clone());
                    "IPSetUpdate"
                }
                ToDataplane::IpSetDeltaUpdate(_) => "IPSetDeltaUpdate",
                ToDataplane::IpSetRemove(r) => {
                    self.active_sets.remove(&r.id);
                    "IPSetRemove"
                }
                ToDataplane::ActivePolicyUpdate(u) => {
                    self.active_policies.insert(u.id.clone());
                    "ActivePolicyUpdate"
                }
                ToDataplane::ActivePolicyRemove(r) => {
                    self.active_policies.remove(&r.id);
                    "ActivePolicyRemove"
                }
                ToDataplane::ActiveProfileUpdate(_) => "ActiveProfileUpdate",
                ToDataplane::ActiveProfileRemove(_) => "ActiveProfileRemove",
                ToDataplane::WorkloadEndpointUpdate(u) => {
                    self.eps.upsert_endpoint(u.id.clone(), u.endpoint.clone());
                    self.eps_dirty = true;
                    "WorkloadEndpointUpdate"
                }
                ToDataplane::WorkloadEndpointRemove(r) => {
                    self.eps.remove_endpoint(&r.id);
                    self.eps_dirty = true;
                    "WorkloadEndpointRemove"
                }
                ToDataplane::HostEndpointUpdate(_) => "HostEndpointUpdate",
                ToDataplane::HostEndpointRemove(_) => "HostEndpointRemove",
            };
            self.metrics
                .dataplane_messages
                .with_label_values(&[kind])
                .inc();
            if let Err(e) = self.nft.on_message(msg) {
                warn!(error = %e, "dataplane message");
            }
        }
        let len = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.metrics.active_local_endpoints.set(len(
            self.eps.num_endpoints() + self.nft.state().host_endpoints.len()
        ));
        self.metrics
            .active_local_policies
            .set(len(self.active_policies.len()));
        self.metrics
            .active_local_selectors
            .set(len(self.active_sets.len()));
        self.nft_dirty = true;
        debug!(
            messages = msgs.len(),
            flush_ms = t_flush.as_secs_f64() * 1e3,
            total_ms = t.elapsed().as_secs_f64() * 1e3,
            "calculation graph flushed"
        );
    }

    fn global_sysctls(&self) {
        if !self.cfg.ip_forwarding {
            return;
        }
        if let Err(e) = self.sysctl.set("net.ipv4.ip_forward", "1") {
            warn!(error = %e, "enabling IPv4 forwarding failed");
        }
        if self.cfg.ipv6_support
            && let Err(e) = self.sysctl.set("net.ipv6.conf.all.forwarding", "1")
        {
            debug!(error = %e, "enabling IPv6 forwarding failed");
        }
    }

    /// Starts the periodic drift check: lists our table beside the loop. Before the first apply
    /// there is nothing to compare with (the first apply replaces the table).
    fn start_drift_listing(&mut self) {
        if !self.applied_once {
            self.nft_resync_due = true;
            return;
        }
        if self.drift_listing.is_some() {
            return;
        }
        let nft = self.nft.nft().clone();
        let (family, table) = self.nft.table();
        let table = table.to_string();
        let handle = tokio::spawn(async move { nft.list_table(family, &table).await });
        self.drift_listing = Some((self.nft.generation(), handle));
    }

    /// Compares a finished drift listing with what we applied and repairs differences; a
    /// listing made stale by our own transactions is retried, and after three stale ones in a
    /// row the next pass lists inline (so that constant churn cannot starve the check).
    async fn on_drift_listing(
        &mut self,
        generation: u64,
        res: Result<Result<Option<serde_json::Value>, NftError>, tokio::task::JoinError>,
    ) {
        let listed = match res {
            Ok(Ok(listed)) => listed,
            Ok(Err(e)) => return self.failed("nft list", &e),
            Err(e) => return self.failed("nft list task", &e),
        };
        match self.nft.resync_with(listed, generation).await {
            Ok(Some(drift)) => {
                self.stale_listings = 0;
                if drift {
                    warn!("repaired out-of-band changes to the nft table");
                }
            }
            Ok(None) => {
                self.stale_listings += 1;
                if self.stale_listings >= 3 {
                    self.stale_listings = 0;
                    self.nft_resync_due = true;
                } else {
                    self.start_drift_listing();
                }
            }
            Err(e) => self.failed("nft resync", &e),
        }
    }

    fn failed(&mut self, what: &str, err: &dyn std::fmt::Display) {
        error!(error = %err, "{what} failed; will retry");
        self.metrics.dataplane_failures.inc();
        self.retry_at = Some(Instant::now() + self.retry_delay);
        self.retry_delay = (self.retry_delay * 2).min(Duration::from_secs(10));
    }

    async fn maybe_apply(&mut self) {
        if !(self.ds_in_sync && self.if_in_sync) {
            return;
        }
        if self.graph_dirty {
            self.flush_graph();
        }
        if self.retry_at.is_some() {
            return;
        }
        let rev = self.pending_rev;
        let needs_work =
            self.nft_dirty || self.eps_dirty || self.nft_resync_due || !self.applied_once;
        if !needs_work {
            if rev > self.health.applied_revision() {
                self.health.set_applied_revision(rev);
            }
            return;
        }
        let t0 = Instant::now();
        if !self.applied_once {
            self.global_sysctls();
        }
        // Drift is checked only against a table we applied: before the first successful apply
        // the (full, atomic) apply is the reconciliation.
        let nft_result = if self.nft_resync_due && self.applied_once {
            self.nft.resync().await.map(|drift| {
                if drift {
                    warn!("repaired out-of-band changes to the nft table");
                }
            })
        } else if self.nft_dirty || !self.applied_once || self.nft_resync_due {
            self.nft.apply().await.map(|_| ())
        } else {
            Ok(())
        };
        if let Err(e) = nft_result {
            self.failed("nft apply", &e);
            return;
        }
        let t_nft = t0.elapsed();
        self.nft_resync_due = false;
        self.nft_dirty = false;

        let (report, errors) = self.eps.apply(Instant::now()).await;
        self.grace_at = report.next_deadline;
        self.metrics
            .route_table_num_routes
            .with_label_values(&["main"])
            .set(i64::try_from(report.num_routes).unwrap_or(i64::MAX));
        let t_eps = t0.elapsed();
        if let Some(first) = errors.first() {
            self.report_endpoints();
            for e in &errors[1..] {
                warn!(error = %e, "endpoint programming");
            }
            self.failed("endpoint programming", first);
            return;
        }
        self.eps_dirty = false;
        self.retry_delay = Duration::from_millis(100);
        self.health.set_applied_revision(rev);
        let took = t0.elapsed();
        if self.applied_once {
            self.metrics.apply_time.observe(took.as_secs_f64());
        } else {
            self.applied_once = true;
            self.health.set_first_apply_done();
            let total = self.started.elapsed();
            self.metrics.initial_resync_time.set(total.as_secs_f64());
            info!(
                revision = rev,
                took_ms = u64::try_from(total.as_millis()).unwrap_or(u64::MAX),
                "dataplane in sync"
            );
        }
        // Reports about the kernel state follow it: the status files (1,000 endpoints take
        // about half a second on ext4) and the per-endpoint status.
        self.report_endpoints();
        debug!(
            revision = rev,
            took_ms = took.as_secs_f64() * 1e3,
            nft_ms = t_nft.as_secs_f64() * 1e3,
            endpoints_ms = (t_eps - t_nft).as_secs_f64() * 1e3,
            report_ms = (t0.elapsed() - took).as_secs_f64() * 1e3,
            "dataplane applied"
        );
    }

    /// Endpoint-status files and per-endpoint status (to the datastore reporter) for what the
    /// last pass programmed.
    fn report_endpoints(&mut self) {
        for e in &self.eps.write_status_files() {
            warn!(error = %e, "endpoint status file");
        }
        let _ = self.ep_tx.send(self.eps.statuses());
    }
}

/// Whether to run felix-routes (blackholes, VXLAN/IPIP routes); `FELIX_ROUTESYNCENABLED=false`
/// (a calico-rs addition) turns it off, e.g. when another process programs routes.
fn route_sync_enabled(env: &BTreeMap<String, String>) -> bool {
    env.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("FELIX_ROUTESYNCENABLED"))
        .is_none_or(|(_, v)| {
            !matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "false" | "0" | "no" | "disabled"
            )
        })
}

fn routes_config(env: &BTreeMap<String, String>, cfg: &FelixConfig) -> felix_routes::RoutesConfig {
    let get = |name: &str| {
        env.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let flag = |name: &str| {
        get(name).map(|v| {
            matches!(
                v.to_ascii_lowercase().as_str(),
                "true" | "1" | "yes" | "enabled"
            )
        })
    };
    let num = |name: &str| get(name).and_then(|v| v.parse::<u32>().ok());
    let mut rc = felix_routes::RoutesConfig {
        resync_interval: if cfg.route_refresh_interval.is_zero() {
            Duration::from_secs(90)
        } else {
            cfg.route_refresh_interval
        },
        // Where the CNI plugin reads the pod MTU: next to the endpoint-status directory when
        // that was moved (calico-node's per-node run directory), else the upstream path.
        mtu_file: Some(
            if cfg.endpoint_status_path_prefix.as_os_str() == crate::config::DEFAULT_STATUS_PREFIX {
                std::path::PathBuf::from(felix_routes::mtu::DEFAULT_MTU_FILE)
            } else {
                cfg.endpoint_status_path_prefix.join("mtu")
            },
        ),
        ..felix_routes::RoutesConfig::default()
    };
    rc.overrides.vxlan_enabled = flag("FELIX_VXLANENABLED");
    rc.overrides.ipip_enabled = flag("FELIX_IPIPENABLED");
    rc.overrides.vxlan_vni = num("FELIX_VXLANVNI");
    rc.overrides.vxlan_port = num("FELIX_VXLANPORT").and_then(|p| u16::try_from(p).ok());
    rc.overrides.vxlan_mtu = num("FELIX_VXLANMTU");
    rc.overrides.ipip_mtu = num("FELIX_IPIPMTU");
    rc
}

/// Runs felix-routes in this namespace, restarting it after a failure, and mirrors its
/// readiness into `ready`.
async fn route_sync(
    kv: Arc<dyn KvStore>,
    node: String,
    cfg: felix_routes::RoutesConfig,
    ready: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let rs = felix_routes::RouteSync::new(Arc::clone(&kv), node.clone(), cfg.clone());
        let mut rs_ready = rs.ready();
        let run = rs.run(shutdown.clone());
        tokio::pin!(run);
        let result = loop {
            tokio::select! {
                r = &mut run => break r,
                changed = rs_ready.changed() => {
                    if changed.is_ok() {
                        ready.send_replace(*rs_ready.borrow_and_update());
                    }
                }
            }
        };
        match result {
            Ok(()) => return,
            Err(e) => warn!(error = %e, "felix-routes failed; restarting it"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// The status heartbeat and per-endpoint status reporting.
async fn reporter(
    kv: Arc<dyn KvStore>,
    health: Arc<Health>,
    mut cfg_rx: watch::Receiver<FelixConfig>,
    mut ep_rx: watch::Receiver<BTreeMap<WorkloadEndpointId, EndpointStatus>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut first = true;
    let mut next_status = tokio::time::Instant::now();
    let mut eps = EndpointReporter::default();
    let mut ep_reporting_was_on = false;
    loop {
        let cfg = cfg_rx.borrow().clone();
        let region = cfg.region();
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = cfg_rx.changed() => {}
            () = tokio::time::sleep_until(next_status) => {
                if cfg.reporting_interval.is_zero() {
                    next_status = tokio::time::Instant::now() + Duration::from_secs(3600);
                    continue;
                }
                match report::write_status(&kv, &region, &cfg.node_name, health.uptime(), first, cfg.reporting_ttl).await {
                    Ok(()) => first = false,
                    Err(e) => warn!(error = %e, "status report failed"),
                }
                next_status = tokio::time::Instant::now() + cfg.reporting_interval;
            }
            r = ep_rx.changed() => {
                if r.is_err() {
                    return;
                }
                if cfg.endpoint_reporting_enabled {
                    tokio::time::sleep(cfg.endpoint_reporting_delay).await;
                    let statuses = ep_rx.borrow_and_update().clone();
                    eps.sync(&kv, &region, &cfg.node_name, &statuses).await;
                    ep_reporting_was_on = true;
                } else if ep_reporting_was_on {
                    eps.clear(&kv, &region, &cfg.node_name).await;
                    ep_reporting_was_on = false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use calico_linux::fake::{FakeNetlink, FakeNft, FakeSysctl};

    fn resource(yaml: &str) -> Update {
        let doc = calico_model::load::parse_documents(yaml, "t")
            .unwrap()
            .remove(0);
        Update::upsert(AnyResource::from_value(doc).unwrap())
    }

    fn upd(update: Update, revision: Revision) -> SyncEvent {
        SyncEvent::Update { update, revision }
    }

    fn agent(nft: &Arc<FakeNft>, nl: &FakeNetlink) -> Agent {
        let env = Layer::from_env(&BTreeMap::new());
        let m = Merged::new(&[&env]);
        let cfg = FelixConfig::from_merged("node1", &m).unwrap();
        let metrics = Metrics::new("node1").unwrap();
        Agent::new(AgentParts {
            node: "node1".into(),
            env_layer: env,
            node_layer: None,
            global_layer: None,
            restart_key: m.restart_key(),
            cfg: cfg.clone(),
            kernel: KernelDeps {
                nft: Arc::clone(nft) as Arc<dyn Nft>,
                netlink: Arc::new(nl.clone()),
                sysctl: Arc::new(FakeSysctl::new()),
            },
            health: Health::new(),
            metrics,
            cfg_tx: watch::channel(cfg).0,
            ep_tx: watch::channel(BTreeMap::new()).0,
            set_log_level: None,
        })
    }

    const PROFILE: &str = "apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: p1}\n\
        spec: {ingress: [{action: Allow}], egress: [{action: Allow}]}\n";
    const WEP: &str = "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\n\
        metadata: {name: node1-k8s-a-eth0, namespace: default}\n\
        spec: {orchestrator: k8s, node: node1, pod: a, endpoint: eth0, interfaceName: cali1,\n\
        \x20 ipNetworks: [10.65.0.1/32], profiles: [p1]}\n";

    #[tokio::test]
    async fn drift_listings_run_beside_the_loop_and_stale_ones_are_retried() {
        let nft = Arc::new(FakeNft::new());
        let nl = FakeNetlink::new();
        let idx = nl.add_existing_link("cali1", None, 1500, true);
        let mut a = agent(&nft, &nl);
        // Before the first apply a tick only asks for the (replacing) first apply.
        a.start_drift_listing();
        assert!(a.drift_listing.is_none() && a.nft_resync_due);
        a.on_sync(upd(resource(PROFILE), 2));
        a.on_sync(upd(resource(WEP), 3));
        a.on_sync(SyncEvent::InSync { revision: 3 });
        a.on_iface(IfaceEvent::State(nl.state().links[&idx].clone()));
        a.on_iface(IfaceEvent::InSync);
        a.maybe_apply().await;
        assert!(a.applied_once && !a.nft_resync_due);

        a.start_drift_listing();
        let (generation, handle) = a.drift_listing.take().unwrap();
        assert_eq!(generation, a.nft.generation());
        let listed = match handle.await {
            Ok(Ok(v)) => v,
            other => panic!("listing failed: {other:?}"),
        };
        // A transaction went out while it listed: stale, so nothing is compared and a new
        // listing starts; the third stale one in a row falls back to an inline check.
        let sent = nft.transactions().len();
        for round in 1..=3 {
            a.drift_listing = None;
            a.on_drift_listing(generation + 1, Ok(Ok(listed.clone())))
                .await;
            assert_eq!(nft.transactions().len(), sent, "stale listing compared");
            if round < 3 {
                assert_eq!(a.stale_listings, round);
                assert!(
                    a.drift_listing.is_some(),
                    "no new listing after a stale one"
                );
            } else {
                assert_eq!(a.stale_listings, 0);
                assert!(a.nft_resync_due);
            }
        }
    }

    #[tokio::test]
    async fn kernel_untouched_until_both_syncs_then_revisions_follow_applies() {
        let nft = Arc::new(FakeNft::new());
        let nl = FakeNetlink::new();
        let idx = nl.add_existing_link("cali1", None, 1500, true);
        let mut a = agent(&nft, &nl);

        a.on_sync(upd(resource(PROFILE), 2));
        a.on_sync(upd(resource(WEP), 3));
        a.on_sync(SyncEvent::InSync { revision: 3 });
        a.maybe_apply().await;
        assert!(
            nft.transactions().is_empty(),
            "no nft before the interface monitor is in sync"
        );
        assert!(nl.state().routes.is_empty(), "no routes either");
        assert_eq!(a.health.applied_revision(), 0);

        a.on_iface(IfaceEvent::State(nl.state().links[&idx].clone()));
        a.on_iface(IfaceEvent::InSync);
        // A refresh tick that came before the first apply does not compare against a table
        // nobody applied yet: the first apply alone replaces the table.
        a.nft_resync_due = true;
        a.maybe_apply().await;
        assert!(!a.nft_resync_due);
        let t = nft.transactions();
        assert_eq!(t.len(), 1);
        assert!(
            t[0].starts_with("table inet calico\ndelete table inet calico\n"),
            "first apply replaces the table"
        );
        assert!(t[0].contains("\"cali1\" : goto fp-"), "{}", t[0]);
        assert!(nl.state().routes.iter().any(|r| r.oif == Some(idx)));
        assert_eq!(a.health.applied_revision(), 3);
        assert_eq!(a.health.readiness(), (true, vec![]));

        // Progress on unwatched keys moves the applied revision without kernel work.
        a.on_sync(SyncEvent::Progress { revision: 10 });
        a.maybe_apply().await;
        assert_eq!(a.health.applied_revision(), 10);
        assert_eq!(nft.transactions().len(), 1);

        // A failed transaction keeps the revision back until a retry succeeds.
        let pol = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\n\
            spec: {selector: all(), ingress: [{action: Deny}]}\n";
        a.on_sync(upd(resource(pol), 11));
        nft.fail_next_apply("/dev/stdin:1:1: Error: boom");
        a.maybe_apply().await;
        assert_eq!(a.health.applied_revision(), 10);
        assert_eq!(a.metrics.dataplane_failures.get(), 1);
        assert!(a.retry_at.is_some());
        a.retry_at = None;
        a.maybe_apply().await;
        assert_eq!(a.health.applied_revision(), 11);
        assert!(
            nft.transactions()
                .last()
                .unwrap()
                .starts_with("table inet calico\ndelete table")
        );

        // Live configuration: DefaultEndpointToHostAction comes from FelixConfiguration.
        let fc = "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\n\
            spec: {defaultEndpointToHostAction: Accept}\n";
        a.on_sync(upd(resource(fc), 12));
        a.maybe_apply().await;
        assert_eq!(a.health.applied_revision(), 12);
        assert!(
            nft.transactions()
                .last()
                .unwrap()
                .contains("accept comment"),
            "{:?}",
            nft.transactions().last()
        );
        assert!(a.restart.is_none());

        // A listener field needs a restart.
        let fc2 = "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\n\
            spec: {defaultEndpointToHostAction: Accept, healthPort: 9199}\n";
        a.on_sync(upd(resource(fc2), 13));
        assert!(a.restart.as_deref().unwrap().contains("healthport"));

        // Pools drive natOutgoing.
        let pool = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\n\
            spec: {cidr: 10.65.0.0/16, natOutgoing: true}\n";
        a.on_sync(upd(resource(pool), 14));
        a.maybe_apply().await;
        assert!(nft.transactions().last().unwrap().contains("masquerade"));
        assert_eq!(a.metrics.cluster_num_workload_endpoints.get(), 1);
    }
}
