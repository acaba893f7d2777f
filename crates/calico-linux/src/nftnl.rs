//! Set element changes straight over nfnetlink, without the `nft` binary.
//!
//! `nft -f` first dumps the kernel's ruleset into its cache: against a table of 2,000 sets and
//! 5,000 chains that alone takes 0.3–0.5 s, for a transaction of two lines. Label and endpoint
//! churn only adds and removes set elements, so those transactions are encoded here as one
//! nfnetlink batch (`NFT_MSG_NEWSETELEM` / `NFT_MSG_DELSETELEM` between batch begin and end),
//! which the kernel applies atomically like `nft -f` does.
//!
//! Only the set shapes Felix renders are encoded: address sets (`type ipv4_addr|ipv6_addr;
//! flags interval;`, elements are addresses or prefixes) and named-port sets (`type
//! ipv4_addr|ipv6_addr . inet_proto . inet_service;`). Interval elements use the kernel's
//! representation that `nft` itself sends: a start key, and an end key one past the last
//! address flagged `NFT_SET_ELEM_INTERVAL_END` (none when the range ends at the top of the
//! address space). Anything else is `None`, and the caller falls back to `nft -f`.

use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use ipnet::IpNet;

use crate::nft::TableFamily;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_DATA_VALUE: u16 = 1;
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
/// Elements per message, and the largest batch sent in one go (the socket's default send
/// buffer is about 208 KiB); bigger changes go through `nft -f`.
const ELEMS_PER_MSG: usize = 512;
const MAX_BATCH: usize = 160 * 1024;

/// One set's element additions or removals; elements in nft syntax as Felix renders them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementChange {
    pub set: String,
    /// The set's declaration body, e.g. `type ipv4_addr; flags interval;`.
    pub decl: String,
    pub add: bool,
    pub elements: Vec<String>,
}

/// The same changes as an `nft -f` script (removals and additions in the given order).
pub fn element_script(family: TableFamily, table: &str, changes: &[ElementChange]) -> String {
    let mut out = String::new();
    for c in changes.iter().filter(|c| !c.elements.is_empty()) {
        let verb = if c.add { "add" } else { "delete" };
        out.push_str(&format!(
            "{verb} element {family} {table} {} {{ {} }}\n",
            c.set,
            c.elements.join(", ")
        ));
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    V4,
    V6,
    Proto,
    Port,
}

/// Key layout of a set declaration we can encode: (parts, interval).
fn layout(decl: &str) -> Option<(Vec<Part>, bool)> {
    let mut types = None;
    let mut interval = false;
    for stmt in decl.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        if let Some(t) = stmt.strip_prefix("type ") {
            let parts = t
                .split(" . ")
                .map(|p| match p.trim() {
                    "ipv4_addr" => Some(Part::V4),
                    "ipv6_addr" => Some(Part::V6),
                    "inet_proto" => Some(Part::Proto),
                    "inet_service" => Some(Part::Port),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            types = Some(parts);
        } else if stmt == "flags interval" {
            interval = true;
        } else {
            return None;
        }
    }
    let parts = types?;
    let single_addr = parts.len() == 1 && matches!(parts[0], Part::V4 | Part::V6);
    let named_port = parts.len() == 3
        && matches!(parts[0], Part::V4 | Part::V6)
        && parts[1] == Part::Proto
        && parts[2] == Part::Port;
    // Interval sets: single address keys only (concatenated ranges use another encoding).
    let known = if interval {
        single_addr
    } else {
        single_addr || named_port
    };
    if !known {
        return None;
    }
    Some((parts, interval))
}

fn addr_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

/// Big-endian increment; `None` on overflow (the range ends at the top of the space).
fn plus_one(mut b: Vec<u8>) -> Option<Vec<u8>> {
    for byte in b.iter_mut().rev() {
        if *byte == 0xff {
            *byte = 0;
        } else {
            *byte += 1;
            return Some(b);
        }
    }
    None
}

fn proto_number(s: &str) -> Option<u8> {
    match s {
        "tcp" => Some(6),
        "udp" => Some(17),
        "sctp" => Some(132),
        "icmp" => Some(1),
        "ipv6-icmp" | "icmpv6" => Some(58),
        "udplite" => Some(136),
        n => n.parse().ok(),
    }
}

/// Kernel elements (key, flags) of one element in nft syntax.
fn encode_element(parts: &[Part], interval: bool, text: &str) -> Option<Vec<(Vec<u8>, u32)>> {
    if interval {
        let fam_ok = |a: &IpAddr| a.is_ipv4() == (parts[0] == Part::V4);
        let net: IpNet = match text.parse::<IpNet>() {
            Ok(n) if n == n.trunc() => n,
            Ok(_) => return None,
            Err(_) => IpNet::from(text.parse::<IpAddr>().ok()?),
        };
        if !fam_ok(&net.addr()) {
            return None;
        }
        let mut out = vec![(addr_bytes(net.network()), 0)];
        if let Some(end) = plus_one(addr_bytes(net.broadcast())) {
            out.push((end, NFT_SET_ELEM_INTERVAL_END));
        }
        return Some(out);
    }
    let fields: Vec<&str> = text.split(" . ").map(str::trim).collect();
    if fields.len() != parts.len() {
        return None;
    }
    let mut key = Vec::new();
    for (p, f) in parts.iter().zip(fields) {
        match p {
            Part::V4 | Part::V6 => {
                let a: IpAddr = f.parse().ok()?;
                if a.is_ipv4() != (*p == Part::V4) {
                    return None;
                }
                key.extend(addr_bytes(a));
            }
            Part::Proto => key.extend([proto_number(f)?, 0, 0, 0]),
            Part::Port => {
                let port: u16 = f.parse().ok()?;
                key.extend(port.to_be_bytes());
                key.extend([0, 0]);
            }
        }
    }
    Some(vec![(key, 0)])
}

fn family_number(f: TableFamily) -> u8 {
    match f {
        TableFamily::Inet => 1,
        TableFamily::Ip => 2,
        TableFamily::Arp => 3,
        TableFamily::Netdev => 5,
        TableFamily::Bridge => 7,
        TableFamily::Ip6 => 10,
    }
}

struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    fn new(kind: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> Msg {
        let mut buf = Vec::with_capacity(256);
        buf.extend(0u32.to_ne_bytes()); // length, patched in finish()
        buf.extend(kind.to_ne_bytes());
        buf.extend(flags.to_ne_bytes());
        buf.extend(seq.to_ne_bytes());
        buf.extend(0u32.to_ne_bytes()); // port id
        buf.extend([family, 0]); // nfgenmsg: family, NFNETLINK_V0
        buf.extend(res_id.to_be_bytes());
        Msg {
            buf,
            nests: Vec::new(),
        }
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn attr(&mut self, kind: u16, data: &[u8]) {
        let len = u16::try_from(4 + data.len()).unwrap_or(u16::MAX);
        self.buf.extend(len.to_ne_bytes());
        self.buf.extend(kind.to_ne_bytes());
        self.buf.extend(data);
        self.pad();
    }

    fn str_attr(&mut self, kind: u16, s: &str) {
        let mut d = s.as_bytes().to_vec();
        d.push(0);
        self.attr(kind, &d);
    }

    fn begin(&mut self, kind: u16) {
        self.nests.push(self.buf.len());
        self.buf.extend(0u16.to_ne_bytes());
        self.buf.extend((kind | NLA_F_NESTED).to_ne_bytes());
    }

    fn end(&mut self) {
        if let Some(start) = self.nests.pop() {
            let len = u16::try_from(self.buf.len() - start).unwrap_or(u16::MAX);
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
    }

    fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// An encoded batch and the sequence numbers that must be acknowledged.
#[derive(Debug)]
pub struct Batch {
    bytes: Vec<u8>,
    acks: Vec<u32>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.acks.is_empty()
    }
}

/// Encode `changes` as one nfnetlink batch; `None` when a set's declaration or an element is
/// outside what this encoder knows, or the batch would be too big for one send.
pub fn encode(family: TableFamily, table: &str, changes: &[ElementChange]) -> Option<Batch> {
    let fam = family_number(family);
    let mut seq = 1u32;
    let mut bytes = Msg::new(
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
    )
    .finish();
    let mut acks = Vec::new();
    for c in changes.iter().filter(|c| !c.elements.is_empty()) {
        let (parts, interval) = layout(&c.decl)?;
        let mut elems = Vec::new();
        for e in &c.elements {
            elems.extend(encode_element(&parts, interval, e)?);
        }
        let (kind, flags) = if c.add {
            (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE)
        } else {
            (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK)
        };
        for chunk in elems.chunks(ELEMS_PER_MSG) {
            seq += 1;
            let mut m = Msg::new((NFNL_SUBSYS_NFTABLES << 8) | kind, flags, seq, fam, 0);
            m.str_attr(NFTA_SET_ELEM_LIST_TABLE, table);
            m.str_attr(NFTA_SET_ELEM_LIST_SET, &c.set);
            m.begin(NFTA_SET_ELEM_LIST_ELEMENTS);
            for (key, eflags) in chunk {
                m.begin(NFTA_LIST_ELEM);
                m.begin(NFTA_SET_ELEM_KEY);
                m.attr(NFTA_DATA_VALUE, key);
                m.end();
                if *eflags != 0 {
                    m.attr(NFTA_SET_ELEM_FLAGS, &eflags.to_be_bytes());
                }
                m.end();
            }
            m.end();
            bytes.extend(m.finish());
            acks.push(seq);
            if bytes.len() > MAX_BATCH {
                return None;
            }
        }
    }
    seq += 1;
    bytes.extend(
        Msg::new(
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            seq,
            0,
            NFNL_SUBSYS_NFTABLES,
        )
        .finish(),
    );
    Some(Batch { bytes, acks })
}

/// Send `batch` on a new nfnetlink socket in the calling thread's network namespace and wait
/// for every acknowledgement. An error means the kernel rejected the batch (nothing applied).
pub fn send(batch: &Batch) -> io::Result<()> {
    use nix::sys::socket::{
        AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto,
        setsockopt, socket, sockopt,
    };
    if batch.is_empty() {
        return Ok(());
    }
    let sock = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkNetFilter,
    )?;
    setsockopt(
        &sock,
        sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(5, 0),
    )?;
    let kernel = NetlinkAddr::new(0, 0);
    let sent = sendto(sock.as_raw_fd(), &batch.bytes, &kernel, MsgFlags::empty())?;
    if sent != batch.bytes.len() {
        return Err(io::Error::other("nfnetlink: short send"));
    }
    let mut pending: std::collections::BTreeSet<u32> = batch.acks.iter().copied().collect();
    let mut buf = vec![0u8; 64 * 1024];
    while !pending.is_empty() {
        let n = recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        let word = |at: usize| u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        let mut off = 0;
        while off + 16 <= n {
            let len = usize::try_from(word(off)).unwrap_or(0);
            let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
            let seq = word(off + 8);
            if len < 16 || off + len > n {
                break;
            }
            if kind == NLMSG_ERROR && len >= 20 {
                let code = i32::from_ne_bytes(word(off + 16).to_ne_bytes());
                if code != 0 {
                    return Err(io::Error::from_raw_os_error(-code));
                }
                pending.remove(&seq);
            }
            off += (len + 3) & !3;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(decl: &str, add: bool, elements: &[&str]) -> ElementChange {
        ElementChange {
            set: "s4-x".into(),
            decl: decl.into(),
            add,
            elements: elements.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn layouts_of_felix_sets_and_nothing_else() {
        assert_eq!(
            layout("type ipv4_addr; flags interval;"),
            Some((vec![Part::V4], true))
        );
        assert_eq!(
            layout("type ipv6_addr . inet_proto . inet_service;"),
            Some((vec![Part::V6, Part::Proto, Part::Port], false))
        );
        assert_eq!(layout("type ifname : verdict;"), None);
        assert_eq!(layout("type ipv4_addr; flags interval; auto-merge;"), None);
        assert_eq!(
            layout("type ipv4_addr . inet_service; flags interval;"),
            None
        );
    }

    #[test]
    fn interval_elements_have_start_and_end_keys() {
        let p = [Part::V4];
        assert_eq!(
            encode_element(&p, true, "10.0.0.1"),
            Some(vec![
                (vec![10, 0, 0, 1], 0),
                (vec![10, 0, 0, 2], NFT_SET_ELEM_INTERVAL_END)
            ])
        );
        assert_eq!(
            encode_element(&p, true, "10.1.0.0/16"),
            Some(vec![
                (vec![10, 1, 0, 0], 0),
                (vec![10, 2, 0, 0], NFT_SET_ELEM_INTERVAL_END)
            ])
        );
        // The top of the space has no end element.
        assert_eq!(
            encode_element(&p, true, "255.255.255.255"),
            Some(vec![(vec![255; 4], 0)])
        );
        assert_eq!(
            encode_element(&p, true, "0.0.0.0/0"),
            Some(vec![(vec![0; 4], 0)])
        );
        // Not a network prefix, wrong family, garbage: not encodable.
        assert_eq!(encode_element(&p, true, "10.0.0.1/8"), None);
        assert_eq!(encode_element(&p, true, "fd00::1"), None);
        assert_eq!(encode_element(&p, true, "ten"), None);
        let v6 = encode_element(&[Part::V6], true, "fd00::/64").unwrap();
        assert_eq!(v6[1].0[7], 1, "{v6:?}");
    }

    #[test]
    fn named_port_keys_pad_every_field_to_four_bytes() {
        let p = [Part::V4, Part::Proto, Part::Port];
        assert_eq!(
            encode_element(&p, false, "10.0.0.1 . 6 . 8080"),
            Some(vec![(vec![10, 0, 0, 1, 6, 0, 0, 0, 0x1f, 0x90, 0, 0], 0)])
        );
        assert_eq!(
            encode_element(&p, false, "10.0.0.1 . udp . 53"),
            Some(vec![(vec![10, 0, 0, 1, 17, 0, 0, 0, 0, 53, 0, 0], 0)])
        );
        assert_eq!(encode_element(&p, false, "10.0.0.1 . 6"), None);
    }

    #[test]
    fn batch_framing() {
        let b = encode(
            TableFamily::Inet,
            "calico",
            &[
                change("type ipv4_addr; flags interval;", false, &["10.0.0.1"]),
                change("type ipv4_addr; flags interval;", true, &["10.0.0.2"]),
                change("type ipv4_addr; flags interval;", true, &[]),
            ],
        )
        .unwrap();
        assert_eq!(b.acks, vec![2, 3]);
        // Messages are 4-byte aligned and their lengths add up to the batch.
        let mut off = 0;
        let mut kinds = Vec::new();
        while off < b.bytes.len() {
            let len = u32::from_ne_bytes(b.bytes[off..off + 4].try_into().unwrap()) as usize;
            kinds.push(u16::from_ne_bytes([b.bytes[off + 4], b.bytes[off + 5]]));
            assert_eq!(len % 4, 0);
            off += len;
        }
        assert_eq!(off, b.bytes.len());
        assert_eq!(kinds, vec![0x10, 0x0a0e, 0x0a0c, 0x11]);
        assert!(
            encode(
                TableFamily::Inet,
                "t",
                &[change("type ifname;", true, &["x"])]
            )
            .is_none()
        );
    }

    #[test]
    fn script_fallback_text() {
        let s = element_script(
            TableFamily::Inet,
            "calico",
            &[
                change("", false, &["10.0.0.1"]),
                change("", true, &["10.0.0.2", "10.0.0.3"]),
            ],
        );
        assert_eq!(
            s,
            "delete element inet calico s4-x { 10.0.0.1 }\nadd element inet calico s4-x { 10.0.0.2, 10.0.0.3 }\n"
        );
    }
}
