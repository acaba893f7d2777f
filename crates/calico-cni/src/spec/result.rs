//! The success result, kept in one internal form and written in the shape of the requested spec
//! version: legacy `ip4`/`ip6` (0.1.0, 0.2.0), `ips[].version` (0.3.x, 0.4.0), no version
//! (1.0.0), interface `mtu` (1.1.0).

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Map, Value, json};

use super::error::{CniError, ErrorCode};
use super::version::SpecVersion;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    pub mtu: Option<u32>,
    pub sandbox: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dns {
    pub nameservers: Vec<String>,
    pub domain: String,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

fn dns_json(d: &Dns) -> Value {
    let mut m = Map::new();
    if !d.nameservers.is_empty() {
        m.insert("nameservers".into(), json!(d.nameservers));
    }
    if !d.domain.is_empty() {
        m.insert("domain".into(), json!(d.domain));
    }
    if !d.search.is_empty() {
        m.insert("search".into(), json!(d.search));
    }
    if !d.options.is_empty() {
        m.insert("options".into(), json!(d.options));
    }
    Value::Object(m)
}

fn route_json(r: &Route) -> Value {
    let mut m = Map::new();
    m.insert("dst".into(), json!(r.dst.to_string()));
    if let Some(gw) = r.gw {
        m.insert("gw".into(), json!(gw.to_string()));
    }
    Value::Object(m)
}

impl CniResult {
    /// The result JSON for `version`.
    pub fn to_json(&self, version: SpecVersion) -> Value {
        if version.legacy_result() {
            return self.to_legacy_json(version);
        }
        let mut out = Map::new();
        out.insert("cniVersion".into(), json!(version.as_str()));
        if !self.interfaces.is_empty() {
            let ifs: Vec<Value> = self
                .interfaces
                .iter()
                .map(|i| {
                    let mut m = Map::new();
                    m.insert("name".into(), json!(i.name));
                    if !i.mac.is_empty() {
                        m.insert("mac".into(), json!(i.mac));
                    }
                    if let (Some(mtu), true) = (i.mtu, version >= SpecVersion::V110) {
                        m.insert("mtu".into(), json!(mtu));
                    }
                    if !i.sandbox.is_empty() {
                        m.insert("sandbox".into(), json!(i.sandbox));
                    }
                    Value::Object(m)
                })
                .collect();
            out.insert("interfaces".into(), Value::Array(ifs));
        }
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut m = Map::new();
                if version.ips_have_version() {
                    let v = if ip.address.addr().is_ipv4() {
                        "4"
                    } else {
                        "6"
                    };
                    m.insert("version".into(), json!(v));
                }
                m.insert("address".into(), json!(ip.address.to_string()));
                if let Some(gw) = ip.gateway {
                    m.insert("gateway".into(), json!(gw.to_string()));
                }
                if let Some(i) = ip.interface {
                    m.insert("interface".into(), json!(i));
                }
                Value::Object(m)
            })
            .collect();
        out.insert("ips".into(), Value::Array(ips));
        if !self.routes.is_empty() {
            out.insert(
                "routes".into(),
                Value::Array(self.routes.iter().map(route_json).collect()),
            );
        }
        out.insert("dns".into(), dns_json(&self.dns));
        Value::Object(out)
    }

    fn to_legacy_json(&self, version: SpecVersion) -> Value {
        let mut out = Map::new();
        out.insert("cniVersion".into(), json!(version.as_str()));
        for (key, v4) in [("ip4", true), ("ip6", false)] {
            let Some(ip) = self.ips.iter().find(|i| i.address.addr().is_ipv4() == v4) else {
                continue;
            };
            let mut m = Map::new();
            m.insert("ip".into(), json!(ip.address.to_string()));
            if let Some(gw) = ip.gateway {
                m.insert("gateway".into(), json!(gw.to_string()));
            }
            let routes: Vec<Value> = self
                .routes
                .iter()
                .filter(|r| r.dst.addr().is_ipv4() == v4)
                .map(route_json)
                .collect();
            if !routes.is_empty() {
                m.insert("routes".into(), Value::Array(routes));
            }
            out.insert(key.into(), Value::Object(m));
        }
        out.insert("dns".into(), dns_json(&self.dns));
        Value::Object(out)
    }

    /// Reads a result of any supported version (a `prevResult`, or an IPAM plugin's output).
    pub fn from_json(v: &Value) -> Result<Self, CniError> {
        let bad = |what: String| CniError::new(ErrorCode::Decode, "failed to decode result", what);
        let obj = v
            .as_object()
            .ok_or_else(|| bad("expected a JSON object".into()))?;
        let net = |s: &Value, path: &str| -> Result<IpNet, CniError> {
            s.as_str()
                .and_then(|s| s.parse::<IpNet>().ok())
                .ok_or_else(|| bad(format!("{path}: expected a CIDR, got {s}")))
        };
        let ip = |s: &Value, path: &str| -> Result<IpAddr, CniError> {
            s.as_str()
                .and_then(|s| s.parse::<IpAddr>().ok())
                .ok_or_else(|| bad(format!("{path}: expected an IP address, got {s}")))
        };
        let routes_of = |r: Option<&Value>, path: &str| -> Result<Vec<Route>, CniError> {
            let mut out = Vec::new();
            for (i, r) in r
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let dst = net(
                    r.get("dst").unwrap_or(&Value::Null),
                    &format!("{path}[{i}].dst"),
                )?;
                let gw = match r.get("gw") {
                    Some(g) if !g.is_null() => Some(ip(g, &format!("{path}[{i}].gw"))?),
                    _ => None,
                };
                out.push(Route { dst, gw });
            }
            Ok(out)
        };
        let mut res = CniResult::default();
        if obj.contains_key("ip4") || obj.contains_key("ip6") {
            for key in ["ip4", "ip6"] {
                if let Some(block) = obj.get(key) {
                    let address = net(
                        block.get("ip").unwrap_or(&Value::Null),
                        &format!("{key}.ip"),
                    )?;
                    let gateway = match block.get("gateway") {
                        Some(g) if !g.is_null() => Some(ip(g, &format!("{key}.gateway"))?),
                        _ => None,
                    };
                    res.ips.push(IpConfig {
                        address,
                        gateway,
                        interface: None,
                    });
                    res.routes
                        .extend(routes_of(block.get("routes"), &format!("{key}.routes"))?);
                }
            }
        } else {
            for (i, it) in obj
                .get("interfaces")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let s = |k: &str| {
                    it.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                };
                if it.get("name").and_then(Value::as_str).is_none() {
                    return Err(bad(format!("interfaces[{i}].name: missing")));
                }
                res.interfaces.push(Interface {
                    name: s("name"),
                    mac: s("mac"),
                    mtu: it
                        .get("mtu")
                        .and_then(Value::as_u64)
                        .and_then(|m| u32::try_from(m).ok()),
                    sandbox: s("sandbox"),
                });
            }
            for (i, it) in obj
                .get("ips")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let address = net(
                    it.get("address").unwrap_or(&Value::Null),
                    &format!("ips[{i}].address"),
                )?;
                let gateway = match it.get("gateway") {
                    Some(g) if !g.is_null() => Some(ip(g, &format!("ips[{i}].gateway"))?),
                    _ => None,
                };
                let interface = it
                    .get("interface")
                    .and_then(Value::as_u64)
                    .map(|x| x as usize);
                res.ips.push(IpConfig {
                    address,
                    gateway,
                    interface,
                });
            }
            res.routes = routes_of(obj.get("routes"), "routes")?;
        }
        if let Some(d) = obj.get("dns") {
            let list = |k: &str| -> Vec<String> {
                d.get(k)
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            res.dns = Dns {
                nameservers: list("nameservers"),
                domain: d
                    .get("domain")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                search: list("search"),
                options: list("options"),
            };
        }
        Ok(res)
    }
}
