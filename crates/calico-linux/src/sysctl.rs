//! Per-interface and global network sysctls under `/proc/sys/net`.
//!
//! `/proc/sys/net` shows the namespace of the thread that opens the file, so [`ProcSysctl`]
//! either works in the caller's namespace or, when built with [`ProcSysctl::in_netns`], does
//! each access on a thread inside the given namespace.

use std::fmt;
use std::path::PathBuf;

use crate::netns::{NetNs, NetnsError};

/// A per-interface sysctl Calico sets on workload interfaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IfaceKey {
    /// `net.ipv4.conf.<if>.proxy_arp`
    ProxyArp,
    /// `net.ipv4.conf.<if>.forwarding`
    Forwarding,
    /// `net.ipv4.conf.<if>.route_localnet`
    RouteLocalnet,
    /// `net.ipv4.conf.<if>.rp_filter`
    RpFilter,
    /// `net.ipv4.neigh.<if>.proxy_delay`
    ProxyDelay,
    /// `net.ipv6.conf.<if>.accept_ra`
    AcceptRa,
    /// `net.ipv6.conf.<if>.proxy_ndp`
    ProxyNdp,
    /// `net.ipv6.conf.<if>.forwarding`
    Ipv6Forwarding,
    /// `net.ipv6.conf.<if>.disable_ipv6`
    DisableIpv6,
    /// `net.ipv6.conf.<if>.accept_dad`
    AcceptDad,
}

impl IfaceKey {
    /// Every key, for fakes and tests.
    pub const ALL: [IfaceKey; 10] = [
        IfaceKey::ProxyArp,
        IfaceKey::Forwarding,
        IfaceKey::RouteLocalnet,
        IfaceKey::RpFilter,
        IfaceKey::ProxyDelay,
        IfaceKey::AcceptRa,
        IfaceKey::ProxyNdp,
        IfaceKey::Ipv6Forwarding,
        IfaceKey::DisableIpv6,
        IfaceKey::AcceptDad,
    ];

    /// (directory under /proc/sys/net, leaf name).
    fn parts(self) -> (&'static str, &'static str) {
        match self {
            IfaceKey::ProxyArp => ("ipv4/conf", "proxy_arp"),
            IfaceKey::Forwarding => ("ipv4/conf", "forwarding"),
            IfaceKey::RouteLocalnet => ("ipv4/conf", "route_localnet"),
            IfaceKey::RpFilter => ("ipv4/conf", "rp_filter"),
            IfaceKey::ProxyDelay => ("ipv4/neigh", "proxy_delay"),
            IfaceKey::AcceptRa => ("ipv6/conf", "accept_ra"),
            IfaceKey::ProxyNdp => ("ipv6/conf", "proxy_ndp"),
            IfaceKey::Ipv6Forwarding => ("ipv6/conf", "forwarding"),
            IfaceKey::DisableIpv6 => ("ipv6/conf", "disable_ipv6"),
            IfaceKey::AcceptDad => ("ipv6/conf", "accept_dad"),
        }
    }

    /// The path for interface `iface` (also `all`, `default`).
    pub fn path(self, iface: &str) -> PathBuf {
        let (dir, leaf) = self.parts();
        PathBuf::from(format!("/proc/sys/net/{dir}/{iface}/{leaf}"))
    }

    /// The dotted sysctl name for interface `iface`, e.g. `net.ipv4.conf.cali1.proxy_arp`.
    pub fn dotted(self, iface: &str) -> String {
        let (dir, leaf) = self.parts();
        format!("net.{}.{iface}.{leaf}", dir.replace('/', "."))
    }
}

impl fmt::Display for IfaceKey {
    /// The leaf name; IPv6 keys are prefixed `ipv6/` so both `forwarding`s stay distinct.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (dir, leaf) = self.parts();
        if dir.starts_with("ipv6") {
            write!(f, "ipv6/{leaf}")
        } else {
            f.write_str(leaf)
        }
    }
}

/// Sysctl errors. Messages read like `interface cali12ab: set proxy_arp: permission denied`.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error("interface {iface}: {op} {key}: {reason}")]
    Interface {
        iface: String,
        op: &'static str,
        key: IfaceKey,
        reason: String,
        kind: std::io::ErrorKind,
    },
    #[error("sysctl {name}: {op}: {reason}")]
    Global {
        name: String,
        op: &'static str,
        reason: String,
        kind: std::io::ErrorKind,
    },
    #[error("interface {iface}: invalid name: {reason}")]
    InvalidInterface { iface: String, reason: &'static str },
    #[error("sysctl {name}: invalid name: want a dotted name under net.")]
    InvalidName { name: String },
    #[error(transparent)]
    Netns(#[from] NetnsError),
}

impl SysctlError {
    /// The underlying I/O error kind, when there is one (`NotFound` = no such interface/key).
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            SysctlError::Interface { kind, .. } | SysctlError::Global { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

/// Reads and writes network sysctls.
pub trait Sysctl: Send + Sync {
    /// Read a per-interface value (trimmed).
    fn get_iface(&self, iface: &str, key: IfaceKey) -> Result<String, SysctlError>;
    /// Write a per-interface value.
    fn set_iface(&self, iface: &str, key: IfaceKey, value: &str) -> Result<(), SysctlError>;
    /// Read a global value by dotted name under `net.` (e.g. `net.ipv4.ip_forward`).
    fn get(&self, name: &str) -> Result<String, SysctlError>;
    /// Write a global value by dotted name under `net.`.
    fn set(&self, name: &str, value: &str) -> Result<(), SysctlError>;
    /// Write several per-interface values in order, stopping at the first error.
    fn set_iface_many(&self, iface: &str, values: &[(IfaceKey, &str)]) -> Result<(), SysctlError> {
        values
            .iter()
            .try_for_each(|(key, value)| self.set_iface(iface, *key, value))
    }
}

/// The real implementation on `/proc/sys/net`.
#[derive(Clone, Debug, Default)]
pub struct ProcSysctl {
    netns: Option<NetNs>,
}

impl ProcSysctl {
    /// Work in the calling thread's namespace.
    pub fn new() -> Self {
        ProcSysctl { netns: None }
    }

    /// Work in `netns` (each access runs on a thread inside it).
    pub fn in_netns(netns: NetNs) -> Self {
        ProcSysctl { netns: Some(netns) }
    }

    fn with_ns<T: Send>(
        &self,
        f: impl FnOnce() -> Result<T, SysctlError> + Send,
    ) -> Result<T, SysctlError> {
        match &self.netns {
            None => f(),
            Some(ns) => ns.run(f)?,
        }
    }
}

impl ProcSysctl {
    fn set_iface_many_here(
        &self,
        iface: &str,
        values: &[(IfaceKey, &str)],
    ) -> Result<(), SysctlError> {
        values
            .iter()
            .try_for_each(|(key, value)| self.set_iface(iface, *key, value))
    }
}

/// Validate a dotted `net.` name and turn it into its /proc path. Interface names may contain
/// dots (`vxlan.calico`); sysctl(8) spells those with '/', which is accepted here too.
pub fn dotted_to_path(name: &str) -> Result<PathBuf, SysctlError> {
    let bad = || SysctlError::InvalidName {
        name: name.to_string(),
    };
    let rest = name.strip_prefix("net.").ok_or_else(bad)?;
    if rest.is_empty() || rest.contains("..") || rest.split('.').any(str::is_empty) {
        return Err(bad());
    }
    // sysctl(8) convention: '.' separates, '/' stands for a literal '.' inside a component.
    let mut path = String::from("/proc/sys/net");
    for comp in rest.split('.') {
        path.push('/');
        path.push_str(&comp.replace('/', "."));
    }
    Ok(PathBuf::from(path))
}

fn validate_iface(iface: &str) -> Result<(), SysctlError> {
    let reason = if iface.is_empty() {
        Some("empty")
    } else if iface.len() > crate::MAX_IFNAME_LEN {
        Some("longer than 15 bytes")
    } else if iface.contains('/') || iface == "." || iface == ".." {
        Some("not a single path component")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(SysctlError::InvalidInterface {
            iface: iface.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Lowercase, os-error-free text for an I/O error ("permission denied").
pub(crate) fn io_reason(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => lower_first(nix::errno::Errno::from_raw(code).desc()),
        None => lower_first(&e.to_string()),
    }
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn read_trimmed(path: &PathBuf) -> std::io::Result<String> {
    std::fs::read_to_string(path).map(|s| s.trim().to_string())
}

fn write_value(path: &PathBuf, value: &str) -> std::io::Result<()> {
    // Open without O_CREAT/O_TRUNC: a missing key must be NotFound, not created.
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes())
}

impl Sysctl for ProcSysctl {
    fn get_iface(&self, iface: &str, key: IfaceKey) -> Result<String, SysctlError> {
        validate_iface(iface)?;
        let path = key.path(iface);
        self.with_ns(|| {
            read_trimmed(&path).map_err(|e| SysctlError::Interface {
                iface: iface.to_string(),
                op: "get",
                key,
                reason: io_reason(&e),
                kind: e.kind(),
            })
        })
    }

    fn set_iface(&self, iface: &str, key: IfaceKey, value: &str) -> Result<(), SysctlError> {
        validate_iface(iface)?;
        let path = key.path(iface);
        tracing::debug!(iface, %key, value, "set sysctl");
        self.with_ns(|| {
            write_value(&path, value).map_err(|e| SysctlError::Interface {
                iface: iface.to_string(),
                op: "set",
                key,
                reason: io_reason(&e),
                kind: e.kind(),
            })
        })
    }

    fn set_iface_many(&self, iface: &str, values: &[(IfaceKey, &str)]) -> Result<(), SysctlError> {
        validate_iface(iface)?;
        // One namespace switch for the whole batch.
        let direct = ProcSysctl::new();
        self.with_ns(|| direct.set_iface_many_here(iface, values))
    }

    fn get(&self, name: &str) -> Result<String, SysctlError> {
        let path = dotted_to_path(name)?;
        self.with_ns(|| {
            read_trimmed(&path).map_err(|e| SysctlError::Global {
                name: name.to_string(),
                op: "get",
                reason: io_reason(&e),
                kind: e.kind(),
            })
        })
    }

    fn set(&self, name: &str, value: &str) -> Result<(), SysctlError> {
        let path = dotted_to_path(name)?;
        tracing::debug!(name, value, "set sysctl");
        self.with_ns(|| {
            write_value(&path, value).map_err(|e| SysctlError::Global {
                name: name.to_string(),
                op: "set",
                reason: io_reason(&e),
                kind: e.kind(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_and_names() {
        assert_eq!(
            IfaceKey::ProxyArp.path("cali12ab"),
            PathBuf::from("/proc/sys/net/ipv4/conf/cali12ab/proxy_arp")
        );
        assert_eq!(
            IfaceKey::ProxyDelay.dotted("cali12ab"),
            "net.ipv4.neigh.cali12ab.proxy_delay"
        );
        assert_eq!(IfaceKey::Ipv6Forwarding.to_string(), "ipv6/forwarding");
        assert_eq!(IfaceKey::ProxyArp.to_string(), "proxy_arp");
    }

    #[test]
    fn dotted_names() {
        assert_eq!(
            dotted_to_path("net.ipv4.ip_forward").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            dotted_to_path("net.ipv4.conf.vxlan/calico.rp_filter").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/conf/vxlan.calico/rp_filter")
        );
        for bad in ["kernel.pid_max", "net.", "net..x", "net.ipv4."] {
            assert!(dotted_to_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_message_names_interface_and_key() {
        let err = SysctlError::Interface {
            iface: "cali12ab".into(),
            op: "set",
            key: IfaceKey::ProxyArp,
            reason: io_reason(&std::io::Error::from_raw_os_error(libc::EACCES)),
            kind: std::io::ErrorKind::PermissionDenied,
        };
        assert_eq!(
            err.to_string(),
            "interface cali12ab: set proxy_arp: permission denied"
        );
    }

    #[test]
    fn missing_interface_is_not_found_naming_it() {
        let s = ProcSysctl::new();
        let err = s
            .get_iface("calinotthere0", IfaceKey::ProxyArp)
            .unwrap_err();
        assert_eq!(err.io_kind(), Some(std::io::ErrorKind::NotFound));
        assert_eq!(
            err.to_string(),
            "interface calinotthere0: get proxy_arp: no such file or directory"
        );
        let err = s
            .get_iface("waytoolonginterfacename", IfaceKey::ProxyArp)
            .unwrap_err();
        assert!(err.to_string().contains("longer than 15"), "{err}");
    }
}
