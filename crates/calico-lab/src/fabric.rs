//! The lab's wiring: a fabric namespace with a bridge, node namespaces joined to it by veths,
//! and small helpers that act inside one lab namespace (sysctls, HTTP GETs to a daemon's
//! health port). Every command names its namespace; none runs in the root namespace.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use calico_linux::NetNs;
use calico_linux::netns;

use crate::error::LabError;
use crate::procs::ip;

/// The bridge in the fabric namespace.
pub const BRIDGE: &str = "br0";
/// The lab subnet's prefix: the fabric holds `.1`, node `i` (1-based) `.<10+i>`.
pub const SUBNET_BASE: [u8; 3] = [172, 31, 0];
pub const SUBNET: &str = "172.31.0.0/24";
/// The pod address pool every lab uses.
pub const POOL_CIDR: &str = "10.244.0.0/16";
pub const POOL_BLOCK_SIZE: u8 = 26;

pub fn fabric_ip() -> String {
    let [a, b, c] = SUBNET_BASE;
    format!("{a}.{b}.{c}.1")
}

pub fn node_ip(index: usize) -> String {
    let [a, b, c] = SUBNET_BASE;
    format!("{a}.{b}.{c}.{}", 10 + index)
}

/// Lab-subnet address of the `i`th (0-based) scenario host outside the cluster.
pub fn host_ip(index: usize) -> String {
    let [a, b, c] = SUBNET_BASE;
    format!("{a}.{b}.{c}.{}", 200 + index.min(50))
}

/// Create a named namespace with `lo` up.
pub fn create_ns(name: &str) -> Result<(), LabError> {
    netns::create_named(name)?;
    ip(&["-n", name, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Write `/proc/sys/<key with dots as slashes>` inside a namespace.
pub fn sysctl(ns: &str, key: &str, value: &str) -> Result<(), LabError> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let handle = NetNs::named(ns)?;
    handle
        .run(|| std::fs::write(&path, value))?
        .map_err(|e| LabError::command(format!("netns {ns}: sysctl {key}={value}"), e.to_string()))
}

/// The fabric: namespace, bridge up, the fabric address on the bridge.
pub fn create_fabric(ns: &str) -> Result<(), LabError> {
    create_ns(ns)?;
    ip(&["-n", ns, "link", "add", BRIDGE, "type", "bridge"])?;
    ip(&["-n", ns, "link", "set", BRIDGE, "up"])?;
    ip(&[
        "-n",
        ns,
        "addr",
        "add",
        &format!("{}/24", fabric_ip()),
        "dev",
        BRIDGE,
    ])?;
    Ok(())
}

/// A node namespace joined to the fabric: `eth0` (address `ip`/24) here, `veth<index>` in the
/// bridge. A default route via the fabric: Calico's proxy ARP for 169.254.1.1 answers only
/// when the node has a unicast route covering it, as a real host's default route does. The
/// fabric forwards nothing, so traffic never leaves the lab.
pub fn create_node(fabric: &str, ns: &str, index: usize, node_ip: &str) -> Result<(), LabError> {
    create_ns(ns)?;
    let peer = format!("veth{index}");
    ip(&[
        "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", &peer, "netns", fabric,
    ])?;
    ip(&["-n", fabric, "link", "set", &peer, "master", BRIDGE, "up"])?;
    ip(&[
        "-n",
        ns,
        "addr",
        "add",
        &format!("{node_ip}/24"),
        "dev",
        "eth0",
    ])?;
    ip(&["-n", ns, "link", "set", "eth0", "up"])?;
    ip(&[
        "-n",
        ns,
        "route",
        "add",
        "default",
        "via",
        &fabric_ip(),
        "dev",
        "eth0",
    ])?;
    sysctl(ns, "net.ipv4.ip_forward", "1")?;
    Ok(())
}

/// `GET <path>` over HTTP/1.0 to `addr` from inside namespace `ns`; (status, body).
pub fn http_get(
    ns: &str,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), LabError> {
    let what = format!("netns {ns}: GET http://{addr}{path}");
    let handle = NetNs::named(ns)?;
    let text = handle
        .run(|| -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(&addr, timeout)?;
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            write!(
                s,
                "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            )?;
            let mut buf = String::new();
            s.read_to_string(&mut buf)?;
            Ok(buf)
        })?
        .map_err(|e| LabError::command(&what, e.to_string()))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| LabError::command(&what, format!("bad response {head:?}")))?;
    Ok((status, body.to_string()))
}
