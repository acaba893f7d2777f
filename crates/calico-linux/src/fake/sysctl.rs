use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use crate::sysctl::{IfaceKey, Sysctl, SysctlError, dotted_to_path};

#[derive(Debug, Default)]
struct Inner {
    values: BTreeMap<String, String>,
    writes: Vec<(String, String)>,
    /// Dotted names whose next access fails with this kind.
    failures: BTreeMap<String, std::io::ErrorKind>,
    /// When set, only these interfaces exist.
    interfaces: Option<std::collections::BTreeSet<String>>,
}

/// In-memory [`Sysctl`]. Values are keyed by dotted name (`net.ipv4.conf.cali1.proxy_arp`);
/// reads of unset keys return `"0"`. By default every interface exists; after
/// [`FakeSysctl::only_interfaces`], others fail with `NotFound` like the kernel.
#[derive(Debug, Default)]
pub struct FakeSysctl {
    inner: Mutex<Inner>,
}

/// The kernel's wording for the errors a sysctl access can hit.
fn reason(kind: std::io::ErrorKind) -> String {
    let errno = match kind {
        std::io::ErrorKind::PermissionDenied => Some(libc::EACCES),
        std::io::ErrorKind::NotFound => Some(libc::ENOENT),
        std::io::ErrorKind::InvalidInput => Some(libc::EINVAL),
        _ => None,
    };
    match errno {
        Some(e) => crate::sysctl::io_reason(&std::io::Error::from_raw_os_error(e)),
        None => crate::sysctl::io_reason(&std::io::Error::from(kind)),
    }
}

impl FakeSysctl {
    pub fn new() -> Self {
        FakeSysctl::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Restrict which interfaces exist.
    pub fn only_interfaces<I, S>(&self, names: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.lock().interfaces = Some(names.into_iter().map(Into::into).collect());
    }

    /// Make every later access to this per-interface key fail with `kind`.
    pub fn fail_iface(&self, iface: &str, key: IfaceKey, kind: std::io::ErrorKind) {
        self.lock().failures.insert(key.dotted(iface), kind);
    }

    /// The value last written (or seeded) for a dotted name.
    pub fn value(&self, dotted: &str) -> Option<String> {
        self.lock().values.get(dotted).cloned()
    }

    /// The value of a per-interface key.
    pub fn iface_value(&self, iface: &str, key: IfaceKey) -> Option<String> {
        self.value(&key.dotted(iface))
    }

    /// Every write in order, as (dotted name, value).
    pub fn writes(&self) -> Vec<(String, String)> {
        self.lock().writes.clone()
    }

    /// Seed a value without recording a write.
    pub fn seed(&self, dotted: &str, value: &str) {
        self.lock()
            .values
            .insert(dotted.to_string(), value.to_string());
    }

    fn check_iface(
        &self,
        inner: &Inner,
        iface: &str,
        key: IfaceKey,
        op: &'static str,
    ) -> Result<(), SysctlError> {
        let dotted = key.dotted(iface);
        let kind = inner.failures.get(&dotted).copied().or_else(|| {
            let exists = inner
                .interfaces
                .as_ref()
                .is_none_or(|set| set.contains(iface) || iface == "all" || iface == "default");
            (!exists).then_some(std::io::ErrorKind::NotFound)
        });
        match kind {
            Some(kind) => Err(SysctlError::Interface {
                iface: iface.to_string(),
                op,
                key,
                reason: reason(kind),
                kind,
            }),
            None => Ok(()),
        }
    }
}

impl Sysctl for FakeSysctl {
    fn get_iface(&self, iface: &str, key: IfaceKey) -> Result<String, SysctlError> {
        let inner = self.lock();
        self.check_iface(&inner, iface, key, "get")?;
        Ok(inner
            .values
            .get(&key.dotted(iface))
            .cloned()
            .unwrap_or_else(|| "0".to_string()))
    }

    fn set_iface(&self, iface: &str, key: IfaceKey, value: &str) -> Result<(), SysctlError> {
        let mut inner = self.lock();
        self.check_iface(&inner, iface, key, "set")?;
        let dotted = key.dotted(iface);
        inner.values.insert(dotted.clone(), value.to_string());
        inner.writes.push((dotted, value.to_string()));
        Ok(())
    }

    fn get(&self, name: &str) -> Result<String, SysctlError> {
        dotted_to_path(name)?;
        let inner = self.lock();
        if let Some(kind) = inner.failures.get(name).copied() {
            return Err(SysctlError::Global {
                name: name.to_string(),
                op: "get",
                reason: reason(kind),
                kind,
            });
        }
        Ok(inner
            .values
            .get(name)
            .cloned()
            .unwrap_or_else(|| "0".to_string()))
    }

    fn set(&self, name: &str, value: &str) -> Result<(), SysctlError> {
        dotted_to_path(name)?;
        let mut inner = self.lock();
        if let Some(kind) = inner.failures.get(name).copied() {
            return Err(SysctlError::Global {
                name: name.to_string(),
                op: "set",
                reason: reason(kind),
                kind,
            });
        }
        inner.values.insert(name.to_string(), value.to_string());
        inner.writes.push((name.to_string(), value.to_string()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_writes_and_reads_back() {
        let s = FakeSysctl::new();
        s.set_iface("cali1", IfaceKey::ProxyArp, "1").unwrap();
        s.set("net.ipv4.ip_forward", "1").unwrap();
        assert_eq!(s.get_iface("cali1", IfaceKey::ProxyArp).unwrap(), "1");
        assert_eq!(s.get_iface("cali1", IfaceKey::Forwarding).unwrap(), "0");
        assert_eq!(
            s.writes(),
            vec![
                ("net.ipv4.conf.cali1.proxy_arp".to_string(), "1".to_string()),
                ("net.ipv4.ip_forward".to_string(), "1".to_string())
            ]
        );
    }

    #[test]
    fn injected_failure_and_missing_interface() {
        let s = FakeSysctl::new();
        s.fail_iface(
            "cali12ab",
            IfaceKey::ProxyArp,
            std::io::ErrorKind::PermissionDenied,
        );
        let err = s
            .set_iface("cali12ab", IfaceKey::ProxyArp, "1")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "interface cali12ab: set proxy_arp: permission denied"
        );
        s.only_interfaces(["eth0"]);
        let err = s.get_iface("cali9", IfaceKey::Forwarding).unwrap_err();
        assert_eq!(err.io_kind(), Some(std::io::ErrorKind::NotFound));
        assert!(s.writes().is_empty());
    }
}
