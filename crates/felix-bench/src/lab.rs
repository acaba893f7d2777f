//! The lab topology of the acceptance tests: one node namespace (where Felix runs) and workload
//! namespaces behind `cali*` veths plumbed as the CNI plugin does (host side MAC
//! `ee:ee:ee:ee:ee:ee`, proxy ARP, `/32` route on the node; default route via 169.254.1.1 in the
//! workload), plus probes and echo servers that run inside namespaces.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use calico_linux::testlab::{LAB_ENV, LabNs, binary_in_path};

use crate::{HarnessError, io_err};

/// The MAC Calico gives every host-side workload interface.
pub const HOST_MAC: &str = "ee:ee:ee:ee:ee:ee";
/// An address the node owns (workload -> host traffic goes through INPUT).
pub const HOST_IP: &str = "10.99.0.1";

/// The node namespace.
pub struct Node {
    pub ns: LabNs,
}

/// A workload namespace behind `iface` on the node.
pub struct Workload {
    pub ns: LabNs,
    pub iface: String,
    pub ip: String,
}

impl Node {
    /// A node namespace with forwarding on, 169.254.1.1 covered by a route (so proxy ARP
    /// answers for it) and [`HOST_IP`] on `lo`.
    pub fn new(tag: &str) -> Result<Node, HarnessError> {
        let ns = LabNs::new(tag)?;
        ns.sysctl("net.ipv4.ip_forward", "1")?;
        ns.ip(&["route", "add", "169.254.1.1/32", "dev", "lo"])?;
        ns.ip(&["addr", "add", &format!("{HOST_IP}/32"), "dev", "lo"])?;
        Ok(Node { ns })
    }

    /// Plumb a workload the way the CNI plugin does.
    pub fn add_workload(&self, tag: &str, iface: &str, ip: &str) -> Result<Workload, HarnessError> {
        let ns = LabNs::new(tag)?;
        let node = &self.ns;
        node.veth_to(iface, &ns, "eth0")?;
        node.ip(&["link", "set", iface, "address", HOST_MAC])?;
        node.sysctl(&format!("net.ipv4.conf.{iface}.proxy_arp"), "1")?;
        node.sysctl(&format!("net.ipv4.neigh.{iface}.proxy_delay"), "0")?;
        node.sysctl(&format!("net.ipv4.conf.{iface}.forwarding"), "1")?;
        node.ip(&["link", "set", iface, "up"])?;
        ns.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        ns.ip(&[
            "route",
            "add",
            "169.254.1.1",
            "dev",
            "eth0",
            "scope",
            "link",
        ])?;
        ns.ip(&[
            "route",
            "add",
            "default",
            "via",
            "169.254.1.1",
            "dev",
            "eth0",
        ])?;
        node.ip(&[
            "route",
            "replace",
            &format!("{ip}/32"),
            "dev",
            iface,
            "scope",
            "link",
        ])?;
        Ok(Workload {
            ns,
            iface: iface.to_string(),
            ip: ip.to_string(),
        })
    }

    /// `nft list table inet calico` inside the node (None when there is no table).
    pub fn nft_table(&self) -> Result<Option<String>, HarnessError> {
        let out = self.ns.exec(&["nft", "list", "table", "inet", "calico"])?;
        Ok(out
            .status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
    }
}

fn addr(ip: &str, port: u16) -> Result<SocketAddr, HarnessError> {
    let ip = ip
        .parse()
        .map_err(|e| HarnessError::Failed(format!("address {ip}: {e}")))?;
    Ok(SocketAddr::new(ip, port))
}

/// A TCP echo server on ip:port inside `ns` (threads; lives until the process exits or the
/// namespace's sockets go away).
pub fn tcp_echo(ns: &LabNs, ip: &str, port: u16) -> Result<(), HarnessError> {
    let a = addr(ip, port)?;
    let l = ns
        .netns()
        .run(|| TcpListener::bind(a))?
        .map_err(io_err(format!("bind tcp {a} in {}", ns.name())))?;
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(())
}

/// A UDP echo server on ip:port inside `ns`.
pub fn udp_echo(ns: &LabNs, ip: &str, port: u16) -> Result<(), HarnessError> {
    let a = addr(ip, port)?;
    let s = ns
        .netns()
        .run(|| UdpSocket::bind(a))?
        .map_err(io_err(format!("bind udp {a} in {}", ns.name())))?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    });
    Ok(())
}

/// Whether a TCP connection from `ns` to ip:port completes and echoes within `timeout`.
pub fn tcp_ok(ns: &LabNs, ip: &str, port: u16, timeout: Duration) -> Result<bool, HarnessError> {
    let a = addr(ip, port)?;
    Ok(ns.netns().run(|| -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(&a, timeout) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(timeout));
        let mut buf = [0u8; 5];
        s.write_all(b"probe").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"probe"
    })?)
}

/// Whether a UDP datagram from `ns` to ip:port is echoed within `timeout`.
pub fn udp_ok(ns: &LabNs, ip: &str, port: u16, timeout: Duration) -> Result<bool, HarnessError> {
    let a = addr(ip, port)?;
    Ok(ns.netns().run(|| -> bool {
        let Ok(s) = UdpSocket::bind("0.0.0.0:0") else {
            return false;
        };
        let _ = s.set_read_timeout(Some(timeout));
        let mut buf = [0u8; 16];
        s.send_to(b"probe", a).is_ok()
            && matches!(s.recv_from(&mut buf), Ok((5, from)) if from == a && &buf[..5] == b"probe")
    })?)
}

/// Whether one ICMP echo from `ns` to `dst` is answered (2 s deadline).
pub fn ping_ok(ns: &LabNs, dst: &str) -> Result<bool, HarnessError> {
    let base: &[&str] = if binary_in_path("ping") {
        &["ping"]
    } else {
        &["busybox", "ping"]
    };
    let mut argv = base.to_vec();
    argv.extend(["-q", "-c", "1", "-w", "2", dst]);
    Ok(ns.exec(&argv)?.status.success())
}

/// An established TCP connection from one namespace to an echo server, exchanged on demand.
pub struct Flow {
    stream: TcpStream,
    seq: u64,
}

impl Flow {
    pub fn open(ns: &LabNs, ip: &str, port: u16) -> Result<Flow, HarnessError> {
        let a = addr(ip, port)?;
        let stream = ns
            .netns()
            .run(|| TcpStream::connect_timeout(&a, Duration::from_secs(2)))?
            .map_err(io_err(format!("connect {a} from {}", ns.name())))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(io_err("set read timeout"))?;
        Ok(Flow { stream, seq: 0 })
    }

    /// Send a numbered message and read it back; false when the echo does not come back.
    pub fn exchange(&mut self) -> bool {
        self.seq += 1;
        let msg = format!("{:016}", self.seq);
        let mut buf = [0u8; 16];
        self.stream.write_all(msg.as_bytes()).is_ok()
            && self.stream.read_exact(&mut buf).is_ok()
            && buf == msg.as_bytes()
    }
}

/// A process started inside `ns` (own process group) whose stdout/stderr go to `log`.
pub fn spawn_in(
    ns: &LabNs,
    argv: &[&str],
    env: &[(String, String)],
    log: &std::path::Path,
) -> Result<Child, HarnessError> {
    spawn_in_netns(ns.netns(), ns.name(), argv, env, log)
}

/// [`spawn_in`] by namespace handle; `name` tags the process for the lab sweep.
pub fn spawn_in_netns(
    netns: &calico_linux::NetNs,
    name: &str,
    argv: &[&str],
    env: &[(String, String)],
    log: &std::path::Path,
) -> Result<Child, HarnessError> {
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| HarnessError::Failed("empty command".into()))?;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io_err(format!("open log {}", log.display())))?;
    let err = out.try_clone().map_err(io_err("clone log handle"))?;
    let child = netns.run(|| {
        Command::new(prog)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env(LAB_ENV, name)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
    })?;
    child.map_err(io_err(format!("spawn {prog} in {name}")))
}

/// A UDP receiver that counts datagrams (one-way probes that need no return route).
pub struct UdpSink {
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl UdpSink {
    pub fn start(ns: &LabNs, ip: &str, port: u16) -> Result<UdpSink, HarnessError> {
        let a = addr(ip, port)?;
        let s = ns
            .netns()
            .run(|| UdpSocket::bind(a))?
            .map_err(io_err(format!("bind udp {a} in {}", ns.name())))?;
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = count.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while s.recv_from(&mut buf).is_ok() {
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        Ok(UdpSink { count })
    }

    pub fn received(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Send `n` datagrams from src (an address of `ns`) to ip:port; true when the sink saw at
    /// least one of them within `wait`.
    pub fn probe_from(
        &self,
        ns: &LabNs,
        src: &str,
        ip: &str,
        port: u16,
        wait: Duration,
    ) -> Result<bool, HarnessError> {
        let before = self.received();
        let from = addr(src, 0)?;
        let to = addr(ip, port)?;
        ns.netns()
            .run(|| -> std::io::Result<()> {
                let s = UdpSocket::bind(from)?;
                for _ in 0..3 {
                    s.send_to(b"spoof", to)?;
                }
                Ok(())
            })?
            .map_err(io_err(format!("send udp from {from} to {to}")))?;
        let deadline = std::time::Instant::now() + wait;
        while std::time::Instant::now() < deadline {
            if self.received() > before {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(self.received() > before)
    }
}
