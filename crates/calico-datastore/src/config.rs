//! Datastore connection configuration, read the same way by every binary of the project.
//!
//! Sources, as upstream's client configuration (`CalicoAPIConfig`):
//! 1. a config file (`--config`, else `/etc/calico/calicoctl.cfg` when it exists): YAML or JSON,
//!    `apiVersion: projectcalico.org/v3`, `kind: CalicoAPIConfig`, `spec: {...}`, decoded
//!    strictly (a wrong apiVersion/kind or an unknown field is an error naming it);
//! 2. otherwise the environment: `DATASTORE_TYPE`, `CALICO_DATASTORE_PATH`, `ETCD_ENDPOINTS`,
//!    `ETCD_USERNAME`, `ETCD_PASSWORD`, `ETCD_KEY_FILE`, `ETCD_CERT_FILE`, `ETCD_CA_CERT_FILE`,
//!    each also accepted with a `CALICO_` prefix (the prefixed name wins, as upstream's
//!    envconfig does).
//!
//! The datastore type defaults to `etcdv3` when etcd endpoints are given, else `embedded` (our
//! single-host SQLite store at `/var/lib/calico/calico.db`; `CALICO_DATASTORE_PATH` overrides the
//! path when the file does not set `embeddedPath`). The environment is passed in as a map so
//! callers and tests never mutate the process environment.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::kv::{KvError, KvStore};

/// Where calicoctl (and every other binary) looks for the config file by default.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/calico/calicoctl.cfg";
/// Default path of the embedded datastore.
pub const DEFAULT_EMBEDDED_PATH: &str = "/var/lib/calico/calico.db";

/// Which backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatastoreType {
    /// The embedded SQLite store (single host).
    Embedded,
    /// etcd v3.
    EtcdV3,
}

impl DatastoreType {
    pub fn as_str(self) -> &'static str {
        match self {
            DatastoreType::Embedded => "embedded",
            DatastoreType::EtcdV3 => "etcdv3",
        }
    }

    fn parse(value: &str, origin: &str) -> Result<Self, ConfigError> {
        match value {
            "embedded" => Ok(DatastoreType::Embedded),
            "etcdv3" => Ok(DatastoreType::EtcdV3),
            other => Err(ConfigError::Invalid {
                origin: origin.to_string(),
                field: "datastoreType".to_string(),
                message: format!(
                    "unsupported datastore type {other:?} (supported: embedded, etcdv3)"
                ),
            }),
        }
    }
}

impl fmt::Display for DatastoreType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// etcd connection settings.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EtcdConfig {
    /// `http(s)://host:port` endpoints.
    pub endpoints: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Client key / certificate / CA files (PEM).
    pub key_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub ca_cert_file: Option<PathBuf>,
    /// Inline PEM alternatives to the files (`etcdKey`, `etcdCert`, `etcdCACert`).
    pub key: Option<String>,
    pub cert: Option<String>,
    pub ca_cert: Option<String>,
}

// Hand-written so passwords and keys never end up in logs.
impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("key_file", &self.key_file)
            .field("cert_file", &self.cert_file)
            .field("ca_cert_file", &self.ca_cert_file)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("cert", &self.cert.as_ref().map(|_| "<inline>"))
            .field("ca_cert", &self.ca_cert.as_ref().map(|_| "<inline>"))
            .finish()
    }
}

/// The resolved datastore configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatastoreConfig {
    pub datastore_type: DatastoreType,
    /// Path of the embedded store's database file (used when `datastore_type` is embedded).
    pub embedded_path: PathBuf,
    pub etcd: EtcdConfig,
}

impl Default for DatastoreConfig {
    fn default() -> Self {
        Self {
            datastore_type: DatastoreType::Embedded,
            embedded_path: PathBuf::from(DEFAULT_EMBEDDED_PATH),
            etcd: EtcdConfig::default(),
        }
    }
}

/// Errors loading the configuration or connecting to the datastore.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{origin}: {field}: {message}")]
    Invalid {
        origin: String,
        field: String,
        message: String,
    },
    #[error("connect to {backend} datastore: {source}")]
    Connect {
        backend: &'static str,
        source: KvError,
    },
}

/// The file format: `CalicoAPIConfig`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ApiConfigFile {
    api_version: Option<String>,
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
    #[serde(default)]
    spec: ApiConfigSpec,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ApiConfigSpec {
    datastore_type: Option<String>,
    embedded_path: Option<String>,
    etcd_endpoints: Option<String>,
    etcd_discovery_srv: Option<String>,
    etcd_username: Option<String>,
    etcd_password: Option<String>,
    etcd_key_file: Option<String>,
    etcd_cert_file: Option<String>,
    #[serde(rename = "etcdCACertFile")]
    etcd_ca_cert_file: Option<String>,
    etcd_key: Option<String>,
    etcd_cert: Option<String>,
    #[serde(rename = "etcdCACert")]
    etcd_ca_cert: Option<String>,
}

impl DatastoreConfig {
    /// Loads the configuration as every binary does: from `config_path` when given (it must
    /// exist), else from [`DEFAULT_CONFIG_PATH`] when that exists, else from `env`.
    pub fn load(
        config_path: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let (path, explicit) = match config_path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_file_text(&text, &path, env),
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => Self::from_env(env),
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }

    /// The process environment as a map, for [`DatastoreConfig::load`].
    pub fn process_env() -> BTreeMap<String, String> {
        std::env::vars().collect()
    }

    /// Parses a `CalicoAPIConfig` file's text. `env` only supplies `CALICO_DATASTORE_PATH` when
    /// the file does not set `embeddedPath`.
    pub fn from_file_text(
        text: &str,
        path: &Path,
        env: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let parse_err = |message: String| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let trimmed = text.trim_start();
        let file: ApiConfigFile = if trimmed.starts_with('{') {
            serde_json::from_str(text).map_err(|e| parse_err(e.to_string()))?
        } else {
            serde_saphyr::from_str(text).map_err(|e| parse_err(e.to_string()))?
        };
        let _ = file.metadata;
        match file.api_version.as_deref() {
            Some(calico_model::API_VERSION) => {}
            Some(other) => {
                return Err(parse_err(format!(
                    "apiVersion: unsupported value {other:?} (expected {:?})",
                    calico_model::API_VERSION
                )));
            }
            None => return Err(parse_err("apiVersion: missing".to_string())),
        }
        match file.kind.as_deref() {
            Some("CalicoAPIConfig") => {}
            Some(other) => {
                return Err(parse_err(format!(
                    "kind: unsupported value {other:?} (expected \"CalicoAPIConfig\")"
                )));
            }
            None => return Err(parse_err("kind: missing".to_string())),
        }
        let s = file.spec;
        let origin = path.display().to_string();
        if s.etcd_discovery_srv
            .as_deref()
            .is_some_and(|v| !v.is_empty())
        {
            return Err(ConfigError::Invalid {
                origin,
                field: "spec.etcdDiscoverySrv".to_string(),
                message: "etcd DNS SRV discovery is not supported; list etcdEndpoints".to_string(),
            });
        }
        let raw = RawSettings {
            datastore_type: s.datastore_type,
            embedded_path: s.embedded_path.or_else(|| env_get(env, "DATASTORE_PATH")),
            etcd_endpoints: s.etcd_endpoints,
            etcd_username: s.etcd_username,
            etcd_password: s.etcd_password,
            etcd_key_file: s.etcd_key_file,
            etcd_cert_file: s.etcd_cert_file,
            etcd_ca_cert_file: s.etcd_ca_cert_file,
            etcd_key: s.etcd_key,
            etcd_cert: s.etcd_cert,
            etcd_ca_cert: s.etcd_ca_cert,
        };
        raw.resolve(&format!("config file {origin}"), "spec.")
    }

    /// Configuration from environment variables only.
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let raw = RawSettings {
            datastore_type: env_get(env, "DATASTORE_TYPE"),
            embedded_path: env_get(env, "DATASTORE_PATH"),
            etcd_endpoints: env_get(env, "ETCD_ENDPOINTS"),
            etcd_username: env_get(env, "ETCD_USERNAME"),
            etcd_password: env_get(env, "ETCD_PASSWORD"),
            etcd_key_file: env_get(env, "ETCD_KEY_FILE"),
            etcd_cert_file: env_get(env, "ETCD_CERT_FILE"),
            etcd_ca_cert_file: env_get(env, "ETCD_CA_CERT_FILE"),
            etcd_key: None,
            etcd_cert: None,
            etcd_ca_cert: None,
        };
        raw.resolve("environment", "")
    }

    /// An embedded configuration at `path` (tests, tools).
    pub fn embedded(path: impl Into<PathBuf>) -> Self {
        Self {
            embedded_path: path.into(),
            ..Self::default()
        }
    }
}

/// Opens the configured datastore.
pub async fn connect(cfg: &DatastoreConfig) -> Result<Arc<dyn KvStore>, ConfigError> {
    match cfg.datastore_type {
        DatastoreType::Embedded => {
            let path = cfg.embedded_path.clone();
            // Opening runs schema setup on a blocking SQLite connection.
            let store = tokio::task::spawn_blocking(move || crate::sqlite::SqliteStore::open(path))
                .await
                .map_err(|e| ConfigError::Connect {
                    backend: "embedded",
                    source: KvError::Backend(format!("open task failed: {e}")),
                })?
                .map_err(|source| ConfigError::Connect {
                    backend: "embedded",
                    source,
                })?;
            Ok(Arc::new(store))
        }
        DatastoreType::EtcdV3 => connect_etcd(&cfg.etcd).await,
    }
}

async fn connect_etcd(etcd: &EtcdConfig) -> Result<Arc<dyn KvStore>, ConfigError> {
    use crate::etcd::{EtcdOptions, EtcdStore, PemSource};
    // Inline PEM wins over a file, as upstream's client does.
    let pem = |inline: &Option<String>, file: &Option<PathBuf>| {
        inline
            .clone()
            .map(PemSource::Inline)
            .or_else(|| file.clone().map(PemSource::File))
    };
    let opts = EtcdOptions {
        endpoints: etcd.endpoints.clone(),
        username: etcd.username.clone(),
        password: etcd.password.clone(),
        ca: pem(&etcd.ca_cert, &etcd.ca_cert_file),
        cert: pem(&etcd.cert, &etcd.cert_file),
        key: pem(&etcd.key, &etcd.key_file),
        ..EtcdOptions::default()
    };
    let store = EtcdStore::connect(opts)
        .await
        .map_err(|source| ConfigError::Connect {
            backend: "etcdv3",
            source,
        })?;
    Ok(Arc::new(store))
}

/// Settings before defaulting, whichever source they came from.
struct RawSettings {
    datastore_type: Option<String>,
    embedded_path: Option<String>,
    etcd_endpoints: Option<String>,
    etcd_username: Option<String>,
    etcd_password: Option<String>,
    etcd_key_file: Option<String>,
    etcd_cert_file: Option<String>,
    etcd_ca_cert_file: Option<String>,
    etcd_key: Option<String>,
    etcd_cert: Option<String>,
    etcd_ca_cert: Option<String>,
}

impl RawSettings {
    fn resolve(self, origin: &str, prefix: &str) -> Result<DatastoreConfig, ConfigError> {
        let non_empty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        let endpoints: Vec<String> = non_empty(self.etcd_endpoints)
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        for e in &endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(ConfigError::Invalid {
                    origin: origin.to_string(),
                    field: format!("{prefix}etcdEndpoints"),
                    message: format!("endpoint {e:?} must start with http:// or https://"),
                });
            }
        }
        let datastore_type = match non_empty(self.datastore_type) {
            Some(t) => DatastoreType::parse(t.trim(), origin).map_err(|e| match e {
                ConfigError::Invalid {
                    origin, message, ..
                } => ConfigError::Invalid {
                    origin,
                    field: format!("{prefix}datastoreType"),
                    message,
                },
                other => other,
            })?,
            None if !endpoints.is_empty() => DatastoreType::EtcdV3,
            None => DatastoreType::Embedded,
        };
        if datastore_type == DatastoreType::EtcdV3 && endpoints.is_empty() {
            return Err(ConfigError::Invalid {
                origin: origin.to_string(),
                field: format!("{prefix}etcdEndpoints"),
                message: "required when the datastore type is etcdv3".to_string(),
            });
        }
        let path = |v: Option<String>| non_empty(v).map(PathBuf::from);
        Ok(DatastoreConfig {
            datastore_type,
            embedded_path: path(self.embedded_path)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_EMBEDDED_PATH)),
            etcd: EtcdConfig {
                endpoints,
                username: non_empty(self.etcd_username),
                password: non_empty(self.etcd_password),
                key_file: path(self.etcd_key_file),
                cert_file: path(self.etcd_cert_file),
                ca_cert_file: path(self.etcd_ca_cert_file),
                key: non_empty(self.etcd_key),
                cert: non_empty(self.etcd_cert),
                ca_cert: non_empty(self.etcd_ca_cert),
            },
        })
    }
}

/// `CALICO_<name>` if set, else `<name>`.
fn env_get(env: &BTreeMap<String, String>, name: &str) -> Option<String> {
    env.get(&format!("CALICO_{name}"))
        .or_else(|| env.get(name))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn empty_env_is_embedded_default() {
        let c = DatastoreConfig::from_env(&env(&[])).unwrap();
        assert_eq!(c.datastore_type, DatastoreType::Embedded);
        assert_eq!(c.embedded_path, PathBuf::from(DEFAULT_EMBEDDED_PATH));
    }

    #[test]
    fn etcd_endpoints_imply_etcdv3_and_prefix_wins() {
        let c = DatastoreConfig::from_env(&env(&[
            (
                "ETCD_ENDPOINTS",
                "http://10.0.0.1:2379, http://10.0.0.2:2379",
            ),
            ("ETCD_USERNAME", "plain"),
            ("CALICO_ETCD_USERNAME", "prefixed"),
        ]))
        .unwrap();
        assert_eq!(c.datastore_type, DatastoreType::EtcdV3);
        assert_eq!(
            c.etcd.endpoints,
            vec!["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert_eq!(c.etcd.username.as_deref(), Some("prefixed"));
    }

    #[test]
    fn datastore_path_env_and_type() {
        let c = DatastoreConfig::from_env(&env(&[
            ("DATASTORE_TYPE", "embedded"),
            ("CALICO_DATASTORE_PATH", "/tmp/x.db"),
            ("ETCD_ENDPOINTS", "http://127.0.0.1:2379"),
        ]))
        .unwrap();
        assert_eq!(c.datastore_type, DatastoreType::Embedded);
        assert_eq!(c.embedded_path, PathBuf::from("/tmp/x.db"));
    }

    #[test]
    fn bad_type_names_value() {
        let e = DatastoreConfig::from_env(&env(&[("DATASTORE_TYPE", "kubernetes")])).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("datastoreType") && s.contains("kubernetes"),
            "{s}"
        );
    }

    #[test]
    fn etcd_without_endpoints_is_error() {
        let e = DatastoreConfig::from_env(&env(&[("DATASTORE_TYPE", "etcdv3")])).unwrap_err();
        assert!(e.to_string().contains("etcdEndpoints"), "{e}");
    }

    #[test]
    fn file_yaml_and_json() {
        let yaml = "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nmetadata: {}\nspec:\n  datastoreType: etcdv3\n  etcdEndpoints: https://a:2379\n  etcdCACertFile: /ca.pem\n  etcdKey: |\n    -----BEGIN KEY-----\n";
        let c = DatastoreConfig::from_file_text(yaml, Path::new("c.yaml"), &env(&[])).unwrap();
        assert_eq!(c.datastore_type, DatastoreType::EtcdV3);
        assert_eq!(c.etcd.ca_cert_file, Some(PathBuf::from("/ca.pem")));
        assert!(c.etcd.key.as_deref().unwrap().starts_with("-----BEGIN KEY"));

        let json = r#"{"apiVersion":"projectcalico.org/v3","kind":"CalicoAPIConfig","spec":{"embeddedPath":"/d/c.db"}}"#;
        let c = DatastoreConfig::from_file_text(json, Path::new("c.json"), &env(&[])).unwrap();
        assert_eq!(c.datastore_type, DatastoreType::Embedded);
        assert_eq!(c.embedded_path, PathBuf::from("/d/c.db"));
    }

    #[test]
    fn file_is_strict() {
        let unknown = "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec:\n  etcdEndpoint: http://a:2379\n";
        let e = DatastoreConfig::from_file_text(unknown, Path::new("c"), &env(&[])).unwrap_err();
        assert!(e.to_string().contains("etcdEndpoint"), "{e}");

        let kind = "apiVersion: projectcalico.org/v3\nkind: Config\nspec: {}\n";
        let e = DatastoreConfig::from_file_text(kind, Path::new("c"), &env(&[])).unwrap_err();
        assert!(
            e.to_string().contains("kind") && e.to_string().contains("Config"),
            "{e}"
        );

        let ver = "apiVersion: v1\nkind: CalicoAPIConfig\nspec: {}\n";
        let e = DatastoreConfig::from_file_text(ver, Path::new("c"), &env(&[])).unwrap_err();
        assert!(
            e.to_string().contains("apiVersion") && e.to_string().contains("v1"),
            "{e}"
        );
    }

    #[test]
    fn explicit_missing_file_is_error() {
        let e = DatastoreConfig::load(Some(Path::new("/nonexistent/calicoctl.cfg")), &env(&[]))
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/calicoctl.cfg"), "{e}");
    }
}
