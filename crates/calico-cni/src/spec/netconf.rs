//! The network configuration Calico's plugins read on stdin (upstream field names).
//! Keys Calico does not know are kept (runtimes add their own); known keys with a wrong type or
//! value are an error naming the key.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

use super::error::{CniError, ErrorCode};
use super::version::SpecVersion;

/// `"true"`/`"false"` as upstream writes them (strings), also accepting JSON booleans.
fn str_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    let v: Option<serde_json::Value> = Option::deserialize(d)?;
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Bool(b)) => Ok(Some(b)),
        Some(serde_json::Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            _ => Err(serde::de::Error::custom(format!(
                "invalid boolean {s:?}: expected \"true\" or \"false\""
            ))),
        },
        Some(other) => Err(serde::de::Error::custom(format!(
            "invalid boolean {other}: expected \"true\" or \"false\""
        ))),
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct IpamConf {
    #[serde(rename = "type", default)]
    pub ipam_type: String,
    #[serde(default, deserialize_with = "str_bool")]
    pub assign_ipv4: Option<bool>,
    #[serde(default, deserialize_with = "str_bool")]
    pub assign_ipv6: Option<bool>,
    #[serde(default)]
    pub ipv4_pools: Vec<String>,
    #[serde(default)]
    pub ipv6_pools: Vec<String>,
    #[serde(default)]
    pub subnet: String,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PolicyConf {
    #[serde(rename = "type", default)]
    pub policy_type: String,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct KubernetesConf {
    #[serde(default)]
    pub kubeconfig: String,
    #[serde(default)]
    pub k8s_api_root: String,
    #[serde(default)]
    pub node_name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ContainerSettings {
    #[serde(default)]
    pub allow_ip_forwarding: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct FeatureControl {
    #[serde(default)]
    pub ip_addrs_no_ipam: bool,
    #[serde(default)]
    pub floating_ips: bool,
}

/// The `calico` / `calico-ipam` network configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    #[serde(default)]
    pub nodename: String,
    #[serde(default)]
    pub nodename_file: Option<String>,
    #[serde(default)]
    pub nodename_file_optional: bool,
    /// `embedded` (our single-host store), `etcdv3`; upstream's `kubernetes` is not supported.
    #[serde(default)]
    pub datastore_type: String,
    /// Path of the embedded datastore file.
    #[serde(default)]
    pub datastore_path: String,
    /// Embedded datastore only: fsync every commit of this plugin (SQLite `synchronous=FULL`).
    /// Default false (`NORMAL`): a commit survives a crash of the plugin or of any other
    /// process, but the last few seconds of commits may be lost on power loss or a kernel
    /// crash (the file stays consistent, at an earlier revision). On a single-host store that
    /// loss takes the node's workloads with it; what it can leave behind is the allocation
    /// of a workload deleted just before, which `calicoctl ipam check` reports and CNI GC
    /// releases. Commits of other processes (calicoctl, Felix) are fsynced as before.
    #[serde(default, deserialize_with = "str_bool")]
    pub datastore_fsync: Option<bool>,
    #[serde(default)]
    pub etcd_endpoints: String,
    #[serde(default)]
    pub etcd_username: String,
    #[serde(default)]
    pub etcd_password: String,
    #[serde(default)]
    pub etcd_key_file: String,
    #[serde(default)]
    pub etcd_cert_file: String,
    #[serde(default)]
    pub etcd_ca_cert_file: String,
    #[serde(default)]
    pub mtu: u32,
    #[serde(default)]
    pub require_mtu_file: bool,
    #[serde(default)]
    pub num_queues: u32,
    #[serde(default)]
    pub ipam: IpamConf,
    #[serde(default)]
    pub log_level: String,
    #[serde(default)]
    pub log_file_path: String,
    #[serde(default)]
    pub policy: PolicyConf,
    #[serde(default)]
    pub kubernetes: KubernetesConf,
    #[serde(default)]
    pub container_settings: ContainerSettings,
    #[serde(default)]
    pub feature_control: FeatureControl,
    #[serde(default)]
    pub endpoint_status_dir: String,
    #[serde(default)]
    pub policy_setup_timeout_seconds: u32,
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<serde_json::Value>,
    #[serde(rename = "runtimeConfig", default)]
    pub runtime_config: Option<serde_json::Value>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl NetConf {
    /// Parses stdin. Not JSON: code 6 (decode). A known key of the wrong type or value: code 7
    /// naming the key path. An unsupported `cniVersion`: code 1.
    pub fn parse(stdin: &[u8]) -> Result<Self, CniError> {
        let value: serde_json::Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                ErrorCode::Decode,
                "failed to decode network configuration",
                e.to_string(),
            )
        })?;
        if !value.is_object() {
            return Err(CniError::new(
                ErrorCode::Decode,
                "failed to decode network configuration",
                "expected a JSON object",
            ));
        }
        let conf: NetConf = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            CniError::new(
                ErrorCode::InvalidConfig,
                format!("invalid network configuration field {path}"),
                e.into_inner().to_string(),
            )
        })?;
        SpecVersion::parse(&conf.cni_version)?;
        Ok(conf)
    }

    pub fn version(&self) -> SpecVersion {
        // Checked in parse().
        SpecVersion::parse(&self.cni_version).unwrap_or(SpecVersion::V020)
    }

    /// Whether commits to the embedded datastore are fsynced (`datastore_fsync`, default false).
    pub fn datastore_fsync(&self) -> bool {
        self.datastore_fsync.unwrap_or(false)
    }

    /// Whether an IPv4 / IPv6 address is requested (defaults: v4 yes, v6 no).
    pub fn assign_ipv4(&self) -> bool {
        self.ipam.assign_ipv4.unwrap_or(true)
    }
    pub fn assign_ipv6(&self) -> bool {
        self.ipam.assign_ipv6.unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_string_booleans() {
        let c = NetConf::parse(
            br#"{"cniVersion":"0.3.1","name":"n","type":"calico","ipam":{"type":"calico-ipam","assign_ipv4":"false","assign_ipv6":"true"}}"#,
        )
        .unwrap();
        assert!(!c.assign_ipv4());
        assert!(c.assign_ipv6());
    }

    #[test]
    fn wrong_type_names_the_field() {
        let e = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"calico","mtu":"big"}"#)
            .unwrap_err();
        assert_eq!(e.code.code(), 7);
        assert!(e.msg.contains("mtu"), "{e}");
        let e = NetConf::parse(
            br#"{"cniVersion":"1.0.0","type":"calico","ipam":{"assign_ipv4":"maybe"}}"#,
        )
        .unwrap_err();
        assert!(e.msg.contains("ipam.assign_ipv4"), "{e}");
        assert!(e.details.contains("maybe"), "{e}");
    }

    #[test]
    fn malformed_json_is_decode_error() {
        assert_eq!(NetConf::parse(b"{not json").unwrap_err().code.code(), 6);
        assert_eq!(NetConf::parse(b"[]").unwrap_err().code.code(), 6);
    }

    #[test]
    fn unsupported_version() {
        let e = NetConf::parse(br#"{"cniVersion":"9.9.9","type":"calico"}"#).unwrap_err();
        assert_eq!(e.code.code(), 1);
        assert!(e.msg.contains("9.9.9"));
    }

    #[test]
    fn datastore_fsync_defaults_off_and_accepts_upstream_booleans() {
        let c = NetConf::parse(br#"{"cniVersion":"1.0.0","type":"calico"}"#).unwrap();
        assert!(!c.datastore_fsync());
        let c =
            NetConf::parse(br#"{"cniVersion":"1.0.0","type":"calico","datastore_fsync":"true"}"#)
                .unwrap();
        assert!(c.datastore_fsync());
        let e = NetConf::parse(br#"{"cniVersion":"1.0.0","type":"calico","datastore_fsync":1}"#)
            .unwrap_err();
        assert!(e.msg.contains("datastore_fsync"), "{e}");
    }

    #[test]
    fn unknown_keys_are_kept() {
        let c = NetConf::parse(br#"{"cniVersion":"1.0.0","type":"calico","snat":true}"#).unwrap();
        assert_eq!(c.other.get("snat"), Some(&serde_json::Value::Bool(true)));
    }
}
