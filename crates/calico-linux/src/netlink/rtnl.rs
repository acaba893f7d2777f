//! [`Netlink`] on rtnetlink 0.24 / netlink-packet-route 0.34. This is the only file that
//! touches those crates' types, so upgrades stay here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo,
    LinkMessage, State,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol,
    RouteScope as NlScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::sys::AsyncSocket;
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVxlan};
use tokio::task::JoinHandle;

use super::{
    AddressEventStream, LinkEventStream, LinkTracker, Netlink, NetlinkError, validate_link_name,
};
use crate::netns::NetNs;
use crate::types::{
    AddressEvent, AddressInfo, Family, FdbEntry, LinkEvent, LinkInfo, MacAddr, Neighbour,
    OperState, Route, RouteFilter, RouteKind, RouteScope, VethSpec, VxlanSpec,
};

/// `RTMGRP_LINK`: multicast group bit for link notifications.
const RTMGRP_LINK: u32 = 1;
/// `RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR`.
const RTMGRP_IFADDR: u32 = 0x10 | 0x100;

/// Receive buffer requested for monitor sockets.
const MONITOR_RCVBUF: usize = 4 * 1024 * 1024;

/// Aborts the connection task when the last user goes away.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The real [`Netlink`]: an rtnetlink connection bound to one namespace.
///
/// Cloning shares the connection. Must be created inside a tokio runtime; the connection task
/// runs on it.
#[derive(Clone, Debug)]
pub struct RtNetlink {
    handle: Handle,
    netns: Option<NetNs>,
    _conn: Arc<AbortOnDrop>,
}

type Conn = (
    rtnetlink::proto::Connection<RouteNetlinkMessage>,
    Handle,
    futures::channel::mpsc::UnboundedReceiver<(
        rtnetlink::packet_core::NetlinkMessage<RouteNetlinkMessage>,
        rtnetlink::sys::SocketAddr,
    )>,
);

/// Open a netlink socket in `netns` (or the caller's namespace). The socket is created on a
/// thread inside the namespace (a socket belongs to its creator's namespace for life) but
/// registered with the caller's tokio reactor.
fn open(netns: Option<&NetNs>, groups: u32) -> Result<Conn, NetlinkError> {
    let rt = tokio::runtime::Handle::try_current()
        .map_err(|e| NetlinkError::NoRuntime(e.to_string()))?;
    let make = move || -> Result<Conn, NetlinkError> {
        let _guard = rt.enter();
        let (mut conn, handle, messages) =
            rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
        if groups != 0 {
            // A burst of link changes (hundreds of veths at startup) must not overflow the
            // default ~200 KiB receive buffer; best effort, the kernel caps it at rmem_max.
            let _ = conn.socket_mut().socket_mut().set_rx_buf_sz(MONITOR_RCVBUF);
            let addr = rtnetlink::sys::SocketAddr::new(0, groups);
            conn.socket_mut()
                .socket_mut()
                .bind(&addr)
                .map_err(NetlinkError::Connect)?;
        }
        Ok((conn, handle, messages))
    };
    match netns {
        None => make(),
        Some(ns) => ns.run(make)?,
    }
}

impl RtNetlink {
    /// Connect in the caller's namespace.
    pub fn connect() -> Result<RtNetlink, NetlinkError> {
        RtNetlink::connect_opt(None)
    }

    /// Connect in `netns`; every request through this handle acts on that namespace.
    pub fn connect_in(netns: &NetNs) -> Result<RtNetlink, NetlinkError> {
        RtNetlink::connect_opt(Some(netns))
    }

    fn connect_opt(netns: Option<&NetNs>) -> Result<RtNetlink, NetlinkError> {
        let (conn, handle, _messages) = open(netns, 0)?;
        let task = tokio::spawn(conn);
        // Remember the namespace even for `connect()`, so monitors opened later from another
        // thread still watch the namespace this handle acts on.
        let netns = match netns {
            Some(ns) => Some(ns.clone()),
            None => NetNs::current().ok(),
        };
        Ok(RtNetlink {
            handle,
            netns,
            _conn: Arc::new(AbortOnDrop(task)),
        })
    }

    /// Deletes the link `name` of the calling thread's namespace with one blocking request on
    /// a socket of its own: no tokio runtime, no connection task. For short-lived helper
    /// processes whose whole job is this request, where starting those costs more than it.
    pub fn delete_link_by_name_blocking(name: &str) -> Result<(), NetlinkError> {
        use rtnetlink::packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage};
        validate_link_name(name)?;
        let object = || format!("link {name}");
        let mut socket = rtnetlink::sys::Socket::new(rtnetlink::sys::protocols::NETLINK_ROUTE)
            .map_err(NetlinkError::Connect)?;
        socket.bind_auto().map_err(NetlinkError::Connect)?;
        let mut link = LinkMessage::default();
        link.attributes
            .push(LinkAttribute::IfName(name.to_string()));
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK;
        header.sequence_number = 1;
        let mut msg = NetlinkMessage::new(
            header,
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)),
        );
        msg.finalize();
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut buf);
        let io = |e: std::io::Error| NetlinkError::Protocol {
            object: object(),
            op: "delete",
            detail: e.to_string(),
        };
        socket.send(&buf, 0).map_err(io)?;
        let mut reply = vec![0u8; 4096];
        let n = socket.recv(&mut &mut reply[..], 0).map_err(io)?;
        let reply =
            NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply[..n.min(reply.len())])
                .map_err(|e| NetlinkError::Protocol {
                    object: object(),
                    op: "delete",
                    detail: e.to_string(),
                })?;
        match reply.payload {
            NetlinkPayload::Error(e) if e.code.is_some() => Err(kernel_err(
                object(),
                "delete",
                rtnetlink::Error::NetlinkError(e),
            )),
            _ => Ok(()),
        }
    }

    /// The namespace this handle acts on (`None` only if it could not be determined, in
    /// which case monitors open in the calling thread's namespace).
    pub fn netns(&self) -> Option<&NetNs> {
        self.netns.as_ref()
    }

    async fn link_name_for_error(&self, index: u32) -> String {
        match self.link_by_index(index).await {
            Ok(Some(l)) => l.name,
            _ => format!("index {index}"),
        }
    }

    async fn set_link(
        &self,
        index: u32,
        op: &'static str,
        msg: LinkMessage,
    ) -> Result<(), NetlinkError> {
        match self.handle.link().set(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) => Err(kernel_err(
                format!("link {}", self.link_name_for_error(index).await),
                op,
                e,
            )),
        }
    }

    async fn dump_addresses(
        &self,
        index: Option<u32>,
    ) -> Result<Vec<AddressMessage>, NetlinkError> {
        let mut req = self.handle.address().get();
        if let Some(i) = index {
            req = req.set_link_index_filter(i);
        }
        req.execute()
            .try_collect()
            .await
            .map_err(|e| kernel_err("addresses".into(), "list", e))
    }

    async fn dump_neighbours(
        &self,
        family: AddressFamily,
    ) -> Result<Vec<NeighbourMessage>, NetlinkError> {
        self.handle
            .neighbours()
            .get()
            .set_address_family(family)
            .execute()
            .try_collect()
            .await
            .map_err(|e| kernel_err("neighbours".into(), "list", e))
    }
}

/// Map an rtnetlink error to ours, naming the object.
fn kernel_err(object: String, op: &'static str, e: rtnetlink::Error) -> NetlinkError {
    match e {
        rtnetlink::Error::NetlinkError(msg) => {
            let errno = -msg.raw_code();
            let desc = nix::errno::Errno::from_raw(errno).desc();
            let mut reason = desc.to_string();
            if let Some(first) = reason.get(..1) {
                reason = first.to_lowercase() + &reason[1..];
            }
            NetlinkError::Kernel {
                object,
                op,
                errno,
                reason,
            }
        }
        other => NetlinkError::Protocol {
            object,
            op,
            detail: other.to_string(),
        },
    }
}

fn oper_state(s: &State) -> OperState {
    match s {
        State::Unknown => OperState::Unknown,
        State::NotPresent => OperState::NotPresent,
        State::Down => OperState::Down,
        State::LowerLayerDown => OperState::LowerLayerDown,
        State::Testing => OperState::Testing,
        State::Dormant => OperState::Dormant,
        State::Up => OperState::Up,
        _ => OperState::Unknown,
    }
}

fn link_info(msg: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: msg.header.index,
        name: String::new(),
        mac: None,
        mtu: 0,
        admin_up: msg.header.flags.contains(LinkFlags::Up),
        oper_state: OperState::Unknown,
        kind: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => info.name = n.clone(),
            LinkAttribute::Address(a) => info.mac = MacAddr::from_slice(a),
            LinkAttribute::Mtu(m) => info.mtu = *m,
            LinkAttribute::OperState(s) => info.oper_state = oper_state(s),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let NlLinkInfo::Kind(k) = i {
                        info.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    info
}

fn route_kind_to_nl(k: RouteKind) -> RouteType {
    match k {
        RouteKind::Unicast => RouteType::Unicast,
        RouteKind::Local => RouteType::Local,
        RouteKind::Broadcast => RouteType::Broadcast,
        RouteKind::Blackhole => RouteType::BlackHole,
        RouteKind::Unreachable => RouteType::Unreachable,
        RouteKind::Prohibit => RouteType::Prohibit,
        RouteKind::Throw => RouteType::Throw,
        RouteKind::Other(n) => RouteType::from(n),
    }
}

fn route_kind_from_nl(k: RouteType) -> RouteKind {
    match k {
        RouteType::Unicast => RouteKind::Unicast,
        RouteType::Local => RouteKind::Local,
        RouteType::Broadcast => RouteKind::Broadcast,
        RouteType::BlackHole => RouteKind::Blackhole,
        RouteType::Unreachable => RouteKind::Unreachable,
        RouteType::Prohibit => RouteKind::Prohibit,
        RouteType::Throw => RouteKind::Throw,
        other => RouteKind::Other(u8::from(other)),
    }
}

fn scope_to_nl(s: RouteScope) -> NlScope {
    match s {
        RouteScope::Universe => NlScope::Universe,
        RouteScope::Site => NlScope::Site,
        RouteScope::Link => NlScope::Link,
        RouteScope::Host => NlScope::Host,
        RouteScope::Nowhere => NlScope::NoWhere,
        RouteScope::Other(n) => NlScope::from(n),
    }
}

fn scope_from_nl(s: NlScope) -> RouteScope {
    match s {
        NlScope::Universe => RouteScope::Universe,
        NlScope::Site => RouteScope::Site,
        NlScope::Link => RouteScope::Link,
        NlScope::Host => RouteScope::Host,
        NlScope::NoWhere => RouteScope::Nowhere,
        other => RouteScope::Other(u8::from(other)),
    }
}

fn family_of(ip: &IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// Build the netlink message for `route`. For deletion the scope is left as "nowhere", which
/// the kernel treats as "any scope" when matching.
fn route_msg(route: &Route, for_delete: bool) -> RouteMessage {
    let mut msg = RouteMessage::default();
    let h = &mut msg.header;
    h.address_family = family_of(&route.dst.addr());
    h.destination_prefix_length = route.dst.prefix_len();
    h.table = u8::try_from(route.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
    h.protocol = RouteProtocol::from(route.protocol);
    h.scope = if for_delete {
        NlScope::NoWhere
    } else {
        scope_to_nl(route.scope)
    };
    h.kind = route_kind_to_nl(route.kind);
    if route.onlink {
        h.flags.insert(RouteFlags::Onlink);
    }
    let attrs = &mut msg.attributes;
    attrs.push(RouteAttribute::Table(route.table));
    if route.dst.prefix_len() > 0 {
        attrs.push(RouteAttribute::Destination(RouteAddress::from(
            route.dst.network(),
        )));
    }
    if let Some(gw) = route.gateway {
        attrs.push(RouteAttribute::Gateway(RouteAddress::from(gw)));
    }
    if let Some(oif) = route.oif {
        attrs.push(RouteAttribute::Oif(oif));
    }
    if let Some(metric) = route.metric {
        attrs.push(RouteAttribute::Priority(metric));
    }
    if let Some(src) = route.src {
        attrs.push(RouteAttribute::PrefSource(RouteAddress::from(src)));
    }
    msg
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// Parse a dumped route; `None` for families we do not model.
fn route_from_msg(msg: &RouteMessage) -> Option<Route> {
    let h = &msg.header;
    let unspecified = match h.address_family {
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let mut dst_addr = unspecified;
    let mut route = Route::new(IpNet::new(unspecified, 0).ok()?);
    route.table = u32::from(h.table);
    route.protocol = u8::from(h.protocol);
    route.scope = scope_from_nl(h.scope);
    route.kind = route_kind_from_nl(h.kind);
    route.onlink = h.flags.contains(RouteFlags::Onlink);
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(a) => dst_addr = route_addr(a)?,
            RouteAttribute::Gateway(a) => route.gateway = route_addr(a),
            RouteAttribute::Oif(i) => route.oif = Some(*i),
            RouteAttribute::Priority(p) => route.metric = Some(*p),
            RouteAttribute::PrefSource(a) => route.src = route_addr(a),
            RouteAttribute::Table(t) => route.table = *t,
            _ => {}
        }
    }
    route.dst = IpNet::new(dst_addr, h.destination_prefix_length).ok()?;
    Some(route)
}

fn addr_from_msg(msg: &AddressMessage) -> Option<AddressInfo> {
    let mut local = None;
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    // For IPv4 IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer on
    // point-to-point links); IPv6 only sends IFA_ADDRESS.
    let ip = local.or(address)?;
    Some(AddressInfo {
        index: msg.header.index,
        addr: IpNet::new(ip, msg.header.prefix_len).ok()?,
    })
}

fn neigh_dst(msg: &NeighbourMessage) -> Option<IpAddr> {
    msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        // AF_BRIDGE (FDB) messages carry NDA_DST as raw bytes; the length tells the family.
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => match b.len() {
            4 => <[u8; 4]>::try_from(b.as_slice()).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(b.as_slice()).ok().map(IpAddr::from),
            _ => None,
        },
        _ => None,
    })
}

fn neigh_mac(msg: &NeighbourMessage) -> Option<MacAddr> {
    msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(b) => MacAddr::from_slice(b),
        _ => None,
    })
}

fn neigh_address(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }
}

#[async_trait]
impl Netlink for RtNetlink {
    async fn list_links(&self) -> Result<Vec<LinkInfo>, NetlinkError> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| kernel_err("links".into(), "list", e))?;
        let mut links: Vec<LinkInfo> = msgs.iter().map(link_info).collect();
        links.sort_by_key(|l| l.index);
        Ok(links)
    }

    async fn link_by_name(&self, name: &str) -> Result<Option<LinkInfo>, NetlinkError> {
        validate_link_name(name)?;
        let mut stream = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match stream.try_next().await {
            Ok(Some(msg)) => Ok(Some(link_info(&msg))),
            Ok(None) => Ok(None),
            Err(e) => {
                let err = kernel_err(format!("link {name}"), "get", e);
                if err.is_not_found() {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    async fn link_by_index(&self, index: u32) -> Result<Option<LinkInfo>, NetlinkError> {
        let mut stream = self.handle.link().get().match_index(index).execute();
        match stream.try_next().await {
            Ok(Some(msg)) => Ok(Some(link_info(&msg))),
            Ok(None) => Ok(None),
            Err(e) => {
                let err = kernel_err(format!("link index {index}"), "get", e);
                if err.is_not_found() {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    async fn create_veth(&self, spec: &VethSpec) -> Result<(), NetlinkError> {
        validate_link_name(&spec.name)?;
        validate_link_name(&spec.peer_name)?;
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new().name(spec.peer_name.clone());
        if let Some(ns) = &spec.peer_netns {
            // The fd stays open for the whole request: `spec` borrows the NetNs.
            peer = peer.setns_by_fd(ns.as_fd().as_raw_fd());
        }
        if let Some(mac) = spec.peer_mac {
            peer = peer.address(mac.0.to_vec());
        }
        if let Some(mtu) = spec.mtu {
            peer = peer.mtu(mtu);
        }
        let mut b = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(spec.name.clone())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())));
        if let Some(mac) = spec.mac {
            b = b.address(mac.0.to_vec());
        }
        if let Some(mtu) = spec.mtu {
            b = b.mtu(mtu);
        }
        tracing::debug!(name = %spec.name, peer = %spec.peer_name, "create veth");
        self.handle
            .link()
            .add(b.build())
            .execute()
            .await
            .map_err(|e| kernel_err(format!("link {}", spec.name), "create veth", e))
    }

    async fn create_vxlan(&self, spec: &VxlanSpec) -> Result<(), NetlinkError> {
        validate_link_name(&spec.name)?;
        let mut b = LinkVxlan::new(&spec.name, spec.vni)
            .port(spec.port)
            .learning(spec.learning);
        match spec.local {
            Some(IpAddr::V4(v4)) => b = b.local(v4),
            Some(IpAddr::V6(v6)) => b = b.local6(v6),
            None => {}
        }
        if let Some(parent) = spec.parent_index {
            b = b.dev(parent);
        }
        if let Some(mtu) = spec.mtu {
            b = b.mtu(mtu);
        }
        if let Some(mac) = spec.mac {
            b = b.address(mac.0.to_vec());
        }
        tracing::debug!(name = %spec.name, vni = spec.vni, "create vxlan");
        self.handle
            .link()
            .add(b.build())
            .execute()
            .await
            .map_err(|e| kernel_err(format!("link {}", spec.name), "create vxlan", e))
    }

    async fn vxlan_info(&self, index: u32) -> Result<Option<VxlanSpec>, NetlinkError> {
        let mut stream = self.handle.link().get().match_index(index).execute();
        let msg = match stream.try_next().await {
            Ok(Some(msg)) => msg,
            Ok(None) => return Ok(None),
            Err(e) => {
                let err = kernel_err(format!("link index {index}"), "get", e);
                return if err.is_not_found() {
                    Ok(None)
                } else {
                    Err(err)
                };
            }
        };
        let info = link_info(&msg);
        let data = msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                NlLinkInfo::Data(InfoData::Vxlan(v)) => Some(v),
                _ => None,
            }),
            _ => None,
        });
        let Some(data) = data else {
            return Ok(None);
        };
        let mut spec = VxlanSpec {
            name: info.name,
            vni: 0,
            port: 0,
            local: None,
            parent_index: None,
            // The kernel omits IFLA_VXLAN_LEARNING only on very old kernels; default on.
            learning: true,
            mtu: Some(info.mtu),
            mac: info.mac,
        };
        for attr in data {
            match attr {
                InfoVxlan::Id(v) => spec.vni = *v,
                InfoVxlan::Port(p) => spec.port = *p,
                InfoVxlan::Local(a) => spec.local = Some(IpAddr::V4(*a)),
                InfoVxlan::Local6(a) => spec.local = Some(IpAddr::V6(*a)),
                InfoVxlan::Link(l) => spec.parent_index = Some(*l),
                InfoVxlan::Learning(l) => spec.learning = *l,
                _ => {}
            }
        }
        Ok(Some(spec))
    }

    async fn set_link_up(&self, index: u32, up: bool) -> Result<(), NetlinkError> {
        let b = LinkUnspec::new_with_index(index);
        let (op, msg) = if up {
            ("set up", b.up().build())
        } else {
            ("set down", b.down().build())
        };
        self.set_link(index, op, msg).await
    }

    async fn set_link_mtu(&self, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index).mtu(mtu).build();
        self.set_link(index, "set mtu", msg).await
    }

    async fn set_link_mac(&self, index: u32, mac: MacAddr) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index)
            .address(mac.0.to_vec())
            .build();
        self.set_link(index, "set mac", msg).await
    }

    async fn set_link_name(&self, index: u32, name: &str) -> Result<(), NetlinkError> {
        validate_link_name(name)?;
        let msg = LinkUnspec::new_with_index(index)
            .name(name.to_string())
            .build();
        self.set_link(index, "rename", msg).await
    }

    async fn move_link_to_netns(&self, index: u32, netns: &NetNs) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index)
            .setns_by_fd(netns.as_fd().as_raw_fd())
            .build();
        self.set_link(index, "move to netns", msg).await
    }

    async fn delete_link(&self, index: u32) -> Result<(), NetlinkError> {
        let name = self.link_name_for_error(index).await;
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(|e| kernel_err(format!("link {name}"), "delete", e))
    }

    async fn add_address(&self, index: u32, addr: IpNet) -> Result<(), NetlinkError> {
        self.handle
            .address()
            .add(index, addr.addr(), addr.prefix_len())
            .execute()
            .await
            .map_err(|e| kernel_err(format!("address {addr} on link index {index}"), "add", e))
    }

    async fn del_address(&self, index: u32, addr: IpNet) -> Result<(), NetlinkError> {
        let msgs = self.dump_addresses(Some(index)).await?;
        let found = msgs
            .into_iter()
            .find(|m| addr_from_msg(m).is_some_and(|a| a.index == index && a.addr == addr));
        let object = || format!("address {addr} on link index {index}");
        match found {
            None => Err(NetlinkError::Kernel {
                object: object(),
                op: "delete",
                errno: libc::EADDRNOTAVAIL,
                reason: "cannot assign requested address".into(),
            }),
            Some(msg) => self
                .handle
                .address()
                .del(msg)
                .execute()
                .await
                .map_err(|e| kernel_err(object(), "delete", e)),
        }
    }

    async fn list_addresses(&self, index: Option<u32>) -> Result<Vec<AddressInfo>, NetlinkError> {
        let msgs = self.dump_addresses(index).await?;
        let mut out: Vec<AddressInfo> = msgs
            .iter()
            .filter_map(addr_from_msg)
            .filter(|a| index.is_none_or(|i| a.index == i))
            .collect();
        out.sort();
        Ok(out)
    }

    async fn add_route(&self, route: &Route) -> Result<(), NetlinkError> {
        tracing::debug!(dst = %route.dst, "add route");
        self.handle
            .route()
            .add(route_msg(route, false))
            .execute()
            .await
            .map_err(|e| kernel_err(format!("route {}", route.dst), "add", e))
    }

    async fn replace_route(&self, route: &Route) -> Result<(), NetlinkError> {
        tracing::debug!(dst = %route.dst, "replace route");
        self.handle
            .route()
            .add(route_msg(route, false))
            .replace()
            .execute()
            .await
            .map_err(|e| kernel_err(format!("route {}", route.dst), "replace", e))
    }

    async fn del_route(&self, route: &Route) -> Result<(), NetlinkError> {
        tracing::debug!(dst = %route.dst, "delete route");
        self.handle
            .route()
            .del(route_msg(route, true))
            .execute()
            .await
            .map_err(|e| kernel_err(format!("route {}", route.dst), "delete", e))
    }

    async fn list_routes(&self, filter: &RouteFilter) -> Result<Vec<Route>, NetlinkError> {
        let req = match filter.family {
            Family::V4 => rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new().build(),
            Family::V6 => rtnetlink::RouteMessageBuilder::<Ipv6Addr>::new().build(),
        };
        let msgs: Vec<RouteMessage> = self
            .handle
            .route()
            .get(req)
            .execute()
            .try_collect()
            .await
            .map_err(|e| kernel_err("routes".into(), "list", e))?;
        let mut routes: Vec<Route> = msgs
            .iter()
            .filter(|m| !m.header.flags.contains(RouteFlags::Cloned))
            .filter_map(route_from_msg)
            .filter(|r| filter.matches(r))
            .collect();
        routes.sort();
        Ok(routes)
    }

    async fn replace_neighbour(&self, neigh: &Neighbour) -> Result<(), NetlinkError> {
        self.handle
            .neighbours()
            .add(neigh.index, neigh.ip)
            .link_layer_address(&neigh.mac.0)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(|e| {
                kernel_err(
                    format!("neighbour {} on link index {}", neigh.ip, neigh.index),
                    "replace",
                    e,
                )
            })
    }

    async fn del_neighbour(&self, neigh: &Neighbour) -> Result<(), NetlinkError> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = family_of(&neigh.ip);
        msg.header.ifindex = neigh.index;
        msg.attributes
            .push(NeighbourAttribute::Destination(neigh_address(neigh.ip)));
        self.handle
            .neighbours()
            .del(msg)
            .execute()
            .await
            .map_err(|e| {
                kernel_err(
                    format!("neighbour {} on link index {}", neigh.ip, neigh.index),
                    "delete",
                    e,
                )
            })
    }

    async fn list_neighbours(
        &self,
        family: Family,
        index: Option<u32>,
    ) -> Result<Vec<Neighbour>, NetlinkError> {
        let af = match family {
            Family::V4 => AddressFamily::Inet,
            Family::V6 => AddressFamily::Inet6,
        };
        let msgs = self.dump_neighbours(af).await?;
        let mut out: Vec<Neighbour> = msgs
            .iter()
            .filter(|m| m.header.state == NeighbourState::Permanent)
            .filter(|m| index.is_none_or(|i| m.header.ifindex == i))
            .filter_map(|m| {
                Some(Neighbour {
                    index: m.header.ifindex,
                    ip: neigh_dst(m)?,
                    mac: neigh_mac(m)?,
                })
            })
            .collect();
        out.sort();
        Ok(out)
    }

    async fn replace_fdb(&self, entry: &FdbEntry) -> Result<(), NetlinkError> {
        self.handle
            .neighbours()
            .add_bridge(entry.index, &entry.mac.0)
            .destination(entry.dst)
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(|e| {
                kernel_err(
                    format!("fdb {} on link index {}", entry.mac, entry.index),
                    "replace",
                    e,
                )
            })
    }

    async fn del_fdb(&self, entry: &FdbEntry) -> Result<(), NetlinkError> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.ifindex = entry.index;
        msg.header.flags = NeighbourFlags::Own;
        msg.header.state = NeighbourState::Permanent;
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(entry.mac.0.to_vec()));
        msg.attributes
            .push(NeighbourAttribute::Destination(neigh_address(entry.dst)));
        self.handle
            .neighbours()
            .del(msg)
            .execute()
            .await
            .map_err(|e| {
                kernel_err(
                    format!("fdb {} on link index {}", entry.mac, entry.index),
                    "delete",
                    e,
                )
            })
    }

    async fn list_fdb(&self, index: u32) -> Result<Vec<FdbEntry>, NetlinkError> {
        let msgs = self.dump_neighbours(AddressFamily::Bridge).await?;
        let mut out: Vec<FdbEntry> = msgs
            .iter()
            .filter(|m| m.header.ifindex == index)
            .filter_map(|m| {
                Some(FdbEntry {
                    index,
                    mac: neigh_mac(m)?,
                    dst: neigh_dst(m)?,
                })
            })
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    async fn monitor_links(&self) -> Result<LinkEventStream, NetlinkError> {
        // Subscribe before dumping so nothing between the dump and the subscription is lost;
        // the tracker drops the duplicates this produces.
        let (conn, handle, mut messages) = open(self.netns.as_ref(), RTMGRP_LINK)?;
        let conn_task = AbortOnDrop(tokio::spawn(conn));
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<LinkEvent, NetlinkError>>(256);
        let task = tokio::spawn(async move {
            let _conn_task = conn_task;
            let mut tracker = LinkTracker::new();
            let dump: Result<Vec<LinkMessage>, _> =
                handle.link().get().execute().try_collect().await;
            match dump {
                Ok(msgs) => {
                    let mut infos: Vec<LinkInfo> = msgs.iter().map(link_info).collect();
                    infos.sort_by_key(|l| l.index);
                    for info in infos {
                        if let Some(ev) = tracker.update(info)
                            && tx.send(Ok(ev)).await.is_err()
                        {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(kernel_err("links".into(), "dump", e))).await;
                    return;
                }
            }
            if tx.send(Ok(LinkEvent::InSync)).await.is_err() {
                return;
            }
            while let Some((msg, _addr)) = messages.next().await {
                let ev = match msg.payload {
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => {
                        tracker.update(link_info(&m))
                    }
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m)) => {
                        let info = link_info(&m);
                        tracker.remove(info.index, Some(info))
                    }
                    _ => None,
                };
                if let Some(ev) = ev
                    && tx.send(Ok(ev)).await.is_err()
                {
                    return;
                }
            }
            let _ = tx
                .send(Err(NetlinkError::Protocol {
                    object: "link monitor".into(),
                    op: "receive",
                    detail: "netlink connection closed".into(),
                }))
                .await;
        });
        Ok(Box::pin(receiver_stream(rx, AbortOnDrop(task))))
    }

    async fn monitor_addresses(&self) -> Result<AddressEventStream, NetlinkError> {
        let (conn, handle, mut messages) = open(self.netns.as_ref(), RTMGRP_IFADDR)?;
        let conn_task = AbortOnDrop(tokio::spawn(conn));
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<AddressEvent, NetlinkError>>(256);
        let task = tokio::spawn(async move {
            let _conn_task = conn_task;
            let mut known = std::collections::BTreeSet::new();
            let dump: Result<Vec<AddressMessage>, _> =
                handle.address().get().execute().try_collect().await;
            match dump {
                Ok(msgs) => {
                    let mut addrs: Vec<AddressInfo> =
                        msgs.iter().filter_map(addr_from_msg).collect();
                    addrs.sort();
                    for a in addrs {
                        if known.insert(a.clone())
                            && tx.send(Ok(AddressEvent::Added(a))).await.is_err()
                        {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let _ = tx
                        .send(Err(kernel_err("addresses".into(), "dump", e)))
                        .await;
                    return;
                }
            }
            if tx.send(Ok(AddressEvent::InSync)).await.is_err() {
                return;
            }
            while let Some((msg, _addr)) = messages.next().await {
                let ev = match msg.payload {
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(m)) => {
                        addr_from_msg(&m)
                            .filter(|a| known.insert(a.clone()))
                            .map(AddressEvent::Added)
                    }
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(m)) => {
                        addr_from_msg(&m)
                            .filter(|a| known.remove(a))
                            .map(AddressEvent::Removed)
                    }
                    _ => None,
                };
                if let Some(ev) = ev
                    && tx.send(Ok(ev)).await.is_err()
                {
                    return;
                }
            }
            let _ = tx
                .send(Err(NetlinkError::Protocol {
                    object: "address monitor".into(),
                    op: "receive",
                    detail: "netlink connection closed".into(),
                }))
                .await;
        });
        Ok(Box::pin(receiver_stream(rx, AbortOnDrop(task))))
    }
}

/// A stream over `rx` that keeps `guard` (the producing task) alive as long as it exists.
fn receiver_stream<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
    guard: AbortOnDrop,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
        rx.recv().await.map(|item| (item, (rx, guard)))
    })
}
