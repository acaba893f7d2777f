//! What every request needs: logging, the node name, the datastore connection and its
//! readiness gate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use calico_datastore::KvStore;
use calico_datastore::client::Client;
use calico_datastore::config::{DatastoreConfig, DatastoreType, connect};
use calico_datastore::sqlite::{SqliteOptions, SqliteStore};
use calico_model::resources::ClusterInformationSpec;
use calico_model::{KindInfo, Resource};

use super::Binary;
use crate::spec::{CniError, ErrorCode, NetConf};

/// Default location calico-node writes the node name to.
pub const DEFAULT_NODENAME_FILE: &str = "/var/lib/calico/nodename";

/// Sets up logging: to `log_file_path` when given, else stderr; level from `log_level`
/// (`debug`, `info`, `warning`/`warn`, `error`; anything else is `info`).
pub fn init_logging(conf: &NetConf, binary: Binary) {
    let level = match conf.log_level.to_ascii_lowercase().as_str() {
        "debug" => tracing::Level::DEBUG,
        "warning" | "warn" => tracing::Level::WARN,
        "error" => tracing::Level::ERROR,
        "" if conf.log_file_path.is_empty() => tracing::Level::WARN,
        _ => tracing::Level::INFO,
    };
    let name = match binary {
        Binary::Calico => "calico",
        Binary::CalicoIpam => "calico-ipam",
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false);
    if !conf.log_file_path.is_empty() {
        let path = Path::new(&conf.log_file_path);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Ok(file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = builder
                .with_writer(std::sync::Mutex::new(file))
                .with_ansi(false)
                .try_init();
            tracing::debug!(plugin = name, "logging to file");
            return;
        }
    }
    let _ = builder.with_writer(std::io::stderr).try_init();
}

/// The node name: `nodename` from the configuration, else the nodename file, else the host name
/// (lower-cased). A configured `nodename_file` that is missing is an error unless
/// `nodename_file_optional`.
pub fn nodename(conf: &NetConf) -> Result<String, CniError> {
    if !conf.nodename.is_empty() {
        return Ok(conf.nodename.clone());
    }
    let file = conf
        .nodename_file
        .clone()
        .unwrap_or_else(|| DEFAULT_NODENAME_FILE.to_string());
    match std::fs::read_to_string(&file) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        _ if conf.nodename_file.is_some() && !conf.nodename_file_optional => {
            return Err(CniError::new(
                ErrorCode::InvalidConfig,
                format!("failed to read node name from nodename_file {file:?}"),
                "check that the calico/node container is running and has mounted /var/lib/calico/",
            ));
        }
        _ => {}
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if host.is_empty() {
        return Err(CniError::new(
            ErrorCode::InvalidConfig,
            "cannot determine the node name",
            "set nodename in the network configuration",
        ));
    }
    Ok(host)
}

/// The datastore settings: the process environment (as every binary reads it), overridden by the
/// network configuration's `datastore_type`, `datastore_path` and `etcd_*` fields, as upstream
/// exports those into the environment before building its client.
pub fn datastore_config(
    conf: &NetConf,
    env: &BTreeMap<String, String>,
) -> Result<DatastoreConfig, CniError> {
    let mut env = env.clone();
    let set = |env: &mut BTreeMap<String, String>, k: &str, v: &str| {
        if !v.is_empty() {
            env.insert(k.to_string(), v.to_string());
        }
    };
    match conf.datastore_type.as_str() {
        "" | "embedded" | "etcdv3" => set(&mut env, "DATASTORE_TYPE", &conf.datastore_type),
        other => {
            return Err(CniError::new(
                ErrorCode::InvalidConfig,
                format!("unsupported datastore_type {other:?}"),
                "supported: embedded (default), etcdv3",
            ));
        }
    }
    set(&mut env, "CALICO_DATASTORE_PATH", &conf.datastore_path);
    set(&mut env, "ETCD_ENDPOINTS", &conf.etcd_endpoints);
    set(&mut env, "ETCD_USERNAME", &conf.etcd_username);
    set(&mut env, "ETCD_PASSWORD", &conf.etcd_password);
    set(&mut env, "ETCD_KEY_FILE", &conf.etcd_key_file);
    set(&mut env, "ETCD_CERT_FILE", &conf.etcd_cert_file);
    set(&mut env, "ETCD_CA_CERT_FILE", &conf.etcd_ca_cert_file);
    let cfg_path = env.get("CALICO_CONFIG").map(PathBuf::from);
    DatastoreConfig::load(cfg_path.as_deref(), &env).map_err(|e| {
        CniError::new(
            ErrorCode::InvalidConfig,
            "invalid datastore configuration",
            e.to_string(),
        )
    })
}

/// Connects to the datastore. The embedded store is opened for one request at a time: queries
/// run on the plugin's single thread rather than hopping to tokio's blocking pool, which on a
/// busy node costs more than the queries themselves.
async fn open_datastore(cfg: &DatastoreConfig, fsync: bool) -> Result<Arc<dyn KvStore>, String> {
    if cfg.datastore_type != DatastoreType::Embedded {
        return connect(cfg).await.map_err(|e| e.to_string());
    }
    let opts = SqliteOptions {
        run_inline: true,
        fsync_every_commit: fsync,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with(&cfg.embedded_path, opts)
        .map_err(|e| format!("connect to embedded datastore: {e}"))?;
    Ok(Arc::new(store))
}

/// A request's shared state.
pub struct Context {
    pub node: String,
    pub kv: Arc<dyn KvStore>,
    pub client: Client,
}

impl Context {
    pub async fn new(conf: &NetConf, env: &BTreeMap<String, String>) -> Result<Self, CniError> {
        let node = nodename(conf)?;
        let cfg = datastore_config(conf, env)?;
        super::timing::mark("config");
        let kv = open_datastore(&cfg, conf.datastore_fsync())
            .await
            .map_err(|e| {
                CniError::new(
                    ErrorCode::TryAgainLater,
                    "cannot connect to the datastore",
                    e,
                )
            })?;
        let client = Client::new(kv.clone());
        super::timing::mark("datastore_open");
        Ok(Self { node, kv, client })
    }

    /// Upstream's gate: while ClusterInformation `default` says `datastoreReady: false`
    /// (an upgrade or migration), CNI refuses to act.
    pub async fn check_ready(&self) -> Result<(), CniError> {
        let Some(kind) = KindInfo::lookup("ClusterInformation") else {
            return Ok(());
        };
        match self.client.get(kind, "", "default").await {
            Ok(res) => {
                let ci: Result<Resource<ClusterInformationSpec>, _> = res.try_into();
                if let Ok(ci) = ci
                    && ci.spec.datastore_ready == Some(false)
                {
                    return Err(CniError::new(
                        ErrorCode::TryAgainLater,
                        "Calico is currently not ready to process requests",
                        "ClusterInformation default has datastoreReady false",
                    ));
                }
                Ok(())
            }
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(CniError::new(
                ErrorCode::TryAgainLater,
                "cannot read ClusterInformation",
                e.to_string(),
            )),
        }
    }
}
