//! Connectivity probes and the server every pod runs (`calico-lab serve`).
//!
//! TCP and UDP use ordinary sockets. The kernel here has no SCTP sockets (CONFIG_IP_SCTP is
//! unset) but conntrack and nftables understand SCTP, so SCTP is probed with raw IP sockets of
//! protocol 132: the client sends an INIT chunk, the server answers with an INIT-ACK carrying
//! the client's initiate tag — the first two packets of a real association, enough for
//! policy (and conntrack's SCTP state machine) to decide. ICMP is an echo over a raw socket.
//! Every probe creates its sockets on a thread inside the source pod's namespace.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::str::FromStr;
use std::time::{Duration, Instant};

use calico_linux::NetNs;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::error::LabError;

const IPPROTO_SCTP: i32 = 132;
const SCTP_INIT: u8 = 1;
const SCTP_INIT_ACK: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
    Icmp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Sctp => "SCTP",
            Proto::Icmp => "ICMP",
        }
    }
}

impl FromStr for Proto {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Ok(Proto::Tcp),
            "UDP" => Ok(Proto::Udp),
            "SCTP" => Ok(Proto::Sctp),
            "ICMP" => Ok(Proto::Icmp),
            other => Err(format!(
                "invalid protocol {other:?}: expected TCP, UDP, SCTP or ICMP"
            )),
        }
    }
}

/// Probe `dst:port/proto` from inside `src`. `Ok(true)` = the exchange completed, `Ok(false)`
/// = no answer within `timeout` or refused.
pub fn probe(
    src: &NetNs,
    dst: Ipv4Addr,
    port: u16,
    proto: Proto,
    timeout: Duration,
) -> Result<bool, LabError> {
    let r = src.run(|| match proto {
        Proto::Tcp => Ok(probe_tcp(dst, port, timeout)),
        Proto::Udp => probe_udp(dst, port, timeout),
        Proto::Sctp => probe_sctp(dst, port, timeout),
        Proto::Icmp => probe_icmp(dst, timeout),
    })?;
    r.map_err(|e| {
        LabError::command(
            format!(
                "probe {dst}:{port}/{} from {}",
                proto.as_str(),
                src.path().display()
            ),
            e.to_string(),
        )
    })
}

fn probe_tcp(dst: Ipv4Addr, port: u16, timeout: Duration) -> bool {
    TcpStream::connect_timeout(&SocketAddr::from((dst, port)), timeout).is_ok()
}

fn probe_udp(dst: Ipv4Addr, port: u16, timeout: Duration) -> std::io::Result<bool> {
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    sock.connect((dst, port))?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 64];
    // Resend a few times within the timeout: a datagram is not retransmitted by anybody else.
    while Instant::now() < deadline {
        if sock.send(b"calico-lab-probe").is_err() {
            return Ok(false);
        }
        let slice = (deadline - Instant::now()).min(Duration::from_millis(300));
        if slice.is_zero() {
            break;
        }
        sock.set_read_timeout(Some(slice))?;
        match sock.recv(&mut buf) {
            Ok(n) => return Ok(&buf[..n] == b"calico-lab-probe"),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(false),
            Err(_) => continue,
        }
    }
    Ok(false)
}

fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    (h.finish() as u32) | 1
}

/// Receive from a raw IPv4 socket until `accept(src, payload)` or the deadline.
fn raw_recv_until(
    sock: &Socket,
    deadline: Instant,
    mut accept: impl FnMut(Ipv4Addr, &[u8]) -> bool,
) -> std::io::Result<bool> {
    let mut buf = [0u8; 2048];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        sock.set_read_timeout(Some(deadline - now))?;
        let n = match (&*sock).read(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(false);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let pkt = &buf[..n];
        if pkt.len() < 20 {
            continue;
        }
        let ihl = usize::from(pkt[0] & 0x0f) * 4;
        if pkt.len() < ihl {
            continue;
        }
        let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
        if accept(src, &pkt[ihl..]) {
            return Ok(true);
        }
    }
}

fn probe_icmp(dst: Ipv4Addr, timeout: Duration) -> std::io::Result<bool> {
    let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?;
    let id = (random_u32() & 0xffff) as u16;
    let mut pkt = vec![8u8, 0, 0, 0];
    pkt.extend_from_slice(&id.to_be_bytes());
    pkt.extend_from_slice(&1u16.to_be_bytes());
    pkt.extend_from_slice(b"calico-lab-ping!");
    let sum = inet_checksum(&pkt);
    pkt[2..4].copy_from_slice(&sum.to_be_bytes());
    let addr = SockAddr::from(SocketAddrV4::new(dst, 0));
    let deadline = Instant::now() + timeout;
    sock.send_to(&pkt, &addr)?;
    raw_recv_until(&sock, deadline, |src, icmp| {
        src == dst && icmp.len() >= 8 && icmp[0] == 0 && icmp[4..6] == id.to_be_bytes()
    })
}

fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// CRC32c (Castagnoli), as SCTP's checksum uses it.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc: u32 = !0;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// An SCTP packet: common header + one chunk, checksum filled in (stored little-endian, as
/// the kernel does).
fn sctp_packet(sport: u16, dport: u16, vtag: u32, chunk: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + chunk.len());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&vtag.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0]);
    p.extend_from_slice(chunk);
    let sum = crc32c(&p);
    p[8..12].copy_from_slice(&sum.to_le_bytes());
    p
}

/// INIT (type 1) or INIT-ACK (type 2) chunk; INIT-ACK carries a state cookie parameter.
fn sctp_init_chunk(kind: u8, initiate_tag: u32, tsn: u32) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&initiate_tag.to_be_bytes());
    body.extend_from_slice(&65535u32.to_be_bytes()); // a_rwnd
    body.extend_from_slice(&10u16.to_be_bytes()); // outbound streams
    body.extend_from_slice(&10u16.to_be_bytes()); // inbound streams
    body.extend_from_slice(&tsn.to_be_bytes());
    if kind == SCTP_INIT_ACK {
        body.extend_from_slice(&7u16.to_be_bytes()); // state cookie
        body.extend_from_slice(&12u16.to_be_bytes());
        body.extend_from_slice(b"calicolb");
    }
    let len = (4 + body.len()) as u16;
    let mut c = vec![kind, 0];
    c.extend_from_slice(&len.to_be_bytes());
    c.extend_from_slice(&body);
    c
}

fn probe_sctp(dst: Ipv4Addr, port: u16, timeout: Duration) -> std::io::Result<bool> {
    let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(IPPROTO_SCTP)))?;
    let tag = random_u32();
    let sport = 32768 + (random_u32() % 28000) as u16;
    let pkt = sctp_packet(
        sport,
        port,
        0,
        &sctp_init_chunk(SCTP_INIT, tag, random_u32()),
    );
    let addr = SockAddr::from(SocketAddrV4::new(dst, 0));
    let deadline = Instant::now() + timeout;
    sock.send_to(&pkt, &addr)?;
    raw_recv_until(&sock, deadline, |src, s| {
        src == dst
            && s.len() >= 16
            && s[0..2] == port.to_be_bytes()
            && s[2..4] == sport.to_be_bytes()
            && s[4..8] == tag.to_be_bytes()
            && s[12] == SCTP_INIT_ACK
    })
}

/// The pod server: TCP accept (and close) and UDP echo on every port, SCTP INIT → INIT-ACK
/// on every port. Runs until killed.
pub fn serve(ports: &[u16]) -> Result<(), LabError> {
    let mut threads = Vec::new();
    let ports: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
    for &port in &ports {
        let tcp = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
            .map_err(|e| LabError::command(format!("serve: tcp port {port}"), e.to_string()))?;
        threads.push(std::thread::spawn(move || {
            for mut c in tcp.incoming().flatten() {
                let _ = c.write_all(b"ok\n");
            }
        }));
        let udp = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))
            .map_err(|e| LabError::command(format!("serve: udp port {port}"), e.to_string()))?;
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            loop {
                if let Ok((n, from)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(&buf[..n], from);
                }
            }
        }));
    }
    let sctp = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(IPPROTO_SCTP)))
        .map_err(|e| LabError::command("serve: raw sctp socket", e.to_string()))?;
    let ports: Vec<u16> = ports.into_iter().collect();
    threads.push(std::thread::spawn(move || serve_sctp(&sctp, &ports)));
    tracing::info!(?threads, "serving");
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn serve_sctp(sock: &Socket, ports: &[u16]) {
    let mut buf = [0u8; 2048];
    loop {
        let n = match (&*sock).read(&mut buf) {
            Ok(n) => n,
            Err(_) => continue,
        };
        let pkt = &buf[..n];
        if pkt.len() < 20 {
            continue;
        }
        let ihl = usize::from(pkt[0] & 0x0f) * 4;
        let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
        let s = &pkt[ihl.min(pkt.len())..];
        // Common header (12) + INIT chunk header (4) + initiate tag (4).
        if s.len() < 20 || s[12] != SCTP_INIT {
            continue;
        }
        let sport = u16::from_be_bytes([s[0], s[1]]);
        let dport = u16::from_be_bytes([s[2], s[3]]);
        if !ports.contains(&dport) {
            continue;
        }
        let peer_tag = u32::from_be_bytes([s[16], s[17], s[18], s[19]]);
        let reply = sctp_packet(
            dport,
            sport,
            peer_tag,
            &sctp_init_chunk(SCTP_INIT_ACK, random_u32(), random_u32()),
        );
        let _ = sock.send_to(&reply, &SockAddr::from(SocketAddrV4::new(src, 0)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_vector() {
        // RFC 3720 B.4: 32 bytes of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn init_ack_echoes_the_tag_and_checksums() {
        let p = sctp_packet(80, 4000, 0xdead_beef, &sctp_init_chunk(SCTP_INIT_ACK, 7, 9));
        assert_eq!(&p[4..8], &0xdead_beefu32.to_be_bytes());
        assert_eq!(p[12], SCTP_INIT_ACK);
        let mut zeroed = p.clone();
        zeroed[8..12].copy_from_slice(&[0; 4]);
        assert_eq!(crc32c(&zeroed).to_le_bytes(), [p[8], p[9], p[10], p[11]]);
        assert_eq!(p.len(), 12 + 32);
    }

    #[test]
    fn protocols_parse() {
        assert_eq!("udp".parse::<Proto>(), Ok(Proto::Udp));
        assert!("gre".parse::<Proto>().is_err());
    }
}
