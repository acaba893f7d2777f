//! calico-node's environment (reference §3.5) and the pure decisions made from it: node name,
//! IP autodetection over a list of interfaces, the default IP pool.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use calico_model::resources::ipam::EncapMode;
use ipnet::IpNet;
use regex::Regex;

/// Configuration errors; each names the variable and value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("Invalid IP autodetection method: {0}")]
    BadMethod(String),
    #[error("{var}: invalid value {value:?}: {reason}")]
    BadValue {
        var: &'static str,
        value: String,
        reason: String,
    },
    #[error("NO_DEFAULT_POOLS=true cannot be combined with {0}")]
    PoolConflict(&'static str),
}

/// `CALICO_NETWORKING_BACKEND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Bird,
    Vxlan,
    None,
}

/// `IP`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpSetting {
    /// Unset: autodetect only if the Node has no IPv4 yet.
    Unset,
    Autodetect,
    None,
    /// An address, with its prefix when given (else taken from the local interface).
    Explicit(IpAddr, Option<u8>),
}

/// `IP_AUTODETECTION_METHOD`.
#[derive(Debug, Clone)]
pub enum AutodetectMethod {
    FirstFound,
    Interface(Vec<Regex>),
    SkipInterface(Vec<Regex>),
    CanReach(String),
    Cidr(Vec<IpNet>),
}

/// The default pool settings (`CALICO_IPV4POOL_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolEnv {
    pub cidr: Option<IpNet>,
    pub block_size: u8,
    pub vxlan: EncapMode,
    pub ipip: EncapMode,
    pub nat_outgoing: bool,
    pub node_selector: String,
    pub disable_bgp_export: bool,
}

/// Everything calico-node reads from its environment.
#[derive(Debug, Clone)]
pub struct NodeEnv {
    pub nodename: Option<String>,
    pub nodename_file: PathBuf,
    pub ip: IpSetting,
    pub method: AutodetectMethod,
    pub as_number: Option<u32>,
    pub cluster_type: String,
    pub backend: Backend,
    pub pool: PoolEnv,
    pub no_default_pools: bool,
    pub run_dir: PathBuf,
    pub router_id: Option<std::net::Ipv4Addr>,
    pub disable_felix: bool,
}

/// Interfaces first-found never uses (upstream's default exclude list).
pub const DEFAULT_EXCLUDES: &[&str] = &[
    "^docker.*",
    "^cbr.*",
    "^dummy.*",
    "^podman.*",
    "^virbr.*",
    "^lxcbr.*",
    "^veth.*",
    "^lo",
    "^br-.*",
    "^cali.*",
    "^tunl.*",
    "^flannel.*",
    "^kube-ipvs.*",
    "^cni.*",
    "^vxlan\\.calico.*",
    "^vxlan-v6\\.calico.*",
    "^wireguard\\.cali.*",
    "^wg-v6\\.cali.*",
    "^nodelocaldns.*",
];

fn bool_var(
    env: &BTreeMap<String, String>,
    var: &'static str,
    default: bool,
) -> Result<bool, ConfigError> {
    match env.get(var).map(|s| s.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(s) if s.is_empty() => Ok(default),
        Some(s) if s == "true" || s == "1" || s == "yes" => Ok(true),
        Some(s) if s == "false" || s == "0" || s == "no" => Ok(false),
        Some(s) => Err(ConfigError::BadValue {
            var,
            value: s,
            reason: "want true or false".into(),
        }),
    }
}

fn encap_var(env: &BTreeMap<String, String>, var: &'static str) -> Result<EncapMode, ConfigError> {
    match env
        .get(var)
        .map(|s| s.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") | Some("never") | Some("off") => Ok(EncapMode::Never),
        Some("always") => Ok(EncapMode::Always),
        Some("crosssubnet") | Some("cross-subnet") => Ok(EncapMode::CrossSubnet),
        Some(v) => Err(ConfigError::BadValue {
            var,
            value: v.to_string(),
            reason: "want Always, CrossSubnet or Never".into(),
        }),
    }
}

fn regexes(list: &str, method: &str) -> Result<Vec<Regex>, ConfigError> {
    list.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| Regex::new(s.trim()).map_err(|_| ConfigError::BadMethod(method.to_string())))
        .collect()
}

impl AutodetectMethod {
    pub fn parse(s: &str) -> Result<AutodetectMethod, ConfigError> {
        let s = s.trim();
        if s.is_empty() || s == "first-found" {
            return Ok(AutodetectMethod::FirstFound);
        }
        if let Some(v) = s.strip_prefix("interface=") {
            return Ok(AutodetectMethod::Interface(regexes(v, s)?));
        }
        if let Some(v) = s.strip_prefix("skip-interface=") {
            return Ok(AutodetectMethod::SkipInterface(regexes(v, s)?));
        }
        if let Some(v) = s.strip_prefix("can-reach=") {
            if v.is_empty() {
                return Err(ConfigError::BadMethod(s.into()));
            }
            return Ok(AutodetectMethod::CanReach(v.to_string()));
        }
        if let Some(v) = s.strip_prefix("cidr=") {
            let cidrs: Result<Vec<IpNet>, _> = v.split(',').map(|c| c.trim().parse()).collect();
            return cidrs
                .map(AutodetectMethod::Cidr)
                .map_err(|_| ConfigError::BadMethod(s.into()));
        }
        Err(ConfigError::BadMethod(s.into()))
    }
}

impl NodeEnv {
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<NodeEnv, ConfigError> {
        let get = |k: &str| {
            env.get(k)
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let ip = match get("IP").as_deref() {
            None => IpSetting::Unset,
            Some("autodetect") => IpSetting::Autodetect,
            Some("none") => IpSetting::None,
            Some(v) => {
                if let Ok(net) = v.parse::<IpNet>() {
                    IpSetting::Explicit(net.addr(), Some(net.prefix_len()))
                } else if let Ok(a) = v.parse::<IpAddr>() {
                    IpSetting::Explicit(a, None)
                } else {
                    return Err(ConfigError::BadValue {
                        var: "IP",
                        value: v.into(),
                        reason: "want autodetect, none, an address or address/prefix".into(),
                    });
                }
            }
        };
        let method = AutodetectMethod::parse(&get("IP_AUTODETECTION_METHOD").unwrap_or_default())?;
        let as_number = match get("AS") {
            None => None,
            Some(v) => Some(
                calico_model::resources::bgp::AsNumber::parse(&v)
                    .ok_or_else(|| ConfigError::BadValue {
                        var: "AS",
                        value: v.clone(),
                        reason: "want a 16/32-bit AS number (n or n.n)".into(),
                    })?
                    .0,
            ),
        };
        let backend = match get("CALICO_NETWORKING_BACKEND").as_deref() {
            None | Some("bird") => Backend::Bird,
            Some("vxlan") => Backend::Vxlan,
            Some("none") => Backend::None,
            Some(v) => {
                return Err(ConfigError::BadValue {
                    var: "CALICO_NETWORKING_BACKEND",
                    value: v.into(),
                    reason: "want bird, vxlan or none".into(),
                });
            }
        };
        let cidr = match get("CALICO_IPV4POOL_CIDR").as_deref() {
            None => Some(IpNet::V4("192.168.0.0/16".parse().unwrap_or_default())),
            Some("none") => None,
            Some(v) => Some(v.parse().map_err(|_| ConfigError::BadValue {
                var: "CALICO_IPV4POOL_CIDR",
                value: v.into(),
                reason: "want a CIDR".into(),
            })?),
        };
        let block_size = match get("CALICO_IPV4POOL_BLOCK_SIZE") {
            None => 26,
            Some(v) => match v.parse::<u8>() {
                Ok(n) if (20..=32).contains(&n) => n,
                _ => {
                    return Err(ConfigError::BadValue {
                        var: "CALICO_IPV4POOL_BLOCK_SIZE",
                        value: v,
                        reason: "want 20..32".into(),
                    });
                }
            },
        };
        let no_default_pools = bool_var(env, "NO_DEFAULT_POOLS", false)?;
        if no_default_pools && get("CALICO_IPV4POOL_CIDR").is_some() {
            return Err(ConfigError::PoolConflict("CALICO_IPV4POOL_CIDR"));
        }
        let router_id = match get("CALICO_ROUTER_ID") {
            None => None,
            Some(v) => Some(v.parse().map_err(|_| ConfigError::BadValue {
                var: "CALICO_ROUTER_ID",
                value: v.clone(),
                reason: "want an IPv4 address".into(),
            })?),
        };
        Ok(NodeEnv {
            nodename: get("NODENAME"),
            nodename_file: get("CALICO_NODENAME_FILE")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/var/lib/calico/nodename")),
            ip,
            method,
            as_number,
            cluster_type: get("CLUSTER_TYPE").unwrap_or_default(),
            backend,
            pool: PoolEnv {
                cidr,
                block_size,
                vxlan: encap_var(env, "CALICO_IPV4POOL_VXLAN")?,
                ipip: encap_var(env, "CALICO_IPV4POOL_IPIP")?,
                nat_outgoing: bool_var(env, "CALICO_IPV4POOL_NAT_OUTGOING", true)?,
                node_selector: get("CALICO_IPV4POOL_NODE_SELECTOR")
                    .unwrap_or_else(|| "all()".into()),
                disable_bgp_export: bool_var(env, "CALICO_IPV4POOL_DISABLE_BGP_EXPORT", false)?,
            },
            no_default_pools,
            run_dir: get("CALICO_RUN_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/var/run/calico")),
            router_id,
            disable_felix: bool_var(env, "CALICO_DISABLE_FELIX", false)?,
        })
    }
}

/// Node name: `NODENAME`, else the nodename file, else `HOSTNAME`, else the OS host name
/// (both lower-cased).
pub fn resolve_node_name(
    env_nodename: Option<&str>,
    nodename_file: Option<&str>,
    hostname_env: Option<&str>,
    os_hostname: &str,
) -> String {
    if let Some(n) = env_nodename.filter(|n| !n.trim().is_empty()) {
        return n.trim().to_string();
    }
    if let Some(n) = nodename_file.map(str::trim).filter(|n| !n.is_empty()) {
        return n.to_string();
    }
    if let Some(h) = hostname_env.map(str::trim).filter(|h| !h.is_empty()) {
        return h.to_ascii_lowercase();
    }
    tracing::warn!("using the host name as node name; set NODENAME to be explicit");
    os_hostname.trim().to_ascii_lowercase()
}

/// One interface and its IPv4 addresses, as autodetection sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub addrs: Vec<IpNet>,
}

fn global_v4(a: &IpNet) -> bool {
    match a {
        IpNet::V4(n) => {
            let ip = n.addr();
            !(ip.is_loopback() || ip.is_link_local() || ip.is_unspecified() || ip.is_multicast())
        }
        IpNet::V6(_) => false,
    }
}

/// Picks the node's IPv4 address from `ifaces` (sorted as the kernel lists them) for every
/// method except `can-reach` (which asks the kernel; see [`crate::autodetect`]).
pub fn autodetect_v4(method: &AutodetectMethod, ifaces: &[Iface]) -> Option<IpNet> {
    let default_ex: Vec<Regex> = DEFAULT_EXCLUDES
        .iter()
        .filter_map(|r| Regex::new(r).ok())
        .collect();
    let included = |name: &str, extra: &[Regex]| {
        !default_ex.iter().any(|r| r.is_match(name)) && !extra.iter().any(|r| r.is_match(name))
    };
    let first = |pred: &dyn Fn(&Iface) -> bool, addr_ok: &dyn Fn(&IpNet) -> bool| {
        ifaces
            .iter()
            .filter(|i| pred(i))
            .flat_map(|i| i.addrs.iter())
            .find(|a| global_v4(a) && addr_ok(a))
            .copied()
    };
    match method {
        AutodetectMethod::FirstFound => first(&|i| included(&i.name, &[]), &|_| true),
        AutodetectMethod::SkipInterface(skip) => first(&|i| included(&i.name, skip), &|_| true),
        AutodetectMethod::Interface(res) => {
            // Patterns are tried in order; the first pattern with a match wins.
            res.iter()
                .find_map(|r| first(&|i| r.is_match(&i.name), &|_| true))
        }
        AutodetectMethod::Cidr(cidrs) => {
            first(&|_| true, &|a| cidrs.iter().any(|c| c.contains(&a.addr())))
        }
        AutodetectMethod::CanReach(_) => None,
    }
}

/// The address `ip` with the prefix of the local interface address equal to it, if any.
pub fn with_local_prefix(ip: IpAddr, ifaces: &[Iface]) -> Option<IpNet> {
    ifaces
        .iter()
        .flat_map(|i| i.addrs.iter())
        .find(|a| a.addr() == ip)
        .copied()
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

    fn ifaces() -> Vec<Iface> {
        let i = |n: &str, a: &[&str]| Iface {
            name: n.into(),
            addrs: a.iter().map(|s| s.parse().unwrap()).collect(),
        };
        vec![
            i("lo", &["127.0.0.1/8"]),
            i("docker0", &["172.17.0.1/16"]),
            i("eth0", &["169.254.3.3/16", "10.0.0.5/24"]),
            i("eth1", &["192.0.2.7/24"]),
            i("vxlan.calico", &["192.168.0.1/32"]),
        ]
    }

    #[test]
    fn node_name_precedence() {
        assert_eq!(
            resolve_node_name(Some("n1"), Some("f"), Some("H"), "os"),
            "n1"
        );
        assert_eq!(resolve_node_name(None, Some("f\n"), Some("H"), "os"), "f");
        assert_eq!(
            resolve_node_name(None, Some(""), Some("HoSt"), "os"),
            "host"
        );
        assert_eq!(
            resolve_node_name(Some(" "), None, None, "OS-Name"),
            "os-name"
        );
    }

    #[test]
    fn first_found_skips_default_excludes_and_link_local() {
        let m = AutodetectMethod::parse("first-found").unwrap();
        assert_eq!(
            autodetect_v4(&m, &ifaces()).unwrap().to_string(),
            "10.0.0.5/24"
        );
    }

    #[test]
    fn interface_skip_interface_and_cidr() {
        let m = AutodetectMethod::parse("interface=eth1,eth0").unwrap();
        assert_eq!(
            autodetect_v4(&m, &ifaces()).unwrap().to_string(),
            "192.0.2.7/24"
        );
        let m = AutodetectMethod::parse("skip-interface=eth0").unwrap();
        assert_eq!(
            autodetect_v4(&m, &ifaces()).unwrap().to_string(),
            "192.0.2.7/24"
        );
        let m = AutodetectMethod::parse("cidr=192.0.2.0/24").unwrap();
        assert_eq!(
            autodetect_v4(&m, &ifaces()).unwrap().to_string(),
            "192.0.2.7/24"
        );
        let m = AutodetectMethod::parse("cidr=203.0.113.0/24").unwrap();
        assert_eq!(autodetect_v4(&m, &ifaces()), None);
        let m = AutodetectMethod::parse("interface=nomatch").unwrap();
        assert_eq!(autodetect_v4(&m, &ifaces()), None);
    }

    #[test]
    fn bad_methods_are_named() {
        for bad in ["bogus", "interface=(", "cidr=x", "can-reach="] {
            let e = AutodetectMethod::parse(bad).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("Invalid IP autodetection method: {bad}")
            );
        }
        assert!(matches!(
            AutodetectMethod::parse("can-reach=10.0.0.1").unwrap(),
            AutodetectMethod::CanReach(_)
        ));
    }

    #[test]
    fn env_defaults_and_errors() {
        let e = NodeEnv::from_env(&env(&[])).unwrap();
        assert_eq!(e.backend, Backend::Bird);
        assert_eq!(e.ip, IpSetting::Unset);
        assert_eq!(e.pool.cidr.unwrap().to_string(), "192.168.0.0/16");
        assert_eq!(e.pool.block_size, 26);
        assert!(e.pool.nat_outgoing);
        assert_eq!(e.run_dir, PathBuf::from("/var/run/calico"));
        let e = NodeEnv::from_env(&env(&[
            ("IP", "10.0.0.5/24"),
            ("CALICO_NETWORKING_BACKEND", "vxlan"),
            ("CALICO_IPV4POOL_VXLAN", "CrossSubnet"),
            ("CALICO_IPV4POOL_CIDR", "10.244.0.0/16"),
            ("CALICO_IPV4POOL_BLOCK_SIZE", "24"),
            ("AS", "65001"),
            ("CALICO_RUN_DIR", "/tmp/n1"),
        ]))
        .unwrap();
        assert_eq!(
            e.ip,
            IpSetting::Explicit("10.0.0.5".parse().unwrap(), Some(24))
        );
        assert_eq!(e.backend, Backend::Vxlan);
        assert_eq!(e.pool.vxlan, EncapMode::CrossSubnet);
        assert_eq!(e.pool.block_size, 24);
        assert_eq!(e.as_number, Some(65001));
        for (k, v, want) in [
            ("IP", "10.0.0.300", "IP: invalid value"),
            (
                "CALICO_NETWORKING_BACKEND",
                "gobgp",
                "CALICO_NETWORKING_BACKEND: invalid",
            ),
            (
                "CALICO_IPV4POOL_BLOCK_SIZE",
                "8",
                "CALICO_IPV4POOL_BLOCK_SIZE: invalid",
            ),
            (
                "CALICO_IPV4POOL_IPIP",
                "sometimes",
                "CALICO_IPV4POOL_IPIP: invalid",
            ),
            ("AS", "x", "AS: invalid"),
        ] {
            let err = NodeEnv::from_env(&env(&[(k, v)])).unwrap_err().to_string();
            assert!(err.starts_with(want), "{err}");
        }
        let err = NodeEnv::from_env(&env(&[
            ("NO_DEFAULT_POOLS", "true"),
            ("CALICO_IPV4POOL_CIDR", "10.0.0.0/16"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("NO_DEFAULT_POOLS"));
    }
}
