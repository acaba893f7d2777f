//! Felix configuration, merged as upstream does: environment `FELIX_<FIELD>` (field names
//! case-insensitive) over the datastore's `FelixConfiguration` `node.<nodename>` over `default`
//! over built-in defaults.
//!
//! Every source is first flattened into a map of lower-cased field name → text (lists joined
//! with commas, as the environment spells them); [`FelixConfig::from_sources`] then parses the
//! merged map once, so the three sources cannot disagree about a field's syntax.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use calico_model::resources::FelixConfigurationSpec;
use felix_nft::{EndpointToHostAction, ProtoPort};

/// A configuration value that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("felix configuration {field} = {value:?} ({source_name}): {problem}")]
pub struct ConfigError {
    pub field: String,
    pub value: String,
    /// `environment`, `FelixConfiguration(default)`, ...
    pub source_name: String,
    pub problem: String,
}

/// The typed configuration Felix runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct FelixConfig {
    pub node_name: String,
    pub health_enabled: bool,
    pub health_host: String,
    pub health_port: u16,
    pub prometheus_metrics_enabled: bool,
    pub prometheus_metrics_host: String,
    pub prometheus_metrics_port: u16,
    pub endpoint_status_path_prefix: PathBuf,
    pub log_severity_screen: String,
    pub interface_prefixes: Vec<String>,
    pub interface_exclude: Vec<String>,
    pub default_endpoint_to_host_action: EndpointToHostAction,
    pub failsafe_inbound: Vec<ProtoPort>,
    pub failsafe_outbound: Vec<ProtoPort>,
    pub allow_vxlan_from_workloads: bool,
    pub allow_ipip_from_workloads: bool,
    pub vxlan_port: u16,
    pub disable_conntrack_invalid_check: bool,
    pub log_prefix: String,
    /// `NftablesRefreshInterval` (falls back to `IptablesRefreshInterval`); 0 disables.
    pub nft_refresh_interval: Duration,
    /// `RouteRefreshInterval`; 0 disables.
    pub route_refresh_interval: Duration,
    pub interface_refresh_interval: Duration,
    pub reporting_interval: Duration,
    pub reporting_ttl: Duration,
    pub endpoint_reporting_enabled: bool,
    pub endpoint_reporting_delay: Duration,
    pub device_route_protocol: u8,
    pub remove_external_routes: bool,
    pub ipv6_support: bool,
    pub ip_forwarding: bool,
    pub openstack_region: String,
}

/// Default `EndpointStatusPathPrefix`.
pub const DEFAULT_STATUS_PREFIX: &str = "/var/run/calico";

/// Fields whose change needs a process restart (listeners, identity, address families); every
/// other field is applied live.
pub const RESTART_FIELDS: &[&str] = &[
    "healthenabled",
    "healthhost",
    "healthport",
    "prometheusmetricsenabled",
    "prometheusmetricshost",
    "prometheusmetricsport",
    "ipv6support",
    "endpointstatuspathprefix",
    "openstackregion",
];

/// Built-in defaults (upstream's, except the refresh intervals, which are 10 s in calico-rs so
/// out-of-band changes are repaired quickly).
const DEFAULTS: &[(&str, &str)] = &[
    ("healthenabled", "false"),
    ("healthhost", "localhost"),
    ("healthport", "9099"),
    ("prometheusmetricsenabled", "false"),
    ("prometheusmetricshost", ""),
    ("prometheusmetricsport", "9091"),
    ("endpointstatuspathprefix", "/var/run/calico"),
    ("logseverityscreen", "Info"),
    ("interfaceprefix", "cali"),
    ("interfaceexclude", "kube-ipvs0"),
    ("defaultendpointtohostaction", "Drop"),
    (
        "failsafeinboundhostports",
        "tcp:22,udp:68,tcp:179,tcp:2379,tcp:2380,tcp:5473,tcp:6443,tcp:6666,tcp:6667",
    ),
    (
        "failsafeoutboundhostports",
        "udp:53,udp:67,tcp:179,tcp:2379,tcp:2380,tcp:5473,tcp:6443,tcp:6666,tcp:6667",
    ),
    ("allowvxlanpacketsfromworkloads", "false"),
    ("allowipippacketsfromworkloads", "false"),
    ("vxlanport", "4789"),
    ("disableconntrackinvalidcheck", "false"),
    ("logprefix", "calico-packet"),
    ("iptablesrefreshinterval", "10s"),
    ("routerefreshinterval", "10s"),
    ("interfacerefreshinterval", "90s"),
    ("reportinginterval", "30s"),
    ("reportingttl", "90s"),
    ("endpointreportingenabled", "false"),
    ("endpointreportingdelay", "1s"),
    ("devicerouteprotocol", "3"),
    ("removeexternalroutes", "true"),
    ("ipv6support", "true"),
    ("ipforwarding", "Enabled"),
    ("openstackregion", ""),
];

/// One configuration source, flattened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layer {
    pub name: String,
    pub values: BTreeMap<String, String>,
}

impl Layer {
    /// `FELIX_*` variables of an environment (names case-insensitive).
    pub fn from_env(env: &BTreeMap<String, String>) -> Layer {
        let values = env
            .iter()
            .filter_map(|(k, v)| {
                let lower = k.to_ascii_lowercase();
                let field = lower.strip_prefix("felix_")?;
                (!field.is_empty()).then(|| (field.to_string(), v.clone()))
            })
            .collect();
        Layer {
            name: "environment".to_string(),
            values,
        }
    }

    /// A `FelixConfiguration` spec (only the fields that are set).
    pub fn from_spec(name: &str, spec: &FelixConfigurationSpec) -> Layer {
        let mut values = BTreeMap::new();
        if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(spec) {
            for (k, v) in map {
                if let Some(text) = flatten_value(&v) {
                    values.insert(k.to_ascii_lowercase(), text);
                }
            }
        }
        Layer {
            name: format!("FelixConfiguration({name})"),
            values,
        }
    }
}

fn flatten_value(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Array(items) => Some(
            items
                .iter()
                .filter_map(|i| match i {
                    // failsafe ports: {protocol, port, net}
                    serde_json::Value::Object(o) => {
                        let proto = o.get("protocol").and_then(|p| p.as_str()).unwrap_or("tcp");
                        let port = o.get("port").and_then(serde_json::Value::as_i64)?;
                        let net = o.get("net").and_then(|n| n.as_str()).unwrap_or("");
                        Some(if net.is_empty() {
                            format!("{}:{port}", proto.to_ascii_lowercase())
                        } else {
                            format!("{}:{net}:{port}", proto.to_ascii_lowercase())
                        })
                    }
                    other => flatten_value(other),
                })
                .collect::<Vec<_>>()
                .join(","),
        ),
        serde_json::Value::Object(_) => Some(v.to_string()),
    }
}

/// The merged, still textual configuration: for each field, the value and the layer it came
/// from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Merged {
    pub values: BTreeMap<String, (String, String)>,
}

impl Merged {
    /// Layers in precedence order, highest first.
    pub fn new(layers: &[&Layer]) -> Merged {
        let mut values = BTreeMap::new();
        for (k, v) in DEFAULTS {
            values.insert((*k).to_string(), ((*v).to_string(), "default".to_string()));
        }
        for layer in layers.iter().rev() {
            for (k, v) in &layer.values {
                values.insert(k.clone(), (v.clone(), layer.name.clone()));
            }
        }
        Merged { values }
    }

    fn raw(&self, field: &str) -> (&str, &str) {
        self.values
            .get(field)
            .map_or(("", "default"), |(v, s)| (v.as_str(), s.as_str()))
    }

    /// The values of the restart-only fields, to compare two configurations.
    pub fn restart_key(&self) -> Vec<(String, String)> {
        RESTART_FIELDS
            .iter()
            .map(|f| ((*f).to_string(), self.raw(f).0.to_string()))
            .collect()
    }
}

struct Parser<'a> {
    merged: &'a Merged,
}

impl Parser<'_> {
    fn err(&self, field: &str, problem: impl Into<String>) -> ConfigError {
        let (value, source) = self.merged.raw(field);
        ConfigError {
            field: field.to_string(),
            value: value.to_string(),
            source_name: source.to_string(),
            problem: problem.into(),
        }
    }

    fn string(&self, field: &str) -> String {
        self.merged.raw(field).0.trim().to_string()
    }

    fn bool(&self, field: &str) -> Result<bool, ConfigError> {
        match self.string(field).to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "y" | "t" | "enabled" => Ok(true),
            "false" | "0" | "no" | "n" | "f" | "disabled" | "" => Ok(false),
            _ => Err(self.err(field, "want a boolean (true/false)")),
        }
    }

    fn u16(&self, field: &str) -> Result<u16, ConfigError> {
        self.string(field)
            .parse()
            .map_err(|_| self.err(field, "want a number 0-65535"))
    }

    fn duration(&self, field: &str) -> Result<Duration, ConfigError> {
        parse_duration(&self.string(field)).ok_or_else(|| {
            self.err(
                field,
                "want a duration like 10s, 1m30s or a number of seconds",
            )
        })
    }

    fn list(&self, field: &str) -> Vec<String> {
        self.string(field)
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    fn proto_ports(&self, field: &str) -> Result<Vec<ProtoPort>, ConfigError> {
        let s = self.string(field);
        if s.eq_ignore_ascii_case("none") {
            return Ok(Vec::new());
        }
        self.list(field)
            .iter()
            .map(|item| {
                parse_proto_port(item).ok_or_else(|| {
                    self.err(
                        field,
                        format!("entry {item:?}: want <proto>:[<net>:]<port>"),
                    )
                })
            })
            .collect()
    }
}

/// Parses `tcp:22`, `udp:10.0.0.0/8:53`, `[fd00::/8]`-less IPv6 nets (`tcp:fd00::/8:22`) or a
/// bare port (TCP).
fn parse_proto_port(item: &str) -> Option<ProtoPort> {
    let (head, port) = item.rsplit_once(':').unwrap_or(("tcp", item));
    let port: u16 = port.parse().ok()?;
    let (proto, net) = match head.split_once(':') {
        Some((p, n)) => (
            p,
            Some(n.trim_matches(|c| c == '[' || c == ']').to_string()),
        ),
        None => (head, None),
    };
    let proto = proto.to_ascii_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return None;
    }
    Some(ProtoPort {
        protocol: proto,
        port,
        net,
    })
}

/// Go-style durations (`90s`, `1m30s`, `500ms`, `1h`) or a plain number of seconds (the
/// environment form).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(secs) = s.parse::<f64>() {
        return (secs >= 0.0 && secs.is_finite()).then(|| Duration::from_secs_f64(secs));
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Some(Duration::from_secs_f64(total))
}

impl FelixConfig {
    /// Parse a merged configuration. `node_name` comes from the environment
    /// (`FELIX_FELIXHOSTNAME`, `NODENAME`, hostname) before any datastore layer is read.
    pub fn from_merged(node_name: &str, merged: &Merged) -> Result<FelixConfig, ConfigError> {
        let p = Parser { merged };
        let action = match p
            .string("defaultendpointtohostaction")
            .to_ascii_lowercase()
            .as_str()
        {
            "drop" => EndpointToHostAction::Drop,
            "return" => EndpointToHostAction::Return,
            "accept" => EndpointToHostAction::Accept,
            _ => return Err(p.err("defaultendpointtohostaction", "want Drop, Return or Accept")),
        };
        let nft_refresh = if merged
            .values
            .get("nftablesrefreshinterval")
            .is_some_and(|(_, s)| s != "default")
        {
            p.duration("nftablesrefreshinterval")?
        } else {
            p.duration("iptablesrefreshinterval")?
        };
        let proto = p.string("devicerouteprotocol");
        let device_route_protocol = proto
            .parse::<u8>()
            .map_err(|_| p.err("devicerouteprotocol", "want a number 0-255"))?;
        let prefixes = p.list("interfaceprefix");
        if prefixes.is_empty() {
            return Err(p.err("interfaceprefix", "must name at least one prefix"));
        }
        Ok(FelixConfig {
            node_name: node_name.to_string(),
            health_enabled: p.bool("healthenabled")?,
            health_host: p.string("healthhost"),
            health_port: p.u16("healthport")?,
            prometheus_metrics_enabled: p.bool("prometheusmetricsenabled")?,
            prometheus_metrics_host: p.string("prometheusmetricshost"),
            prometheus_metrics_port: p.u16("prometheusmetricsport")?,
            endpoint_status_path_prefix: PathBuf::from(p.string("endpointstatuspathprefix")),
            log_severity_screen: p.string("logseverityscreen"),
            interface_prefixes: prefixes,
            interface_exclude: p.list("interfaceexclude"),
            default_endpoint_to_host_action: action,
            failsafe_inbound: p.proto_ports("failsafeinboundhostports")?,
            failsafe_outbound: p.proto_ports("failsafeoutboundhostports")?,
            allow_vxlan_from_workloads: p.bool("allowvxlanpacketsfromworkloads")?,
            allow_ipip_from_workloads: p.bool("allowipippacketsfromworkloads")?,
            vxlan_port: p.u16("vxlanport")?,
            disable_conntrack_invalid_check: p.bool("disableconntrackinvalidcheck")?,
            log_prefix: p.string("logprefix"),
            nft_refresh_interval: nft_refresh,
            route_refresh_interval: p.duration("routerefreshinterval")?,
            interface_refresh_interval: p.duration("interfacerefreshinterval")?,
            reporting_interval: p.duration("reportinginterval")?,
            reporting_ttl: p.duration("reportingttl")?,
            endpoint_reporting_enabled: p.bool("endpointreportingenabled")?,
            endpoint_reporting_delay: p.duration("endpointreportingdelay")?,
            device_route_protocol,
            remove_external_routes: p.bool("removeexternalroutes")?,
            ipv6_support: p.bool("ipv6support")?,
            ip_forwarding: p.bool("ipforwarding")?,
            openstack_region: p.string("openstackregion"),
        })
    }

    /// The renderer configuration for felix-nft.
    pub fn nft_config(&self) -> felix_nft::Config {
        felix_nft::Config {
            workload_prefixes: self.interface_prefixes.clone(),
            endpoint_to_host_action: self.default_endpoint_to_host_action,
            failsafe_inbound: self.failsafe_inbound.clone(),
            failsafe_outbound: self.failsafe_outbound.clone(),
            allow_vxlan_from_workloads: self.allow_vxlan_from_workloads,
            allow_ipip_from_workloads: self.allow_ipip_from_workloads,
            vxlan_port: self.vxlan_port,
            disable_conntrack_invalid_check: self.disable_conntrack_invalid_check,
            log_prefix: self.log_prefix.clone(),
            ipv6: self.ipv6_support,
            ..felix_nft::Config::default()
        }
    }

    /// `<region>` of the status keys: `no-region` or `region-<name>`.
    pub fn region(&self) -> String {
        if self.openstack_region.is_empty() {
            "no-region".to_string()
        } else {
            format!("region-{}", self.openstack_region)
        }
    }

    /// Whether `name` is a workload interface (prefix match, not excluded).
    pub fn is_workload_iface(&self, name: &str) -> bool {
        is_workload_iface(&self.interface_prefixes, &self.interface_exclude, name)
    }
}

/// Whether `name` matches one of `prefixes` and none of `exclude` (names, or `/regex/` in the
/// simple forms `/^prefix/` and `/prefix.*/`).
pub fn is_workload_iface(prefixes: &[String], exclude: &[String], name: &str) -> bool {
    prefixes.iter().any(|p| name.starts_with(p.as_str()))
        && !exclude.iter().any(|x| {
            if let Some(re) = x.strip_prefix('/').and_then(|r| r.strip_suffix('/')) {
                let re = re.trim_start_matches('^').trim_end_matches(".*");
                name.starts_with(re)
            } else {
                x == name
            }
        })
}

/// The node name: `FELIX_FELIXHOSTNAME`, else `NODENAME`, else the hostname.
pub fn node_name(env: &BTreeMap<String, String>) -> String {
    let get = |k: &str| {
        env.iter()
            .find(|(n, v)| n.eq_ignore_ascii_case(k) && !v.trim().is_empty())
            .map(|(_, v)| v.trim().to_string())
    };
    get("FELIX_FELIXHOSTNAME")
        .or_else(|| get("NODENAME"))
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn durations_go_style_and_seconds() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("10"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("ten"), None);
        assert_eq!(parse_duration("5x"), None);
    }

    #[test]
    fn env_beats_node_beats_global_beats_default() {
        let e = Layer::from_env(&env(&[("FELIX_HealthPort", "9100"), ("PATH", "/bin")]));
        let node = Layer::from_spec(
            "node.n1",
            &FelixConfigurationSpec {
                health_port: Some(9200),
                default_endpoint_to_host_action: Some("Accept".into()),
                ..Default::default()
            },
        );
        let global = Layer::from_spec(
            "default",
            &FelixConfigurationSpec {
                default_endpoint_to_host_action: Some("Return".into()),
                route_refresh_interval: Some("30s".into()),
                ..Default::default()
            },
        );
        let m = Merged::new(&[&e, &node, &global]);
        let c = FelixConfig::from_merged("n1", &m).unwrap();
        assert_eq!(c.health_port, 9100);
        assert_eq!(
            c.default_endpoint_to_host_action,
            EndpointToHostAction::Accept
        );
        assert_eq!(c.route_refresh_interval, Duration::from_secs(30));
        assert_eq!(c.nft_refresh_interval, Duration::from_secs(10));
        assert_eq!(c.health_host, "localhost");
        assert_eq!(c.failsafe_inbound.len(), 9);
    }

    #[test]
    fn ipv6_support_reaches_the_nft_renderer() {
        let on = FelixConfig::from_merged("n1", &Merged::new(&[])).unwrap();
        assert!(on.ipv6_support && on.nft_config().ipv6);
        let e = Layer::from_env(&env(&[("FELIX_IPV6SUPPORT", "false")]));
        let off = FelixConfig::from_merged("n1", &Merged::new(&[&e])).unwrap();
        assert!(!off.nft_config().ipv6);
    }

    #[test]
    fn bad_value_names_field_and_source() {
        let e = Layer::from_env(&env(&[("FELIX_HEALTHPORT", "lots")]));
        let err = FelixConfig::from_merged("n1", &Merged::new(&[&e])).unwrap_err();
        assert_eq!(err.field, "healthport");
        assert!(err.to_string().contains("environment"), "{err}");
    }

    #[test]
    fn failsafe_ports_from_spec_and_env() {
        let spec = FelixConfigurationSpec {
            failsafe_inbound_host_ports: Some(vec![calico_model::resources::felix::ProtoPort {
                protocol: "TCP".into(),
                port: 22,
                net: "10.0.0.0/8".into(),
            }]),
            ..Default::default()
        };
        let l = Layer::from_spec("default", &spec);
        let e = Layer::from_env(&env(&[("FELIX_FAILSAFEOUTBOUNDHOSTPORTS", "none")]));
        let c = FelixConfig::from_merged("n", &Merged::new(&[&e, &l])).unwrap();
        assert_eq!(
            c.failsafe_inbound,
            vec![ProtoPort {
                protocol: "tcp".into(),
                port: 22,
                net: Some("10.0.0.0/8".into())
            }]
        );
        assert!(c.failsafe_outbound.is_empty());
    }

    #[test]
    fn restart_key_changes_only_for_restart_fields() {
        let a = Merged::new(&[]);
        let spec = FelixConfigurationSpec {
            default_endpoint_to_host_action: Some("Accept".into()),
            ..Default::default()
        };
        let l = Layer::from_spec("default", &spec);
        assert_eq!(a.restart_key(), Merged::new(&[&l]).restart_key());
        let spec2 = FelixConfigurationSpec {
            health_port: Some(1234),
            ..Default::default()
        };
        let l2 = Layer::from_spec("default", &spec2);
        assert_ne!(a.restart_key(), Merged::new(&[&l2]).restart_key());
    }

    #[test]
    fn workload_interfaces() {
        let c = FelixConfig::from_merged(
            "n",
            &Merged::new(&[&Layer::from_env(&env(&[
                ("FELIX_INTERFACEPREFIX", "cali,tap"),
                ("FELIX_INTERFACEEXCLUDE", "cali-skip,/^tapx.*/"),
            ]))]),
        )
        .unwrap();
        assert!(c.is_workload_iface("cali123"));
        assert!(c.is_workload_iface("tap1"));
        assert!(!c.is_workload_iface("cali-skip"));
        assert!(!c.is_workload_iface("tapx9"));
        assert!(!c.is_workload_iface("eth0"));
    }
}
