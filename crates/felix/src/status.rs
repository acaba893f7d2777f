//! Shared agent state for health and status, the health HTTP server (`/liveness`,
//! `/readiness`, `/status`) and the Prometheus metrics (upstream names where upstream has
//! them).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use tokio::sync::watch;
use tracing::{info, warn};

/// How long the main loop may go without a heartbeat before liveness fails
/// (upstream's `InternalDataplaneMainLoop` default timeout).
pub const LIVENESS_TIMEOUT: Duration = Duration::from_secs(90);

/// Health and progress facts, shared between the main loop and the HTTP servers.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    datastore_in_sync: AtomicBool,
    ifaces_in_sync: AtomicBool,
    first_apply_done: AtomicBool,
    datastore_ok: AtomicBool,
    /// Extra readiness gates (e.g. felix-routes' first program), all must be true.
    extra: std::sync::Mutex<Vec<(String, watch::Receiver<bool>)>>,
    applied_revision: AtomicI64,
    /// Milliseconds since `started` of the last main-loop heartbeat.
    last_beat_ms: AtomicI64,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            started: Instant::now(),
            datastore_in_sync: AtomicBool::new(false),
            ifaces_in_sync: AtomicBool::new(false),
            first_apply_done: AtomicBool::new(false),
            datastore_ok: AtomicBool::new(true),
            extra: std::sync::Mutex::new(Vec::new()),
            applied_revision: AtomicI64::new(0),
            last_beat_ms: AtomicI64::new(0),
        }
    }
}

/// The `/status` document.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StatusDoc {
    pub ready: bool,
    pub in_sync: bool,
    pub applied_revision: i64,
}

impl Health {
    pub fn new() -> Arc<Health> {
        Arc::new(Health::default())
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn set_datastore_in_sync(&self, v: bool) {
        self.datastore_in_sync.store(v, Ordering::Relaxed);
    }
    pub fn set_ifaces_in_sync(&self, v: bool) {
        self.ifaces_in_sync.store(v, Ordering::Relaxed);
    }
    pub fn set_first_apply_done(&self) {
        self.first_apply_done.store(true, Ordering::Relaxed);
    }
    pub fn set_datastore_ok(&self, v: bool) {
        self.datastore_ok.store(v, Ordering::Relaxed);
    }
    pub fn set_applied_revision(&self, rev: i64) {
        self.applied_revision.fetch_max(rev, Ordering::Relaxed);
    }
    pub fn applied_revision(&self) -> i64 {
        self.applied_revision.load(Ordering::Relaxed)
    }
    pub fn add_readiness_gate(&self, name: &str, rx: watch::Receiver<bool>) {
        self.extra
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name.to_string(), rx));
    }
    /// The main loop is alive.
    pub fn beat(&self) {
        let ms = i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.last_beat_ms.store(ms, Ordering::Relaxed);
    }

    pub fn in_sync(&self) -> bool {
        self.datastore_in_sync.load(Ordering::Relaxed)
            && self.ifaces_in_sync.load(Ordering::Relaxed)
    }

    /// Readiness, with the reasons it is not ready.
    pub fn readiness(&self) -> (bool, Vec<String>) {
        let mut why = Vec::new();
        if !self.datastore_in_sync.load(Ordering::Relaxed) {
            why.push("datastore not in sync".to_string());
        }
        if !self.ifaces_in_sync.load(Ordering::Relaxed) {
            why.push("interface monitor not in sync".to_string());
        }
        if !self.first_apply_done.load(Ordering::Relaxed) {
            why.push("dataplane not yet programmed".to_string());
        }
        if !self.datastore_ok.load(Ordering::Relaxed) {
            why.push("datastore connection failing".to_string());
        }
        for (name, rx) in self.extra.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if !*rx.borrow() {
                why.push(format!("{name} not ready"));
            }
        }
        (why.is_empty(), why)
    }

    pub fn liveness(&self) -> (bool, String) {
        let now = i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let last = self.last_beat_ms.load(Ordering::Relaxed);
        let age = Duration::from_millis(u64::try_from(now - last).unwrap_or(0));
        if age > LIVENESS_TIMEOUT {
            (false, format!("main loop silent for {}s", age.as_secs()))
        } else {
            (true, String::new())
        }
    }

    pub fn status_doc(&self) -> StatusDoc {
        StatusDoc {
            ready: self.readiness().0,
            in_sync: self.in_sync(),
            applied_revision: self.applied_revision(),
        }
    }
}

/// Every metric the agent exports.
pub struct Metrics {
    pub registry: Registry,
    pub apply_time: Histogram,
    pub initial_resync_time: Gauge,
    pub dataplane_failures: IntCounter,
    pub dataplane_messages: IntCounterVec,
    pub calc_update_time: Histogram,
    pub resync_state: IntGauge,
    pub active_local_endpoints: IntGauge,
    pub active_local_policies: IntGauge,
    pub active_local_selectors: IntGauge,
    pub cluster_num_workload_endpoints: IntGauge,
    pub cluster_num_host_endpoints: IntGauge,
    pub cluster_num_policies: IntGauge,
    pub cluster_num_profiles: IntGauge,
    pub cluster_num_tiers: IntGauge,
    pub nft_calls: IntCounter,
    pub nft_errors: IntCounter,
    pub route_table_num_routes: IntGaugeVec,
    pub host: IntGaugeVec,
}

/// `felix_resync_state` values (upstream's `api.SyncStatus`).
pub mod resync_state {
    pub const WAIT_FOR_DATASTORE: i64 = 0;
    pub const RESYNC_IN_PROGRESS: i64 = 1;
    pub const IN_SYNC: i64 = 2;
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(
    r: &Registry,
    c: Result<T, prometheus::Error>,
) -> Result<T, prometheus::Error> {
    let c = c?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    pub fn new(node: &str) -> Result<Arc<Metrics>, prometheus::Error> {
        let r = Registry::new();
        let gauge = |n: &str, h: &str| IntGauge::new(n, h);
        let m = Metrics {
            apply_time: reg(
                &r,
                Histogram::with_opts(HistogramOpts::new(
                    "felix_int_dataplane_apply_time_seconds",
                    "Time in seconds that it took to apply a dataplane update (incremental applies).",
                )),
            )?,
            initial_resync_time: reg(
                &r,
                Gauge::new(
                    "felix_int_dataplane_initial_resync_time_seconds",
                    "Time in seconds that it took to do the initial resync with the datastore and program the dataplane.",
                ),
            )?,
            dataplane_failures: reg(
                &r,
                IntCounter::new(
                    "felix_int_dataplane_failures",
                    "Number of times dataplane updates failed and will be retried.",
                ),
            )?,
            dataplane_messages: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "felix_int_dataplane_messages",
                        "Number dataplane messages by type.",
                    ),
                    &["type"],
                ),
            )?,
            calc_update_time: reg(
                &r,
                Histogram::with_opts(HistogramOpts::new(
                    "felix_calc_graph_update_time_seconds",
                    "Seconds to update calculation graph for each datastore OnUpdate call.",
                )),
            )?,
            resync_state: reg(&r, gauge("felix_resync_state", "Current datastore state."))?,
            active_local_endpoints: reg(
                &r,
                gauge(
                    "felix_active_local_endpoints",
                    "Number of active endpoints on this host.",
                ),
            )?,
            active_local_policies: reg(
                &r,
                gauge(
                    "felix_active_local_policies",
                    "Number of active policies on this host.",
                ),
            )?,
            active_local_selectors: reg(
                &r,
                gauge(
                    "felix_active_local_selectors",
                    "Number of active selectors on this host.",
                ),
            )?,
            cluster_num_workload_endpoints: reg(
                &r,
                gauge(
                    "felix_cluster_num_workload_endpoints",
                    "Total number of workload endpoints cluster-wide.",
                ),
            )?,
            cluster_num_host_endpoints: reg(
                &r,
                gauge(
                    "felix_cluster_num_host_endpoints",
                    "Total number of host endpoints cluster-wide.",
                ),
            )?,
            cluster_num_policies: reg(
                &r,
                gauge(
                    "felix_cluster_num_policies",
                    "Total number of policies in the cluster.",
                ),
            )?,
            cluster_num_profiles: reg(
                &r,
                gauge(
                    "felix_cluster_num_profiles",
                    "Total number of profiles in the cluster.",
                ),
            )?,
            cluster_num_tiers: reg(
                &r,
                gauge(
                    "felix_cluster_num_tiers",
                    "Total number of policy tiers in the cluster.",
                ),
            )?,
            nft_calls: reg(
                &r,
                IntCounter::new("felix_nft_calls", "Number of nft transactions executed."),
            )?,
            nft_errors: reg(
                &r,
                IntCounter::new(
                    "felix_nft_errors",
                    "Number of nft transactions that failed.",
                ),
            )?,
            route_table_num_routes: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "felix_route_table_num_routes",
                        "Number of routes that Felix is managing in the route table.",
                    ),
                    &["table"],
                ),
            )?,
            host: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "felix_host",
                        "Configured Felix hostname (as a label), typically used in grouping/aggregating stats; the label defaults to the hostname of the host but can be overridden by configuration. The value of the gauge is always set to 1.",
                    ),
                    &["host"],
                ),
            )?,
            registry: r,
        };
        m.host.with_label_values(&[node]).set(1);
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            m.registry.register(Box::new(pc))?;
        }
        Ok(Arc::new(m))
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let enc = prometheus::TextEncoder::new();
        enc.encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encode error: {e}\n"))
    }
}

/// Resolves `host:port` (names like `localhost` included).
pub async fn resolve(host: &str, port: u16) -> std::io::Result<SocketAddr> {
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    let target = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    tokio::net::lookup_host(target)
        .await?
        .next()
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no address for {host}"),
            )
        })
}

/// The health router.
pub fn health_router(h: Arc<Health>) -> Router {
    Router::new()
        .route("/liveness", get(liveness))
        .route("/readiness", get(readiness))
        .route("/status", get(status))
        .with_state(h)
}

async fn liveness(State(h): State<Arc<Health>>) -> impl IntoResponse {
    match h.liveness() {
        (true, _) => (StatusCode::NO_CONTENT, String::new()),
        (false, why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn readiness(State(h): State<Arc<Health>>) -> impl IntoResponse {
    match h.readiness() {
        (true, _) => (StatusCode::NO_CONTENT, String::new()),
        (false, why) => (StatusCode::SERVICE_UNAVAILABLE, why.join("\n") + "\n"),
    }
}

async fn status(State(h): State<Arc<Health>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(&h.status_doc()).unwrap_or_default(),
    )
}

/// The metrics router.
pub fn metrics_router(m: Arc<Metrics>) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(m)
}

async fn metrics(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        m.render(),
    )
}

/// Binds and serves `router` until shutdown.
pub async fn serve(
    what: &'static str,
    addr: SocketAddr,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    info!(%addr, "{what} server listening");
    Ok(tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|v| *v).await;
        };
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(stop)
            .await
        {
            warn!(error = %e, "{what} server failed");
        }
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn readiness_needs_sync_apply_and_datastore() {
        let h = Health::new();
        h.beat();
        assert!(!h.readiness().0);
        h.set_datastore_in_sync(true);
        h.set_ifaces_in_sync(true);
        assert!(h.in_sync());
        assert!(!h.readiness().0);
        h.set_first_apply_done();
        assert!(h.readiness().0);
        h.set_datastore_ok(false);
        let (ok, why) = h.readiness();
        assert!(!ok);
        assert_eq!(why, vec!["datastore connection failing".to_string()]);
        h.set_datastore_ok(true);
        let (tx, rx) = watch::channel(false);
        h.add_readiness_gate("felix-routes", rx);
        assert!(!h.readiness().0);
        tx.send(true).unwrap();
        assert!(h.readiness().0);
        assert!(h.liveness().0);
        h.set_applied_revision(7);
        h.set_applied_revision(5);
        assert_eq!(
            h.status_doc(),
            StatusDoc {
                ready: true,
                in_sync: true,
                applied_revision: 7
            }
        );
    }

    #[test]
    fn metrics_have_upstream_names() {
        let m = Metrics::new("node1").unwrap();
        m.dataplane_messages.with_label_values(&["InSync"]).inc();
        m.route_table_num_routes.with_label_values(&["main"]).set(2);
        let text = m.render();
        for name in [
            "felix_int_dataplane_apply_time_seconds",
            "felix_int_dataplane_initial_resync_time_seconds",
            "felix_int_dataplane_failures",
            "felix_int_dataplane_messages{type=\"InSync\"} 1",
            "felix_calc_graph_update_time_seconds",
            "felix_resync_state",
            "felix_active_local_endpoints",
            "felix_active_local_policies",
            "felix_active_local_selectors",
            "felix_cluster_num_workload_endpoints",
            "felix_cluster_num_host_endpoints",
            "felix_cluster_num_policies",
            "felix_cluster_num_profiles",
            "felix_nft_calls",
            "felix_nft_errors",
            "felix_route_table_num_routes{table=\"main\"} 2",
            "felix_host{host=\"node1\"} 1",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
