use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use ipnet::IpNet;

use crate::netlink::{
    AddressEventStream, LinkEventStream, LinkTracker, Netlink, NetlinkError, validate_link_name,
};
use crate::netns::NetNs;
use crate::types::{
    AddressEvent, AddressInfo, Family, FdbEntry, LinkEvent, LinkInfo, MacAddr, Neighbour,
    OperState, Route, RouteFilter, VethSpec, VxlanSpec,
};

type Subscriber = (
    LinkTracker,
    tokio::sync::mpsc::UnboundedSender<Result<LinkEvent, NetlinkError>>,
);

/// The state a [`FakeNetlink`] keeps; readable through [`FakeNetlink::state`].
#[derive(Debug, Default, Clone)]
pub struct FakeNetlinkState {
    pub links: BTreeMap<u32, LinkInfo>,
    /// Local veth peers: index → peer index (both directions).
    pub veth_peers: BTreeMap<u32, u32>,
    pub addresses: BTreeSet<AddressInfo>,
    pub routes: BTreeSet<Route>,
    pub neighbours: BTreeSet<Neighbour>,
    pub fdb: BTreeSet<FdbEntry>,
    /// Names of links moved into (or created in) another namespace.
    pub moved_out: Vec<String>,
    /// VXLAN parameters of VXLAN links, by index.
    pub vxlan: BTreeMap<u32, VxlanSpec>,
}

#[derive(Default)]
struct Inner {
    state: FakeNetlinkState,
    next_index: u32,
    calls: Vec<String>,
    failures: BTreeMap<String, VecDeque<i32>>,
    subscribers: Vec<Subscriber>,
    addr_subscribers: Vec<tokio::sync::mpsc::UnboundedSender<Result<AddressEvent, NetlinkError>>>,
    /// Other fakes standing for other namespaces, by namespace path.
    namespaces: BTreeMap<std::path::PathBuf, FakeNetlink>,
}

/// In-memory [`Netlink`]: one namespace's links, addresses, routes, neighbours and FDB.
///
/// Kernel behaviours modelled: `EEXIST` on duplicate links/addresses/routes, `ENODEV` on
/// unknown link indexes, `ESRCH` deleting a missing route, `EADDRNOTAVAIL` deleting a missing
/// address, deleting a link deletes its local veth peer and every address, route, neighbour
/// and FDB entry on it, a link is oper-up when it is admin-up (and, for a local veth, its
/// peer is admin-up too). Not modelled: connected routes for addresses.
///
/// Other namespaces: register another fake for a namespace path with
/// [`FakeNetlink::link_namespace`]; a veth peer created into (or a link moved to) a
/// [`NetNs`] with that path then appears in that fake. Links sent to unregistered namespaces
/// are only recorded in `moved_out`.
///
/// Cloning shares the state.
#[derive(Clone)]
pub struct FakeNetlink {
    inner: Arc<Mutex<Inner>>,
}

impl Default for FakeNetlink {
    fn default() -> Self {
        FakeNetlink::new()
    }
}

fn kernel(object: String, op: &'static str, errno: i32) -> NetlinkError {
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

/// Identity of a route for add/replace: (table, dst, metric).
fn same_slot(a: &Route, b: &Route) -> bool {
    a.table == b.table && a.dst == b.dst && a.metric == b.metric
}

impl FakeNetlink {
    /// A namespace containing only `lo` (index 1, up).
    pub fn new() -> Self {
        let mut state = FakeNetlinkState::default();
        state.links.insert(
            1,
            LinkInfo {
                index: 1,
                name: "lo".into(),
                mac: Some(MacAddr([0; 6])),
                mtu: 65536,
                admin_up: true,
                oper_state: OperState::Unknown,
                kind: None,
            },
        );
        FakeNetlink {
            inner: Arc::new(Mutex::new(Inner {
                state,
                next_index: 2,
                ..Inner::default()
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A snapshot of the state.
    pub fn state(&self) -> FakeNetlinkState {
        self.lock().state.clone()
    }

    /// Every call made, in order, as `op(args)` strings.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// Make the next call of `op` (the trait method name, e.g. `"add_route"`) fail with
    /// `errno`. Several calls queue up.
    pub fn fail_next(&self, op: &str, errno: i32) {
        self.lock()
            .failures
            .entry(op.to_string())
            .or_default()
            .push_back(errno);
    }

    /// Let this fake stand for the namespace at `path` as seen from other fakes: links this
    /// fake sends to a `NetNs` opened from `path` appear in `other`. For a CNI test: the
    /// container-side fake links the host namespace's path to the host-side fake.
    pub fn link_namespace(&self, path: impl Into<std::path::PathBuf>, other: &FakeNetlink) {
        self.lock().namespaces.insert(path.into(), other.clone());
    }

    /// Insert a link arriving from another namespace; fails with `EEXIST` on a name clash.
    fn receive_link(&self, mut info: LinkInfo, op: &'static str) -> Result<u32, NetlinkError> {
        let mut inner = self.lock();
        if inner.name_taken(&info.name) {
            return Err(kernel(format!("link {}", info.name), op, libc::EEXIST));
        }
        let index = inner.alloc();
        info.index = index;
        inner.state.links.insert(index, info);
        inner.notify(index);
        Ok(index)
    }

    /// Add a link directly (e.g. the host's `eth0`), returning its index.
    pub fn add_existing_link(&self, name: &str, mac: Option<MacAddr>, mtu: u32, up: bool) -> u32 {
        let mut inner = self.lock();
        let index = inner.next_index;
        inner.next_index += 1;
        let info = LinkInfo {
            index,
            name: name.to_string(),
            mac,
            mtu,
            admin_up: up,
            oper_state: if up { OperState::Up } else { OperState::Down },
            kind: None,
        };
        inner.state.links.insert(index, info);
        inner.notify(index);
        index
    }
}

impl Inner {
    fn begin(
        &mut self,
        op: &'static str,
        args: String,
        object: impl FnOnce() -> String,
    ) -> Result<(), NetlinkError> {
        self.calls.push(format!("{op}({args})"));
        if let Some(errno) = self.failures.get_mut(op).and_then(VecDeque::pop_front) {
            return Err(kernel(object(), op_label(op), errno));
        }
        Ok(())
    }

    fn link(&self, index: u32, op: &'static str) -> Result<&LinkInfo, NetlinkError> {
        self.state
            .links
            .get(&index)
            .ok_or_else(|| kernel(format!("link index {index}"), op, libc::ENODEV))
    }

    fn name_taken(&self, name: &str) -> bool {
        self.state.links.values().any(|l| l.name == name)
    }

    fn alloc(&mut self) -> u32 {
        let i = self.next_index;
        self.next_index += 1;
        i
    }

    /// Recompute oper state of `index` (and its veth peer) and notify subscribers.
    fn refresh(&mut self, index: u32) {
        let peer = self.state.veth_peers.get(&index).copied();
        for i in [Some(index), peer].into_iter().flatten() {
            let other_up = match self.state.veth_peers.get(&i) {
                Some(p) => self.state.links.get(p).is_some_and(|l| l.admin_up),
                None => true,
            };
            if let Some(l) = self.state.links.get_mut(&i) {
                l.oper_state = if l.admin_up && other_up {
                    OperState::Up
                } else if l.admin_up {
                    OperState::LowerLayerDown
                } else {
                    OperState::Down
                };
            }
            self.notify(i);
        }
    }

    fn notify(&mut self, index: u32) {
        let info = self.state.links.get(&index).cloned();
        self.subscribers.retain_mut(|(tracker, tx)| {
            let ev = match &info {
                Some(i) => tracker.update(i.clone()),
                None => tracker.remove(index, None),
            };
            match ev {
                Some(ev) => tx.send(Ok(ev)).is_ok(),
                None => !tx.is_closed(),
            }
        });
    }

    fn notify_addr(&mut self, ev: AddressEvent) {
        self.addr_subscribers
            .retain(|tx| tx.send(Ok(ev.clone())).is_ok());
    }

    /// Drop every address of link `index`, telling address monitors.
    fn drop_addresses_of(&mut self, index: u32) {
        let gone: Vec<AddressInfo> = self
            .state
            .addresses
            .iter()
            .filter(|a| a.index == index)
            .cloned()
            .collect();
        for a in gone {
            self.state.addresses.remove(&a);
            self.notify_addr(AddressEvent::Removed(a));
        }
    }

    fn remove_link(&mut self, index: u32) {
        if self.state.links.remove(&index).is_none() {
            return;
        }
        self.drop_addresses_of(index);
        self.state.vxlan.remove(&index);
        self.state.routes.retain(|r| r.oif != Some(index));
        self.state.neighbours.retain(|n| n.index != index);
        self.state.fdb.retain(|f| f.index != index);
        self.notify(index);
        if let Some(peer) = self.state.veth_peers.remove(&index) {
            self.state.veth_peers.remove(&peer);
            self.remove_link(peer);
        }
    }
}

fn op_label(op: &'static str) -> &'static str {
    match op {
        "create_veth" => "create veth",
        "create_vxlan" => "create vxlan",
        "set_link_up" => "set up",
        "set_link_mtu" => "set mtu",
        "set_link_mac" => "set mac",
        "set_link_name" => "rename",
        "move_link_to_netns" => "move to netns",
        "delete_link" | "del_address" | "del_route" | "del_neighbour" | "del_fdb" => "delete",
        "add_address" | "add_route" => "add",
        "replace_route" | "replace_neighbour" | "replace_fdb" => "replace",
        _ => "list",
    }
}

#[async_trait]
impl Netlink for FakeNetlink {
    async fn list_links(&self) -> Result<Vec<LinkInfo>, NetlinkError> {
        let mut inner = self.lock();
        inner.begin("list_links", String::new(), || "links".into())?;
        Ok(inner.state.links.values().cloned().collect())
    }

    async fn link_by_name(&self, name: &str) -> Result<Option<LinkInfo>, NetlinkError> {
        validate_link_name(name)?;
        let mut inner = self.lock();
        inner.begin("link_by_name", name.to_string(), || format!("link {name}"))?;
        Ok(inner.state.links.values().find(|l| l.name == name).cloned())
    }

    async fn link_by_index(&self, index: u32) -> Result<Option<LinkInfo>, NetlinkError> {
        let mut inner = self.lock();
        inner.begin("link_by_index", index.to_string(), || {
            format!("link index {index}")
        })?;
        Ok(inner.state.links.get(&index).cloned())
    }

    async fn create_veth(&self, spec: &VethSpec) -> Result<(), NetlinkError> {
        validate_link_name(&spec.name)?;
        validate_link_name(&spec.peer_name)?;
        // Look at the other namespace before locking this one: never hold two fakes' locks.
        let remote = spec
            .peer_netns
            .as_ref()
            .and_then(|ns| self.lock().namespaces.get(ns.path()).cloned());
        let remote_clash = remote
            .as_ref()
            .is_some_and(|r| r.lock().name_taken(&spec.peer_name));
        let mut inner = self.lock();
        let object = || format!("link {}", spec.name);
        inner.begin(
            "create_veth",
            format!(
                "{}, {}, peer_netns={}",
                spec.name,
                spec.peer_name,
                spec.peer_netns.is_some()
            ),
            object,
        )?;
        let peer_local = spec.peer_netns.is_none();
        if inner.name_taken(&spec.name) || (peer_local && inner.name_taken(&spec.peer_name)) {
            return Err(kernel(object(), "create veth", libc::EEXIST));
        }
        if remote_clash {
            return Err(kernel(object(), "create veth", libc::EEXIST));
        }
        let mtu = spec.mtu.unwrap_or(1500);
        let index = inner.alloc();
        inner.state.links.insert(
            index,
            LinkInfo {
                index,
                name: spec.name.clone(),
                // Deterministic stand-in for a random MAC.
                mac: Some(spec.mac.unwrap_or(MacAddr([0x02, 0, 0, 0, 0, index as u8]))),
                mtu,
                admin_up: false,
                oper_state: OperState::Down,
                kind: Some("veth".into()),
            },
        );
        if peer_local {
            let peer = inner.alloc();
            inner.state.links.insert(
                peer,
                LinkInfo {
                    index: peer,
                    name: spec.peer_name.clone(),
                    mac: Some(
                        spec.peer_mac
                            .unwrap_or(MacAddr([0x02, 0, 0, 0, 0, peer as u8])),
                    ),
                    mtu,
                    admin_up: false,
                    oper_state: OperState::Down,
                    kind: Some("veth".into()),
                },
            );
            inner.state.veth_peers.insert(index, peer);
            inner.state.veth_peers.insert(peer, index);
            inner.notify(index);
            inner.notify(peer);
        } else {
            inner.state.moved_out.push(spec.peer_name.clone());
            inner.notify(index);
            drop(inner);
            if let Some(remote) = remote {
                let peer = LinkInfo {
                    index: 0,
                    name: spec.peer_name.clone(),
                    mac: Some(
                        spec.peer_mac
                            .unwrap_or(MacAddr([0x02, 0, 0, 0, 1, index as u8])),
                    ),
                    mtu,
                    admin_up: false,
                    oper_state: OperState::Down,
                    kind: Some("veth".into()),
                };
                remote.receive_link(peer, "create veth")?;
            }
        }
        Ok(())
    }

    async fn create_vxlan(&self, spec: &VxlanSpec) -> Result<(), NetlinkError> {
        validate_link_name(&spec.name)?;
        let mut inner = self.lock();
        let object = || format!("link {}", spec.name);
        inner.begin(
            "create_vxlan",
            format!("{}, vni={}, port={}", spec.name, spec.vni, spec.port),
            object,
        )?;
        if inner.name_taken(&spec.name) {
            return Err(kernel(object(), "create vxlan", libc::EEXIST));
        }
        if let Some(p) = spec.parent_index {
            inner.link(p, "create vxlan")?;
        }
        let index = inner.alloc();
        inner.state.links.insert(
            index,
            LinkInfo {
                index,
                name: spec.name.clone(),
                mac: Some(spec.mac.unwrap_or(MacAddr([0x02, 0, 0, 0, 0, index as u8]))),
                mtu: spec.mtu.unwrap_or(1450),
                admin_up: false,
                oper_state: OperState::Down,
                kind: Some("vxlan".into()),
            },
        );
        inner.state.vxlan.insert(index, spec.clone());
        inner.notify(index);
        Ok(())
    }

    async fn vxlan_info(&self, index: u32) -> Result<Option<VxlanSpec>, NetlinkError> {
        let mut inner = self.lock();
        inner.begin("vxlan_info", index.to_string(), || {
            format!("link index {index}")
        })?;
        let Some(link) = inner.state.links.get(&index) else {
            return Ok(None);
        };
        Ok(inner.state.vxlan.get(&index).map(|spec| VxlanSpec {
            name: link.name.clone(),
            mtu: Some(link.mtu),
            mac: link.mac,
            ..spec.clone()
        }))
    }

    async fn set_link_up(&self, index: u32, up: bool) -> Result<(), NetlinkError> {
        let mut inner = self.lock();
        inner.begin("set_link_up", format!("{index}, {up}"), || {
            format!("link index {index}")
        })?;
        inner.link(index, if up { "set up" } else { "set down" })?;
        if let Some(l) = inner.state.links.get_mut(&index) {
            l.admin_up = up;
        }
        inner.refresh(index);
        Ok(())
    }

    async fn set_link_mtu(&self, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        let mut inner = self.lock();
        inner.begin("set_link_mtu", format!("{index}, {mtu}"), || {
            format!("link index {index}")
        })?;
        inner.link(index, "set mtu")?;
        if !(68..=65535).contains(&mtu) {
            return Err(kernel(
                format!("link index {index}"),
                "set mtu",
                libc::EINVAL,
            ));
        }
        if let Some(l) = inner.state.links.get_mut(&index) {
            l.mtu = mtu;
        }
        inner.notify(index);
        Ok(())
    }

    async fn set_link_mac(&self, index: u32, mac: MacAddr) -> Result<(), NetlinkError> {
        let mut inner = self.lock();
        inner.begin("set_link_mac", format!("{index}, {mac}"), || {
            format!("link index {index}")
        })?;
        inner.link(index, "set mac")?;
        if let Some(l) = inner.state.links.get_mut(&index) {
            l.mac = Some(mac);
        }
        inner.notify(index);
        Ok(())
    }

    async fn set_link_name(&self, index: u32, name: &str) -> Result<(), NetlinkError> {
        validate_link_name(name)?;
        let mut inner = self.lock();
        inner.begin("set_link_name", format!("{index}, {name}"), || {
            format!("link index {index}")
        })?;
        let current = inner.link(index, "rename")?.name.clone();
        if current != name && inner.name_taken(name) {
            return Err(kernel(format!("link {current}"), "rename", libc::EEXIST));
        }
        if let Some(l) = inner.state.links.get_mut(&index) {
            l.name = name.to_string();
        }
        inner.notify(index);
        Ok(())
    }

    async fn move_link_to_netns(&self, index: u32, netns: &NetNs) -> Result<(), NetlinkError> {
        let remote = self.lock().namespaces.get(netns.path()).cloned();
        let name_now = self.lock().state.links.get(&index).map(|l| l.name.clone());
        let remote_clash = match (&remote, &name_now) {
            (Some(r), Some(n)) => r.lock().name_taken(n),
            _ => false,
        };
        let mut inner = self.lock();
        inner.begin(
            "move_link_to_netns",
            format!("{index}, {}", netns.path().display()),
            || format!("link index {index}"),
        )?;
        let moved = inner.link(index, "move to netns")?.clone();
        let name = moved.name.clone();
        if remote_clash {
            return Err(kernel(
                format!("link {name}"),
                "move to netns",
                libc::EEXIST,
            ));
        }
        // A veth pair split across namespaces is no longer tracked as a local pair; the
        // remaining end then counts as having its peer up.
        if let Some(peer) = inner.state.veth_peers.remove(&index) {
            inner.state.veth_peers.remove(&peer);
        }
        inner.state.links.remove(&index);
        inner.drop_addresses_of(index);
        inner.state.vxlan.remove(&index);
        inner.state.routes.retain(|r| r.oif != Some(index));
        inner.state.neighbours.retain(|n| n.index != index);
        inner.state.fdb.retain(|f| f.index != index);
        inner.state.moved_out.push(name);
        inner.notify(index);
        drop(inner);
        if let Some(remote) = remote {
            // Like the kernel: a moved link arrives down.
            let arriving = LinkInfo {
                admin_up: false,
                oper_state: OperState::Down,
                ..moved
            };
            remote.receive_link(arriving, "move to netns")?;
        }
        Ok(())
    }

    async fn delete_link(&self, index: u32) -> Result<(), NetlinkError> {
        let mut inner = self.lock();
        inner.begin("delete_link", index.to_string(), || {
            format!("link index {index}")
        })?;
        inner.link(index, "delete")?;
        inner.remove_link(index);
        Ok(())
    }

    async fn add_address(&self, index: u32, addr: IpNet) -> Result<(), NetlinkError> {
        let mut inner = self.lock();
        let object = || format!("address {addr} on link index {index}");
        inner.begin("add_address", format!("{index}, {addr}"), object)?;
        inner.link(index, "add")?;
        let a = AddressInfo { index, addr };
        if !inner.state.addresses.insert(a.clone()) {
            return Err(kernel(object(), "add", libc::EEXIST));
        }
        inner.notify_addr(AddressEvent::Added(a));
        Ok(())
    }

    async fn del_address(&self, index: u32, addr: IpNet) -> Result<(), NetlinkError> {
        let mut inner = self.lock();
        let object = || format!("address {addr} on link index {index}");
        inner.begin("del_address", format!("{index}, {addr}"), object)?;
        let a = AddressInfo { index, addr };
        if !inner.state.addresses.remove(&a) {
            return Err(kernel(object(), "delete", libc::EADDRNOTAVAIL));
        }
        inner.notify_addr(AddressEvent::Removed(a));
        Ok(())
    }

    async fn list_addresses(&self, index: Option<u32>) -> Result<Vec<AddressInfo>, NetlinkError> {
        let mut inner = self.lock();
        inner.begin("list_addresses", format!("{index:?}"), || {
            "addresses".into()
        })?;
        Ok(inner
            .state
            .addresses
            .iter()
            .filter(|a| index.is_none_or(|i| a.index == i))
            .cloned()
            .collect())
    }

    async fn add_route(&self, route: &Route) -> Result<(), NetlinkError> {
        let mut inner = self.lock();
        let object = || format!("route {}", route.dst);
        inner.begin("add_route", route_args(route), object)?;
        if let Some(oif) = route.oif {
            inner.link(oif, "add")?;
        }
        if inner.state.routes.iter().any(|r| same_slot(r, route)) {
            return Err(kernel(object(), "add", libc::EEXIST));
        }
        inner.state.routes.insert(route.clone());
        Ok(())
    }

    async fn replace_route(&self, route: &Route) -> Result<(), NetlinkError> {
        let mut inner = self.lock();
        inner.begin("replace_route", route_args(route), || {
            format!("route {}", route.dst)
        })?;
        if let Some(oif) = route.oif {
            inner.link(oif, "replace")?;
        }
        inner.state.routes.retain(|r| !same_slot(r, route));
        inner.state.routes.insert(route.clone());
        Ok(())
    }

    async fn del_route(&self, route: &Route) -> Result<(), NetlinkError> {
        let mut inner = self.lock();
        let object = || format!("route {}", route.dst);
        inner.begin("del_route", route_args(route), object)?;
        // Like the kernel: match the slot, then kind/protocol, and gateway/oif when given.
        let found = inner
            .state
            .routes
            .iter()
            .find(|r| {
                same_slot(r, route)
                    && r.kind == route.kind
                    && r.protocol == route.protocol
                    && (route.gateway.is_none() || r.gateway == route.gateway)
                    && (route.oif.is_none() || r.oif == route.oif)
            })
            .cloned();
        match found {
            Some(r) => {
                inner.state.routes.remove(&r);
                Ok(())
            }
            None => Err(kernel(object(), "delete", libc::ESRCH)),
        }
    }

    async fn list_routes(&self, filter: &RouteFilter) -> Result<Vec<Route>, NetlinkError> {
        let mut inner = self.lock();
        inner.begin("list_routes", format!("{filter:?}"), || "routes".into())?;
        Ok(inner
            .state
            .routes
            .iter()
            .filter(|r| filter.matches(r))
            .cloned()
            .collect())
    }

    async fn replace_neighbour(&self, neigh: &Neighbour) -> Result<(), NetlinkError> {
        let mut inner = self.lock();
        inner.begin(
            "replace_neighbour",
            format!("{}, {}, {}", neigh.index, neigh.ip, neigh.mac),
            || format!("neighbour {} on link index {}", neigh.ip, neigh.index),
        )?;
        inner.link(neigh.index, "replace")?;
        inner
            .state
            .neighbours
            .retain(|n| !(n.index == neigh.index && n.ip == neigh.ip));
        inner.state.neighbours.insert(neigh.clone());
        Ok(())
    }

    async fn del_neighbour(&self, neigh: &Neighbour) -> Result<(), NetlinkError> {
        let mut inner = self.lock();
        let object = || format!("neighbour {} on link index {}", neigh.ip, neigh.index);
        inner.begin(
            "del_neighbour",
            format!("{}, {}", neigh.index, neigh.ip),
            object,
        )?;
        let before = inner.state.neighbours.len();
        inner
            .state
            .neighbours
            .retain(|n| !(n.index == neigh.index && n.ip == neigh.ip));
        if inner.state.neighbours.len() == before {
            return Err(kernel(object(), "delete", libc::ENOENT));
        }
        Ok(())
    }

    async fn list_neighbours(
        &self,
        family: Family,
        index: Option<u32>,
    ) -> Result<Vec<Neighbour>, NetlinkError> {
        let mut inner = self.lock();
        inner.begin("list_neighbours", format!("{family:?}, {index:?}"), || {
            "neighbours".into()
        })?;
        Ok(inner
            .state
            .neighbours
            .iter()
            .filter(|n| match family {
                Family::V4 => n.ip.is_ipv4(),
                Family::V6 => n.ip.is_ipv6(),
            })
            .filter(|n| index.is_none_or(|i| n.index == i))
            .cloned()
            .collect())
    }

    async fn replace_fdb(&self, entry: &FdbEntry) -> Result<(), NetlinkError> {
        let mut inner = self.lock();
        inner.begin(
            "replace_fdb",
            format!("{}, {}, {}", entry.index, entry.mac, entry.dst),
            || format!("fdb {} on link index {}", entry.mac, entry.index),
        )?;
        inner.link(entry.index, "replace")?;
        inner
            .state
            .fdb
            .retain(|f| !(f.index == entry.index && f.mac == entry.mac));
        inner.state.fdb.insert(entry.clone());
        Ok(())
    }

    async fn del_fdb(&self, entry: &FdbEntry) -> Result<(), NetlinkError> {
        let mut inner = self.lock();
        let object = || format!("fdb {} on link index {}", entry.mac, entry.index);
        inner.begin(
            "del_fdb",
            format!("{}, {}, {}", entry.index, entry.mac, entry.dst),
            object,
        )?;
        if !inner.state.fdb.remove(entry) {
            return Err(kernel(object(), "delete", libc::ENOENT));
        }
        Ok(())
    }

    async fn list_fdb(&self, index: u32) -> Result<Vec<FdbEntry>, NetlinkError> {
        let mut inner = self.lock();
        inner.begin("list_fdb", index.to_string(), || "fdb".into())?;
        Ok(inner
            .state
            .fdb
            .iter()
            .filter(|f| f.index == index)
            .cloned()
            .collect())
    }

    async fn monitor_links(&self) -> Result<LinkEventStream, NetlinkError> {
        let mut inner = self.lock();
        inner.begin("monitor_links", String::new(), || "link monitor".into())?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tracker = LinkTracker::new();
        for info in inner.state.links.values() {
            if let Some(ev) = tracker.update(info.clone()) {
                let _ = tx.send(Ok(ev));
            }
        }
        let _ = tx.send(Ok(LinkEvent::InSync));
        inner.subscribers.push((tracker, tx));
        Ok(Box::pin(unbounded_stream(rx)))
    }

    async fn monitor_addresses(&self) -> Result<AddressEventStream, NetlinkError> {
        let mut inner = self.lock();
        inner.begin("monitor_addresses", String::new(), || {
            "address monitor".into()
        })?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        for a in &inner.state.addresses {
            let _ = tx.send(Ok(AddressEvent::Added(a.clone())));
        }
        let _ = tx.send(Ok(AddressEvent::InSync));
        inner.addr_subscribers.push(tx);
        Ok(Box::pin(unbounded_stream(rx)))
    }
}

fn unbounded_stream<T: Send + 'static>(
    rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

fn route_args(r: &Route) -> String {
    let mut s = format!("{} {:?} proto {}", r.dst, r.kind, r.protocol);
    if let Some(gw) = r.gateway {
        s.push_str(&format!(" via {gw}"));
    }
    if let Some(oif) = r.oif {
        s.push_str(&format!(" dev {oif}"));
    }
    if r.onlink {
        s.push_str(" onlink");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn veth_routes_and_cleanup_on_delete() {
        let nl = FakeNetlink::new();
        nl.create_veth(&VethSpec::new("cali1", "eth0x"))
            .await
            .unwrap();
        let cali = nl.link_by_name("cali1").await.unwrap().unwrap();
        let peer = nl.link_by_name("eth0x").await.unwrap().unwrap();
        nl.set_link_up(cali.index, true).await.unwrap();
        let cali = nl.link_by_index(cali.index).await.unwrap().unwrap();
        assert_eq!(
            cali.oper_state,
            OperState::LowerLayerDown,
            "peer still down"
        );
        nl.set_link_up(peer.index, true).await.unwrap();
        assert!(nl.link_by_index(cali.index).await.unwrap().unwrap().is_up());

        let r = Route::device("10.65.0.2/32".parse().unwrap(), cali.index);
        nl.add_route(&r).await.unwrap();
        let err = nl.add_route(&r).await.unwrap_err();
        assert!(err.is_exists(), "{err}");
        assert_eq!(err.to_string(), "route 10.65.0.2/32: add: file exists");
        nl.replace_route(&r).await.unwrap();
        assert_eq!(
            nl.list_routes(&RouteFilter::v4()).await.unwrap(),
            vec![r.clone()]
        );

        nl.delete_link(peer.index).await.unwrap();
        let state = nl.state();
        assert!(state.routes.is_empty());
        assert_eq!(state.links.len(), 1, "only lo is left: {:?}", state.links);
        let err = nl.del_route(&r).await.unwrap_err();
        assert_eq!(err.errno(), Some(libc::ESRCH));
    }

    #[tokio::test]
    async fn cni_style_veth_with_peer_in_linked_host_fake() {
        let host = FakeNetlink::new();
        let container = FakeNetlink::new();
        // Any openable path works as the namespace identity in unit tests.
        let host_ns = NetNs::open("/proc/self/ns/net").unwrap();
        container.link_namespace(host_ns.path(), &host);
        let mut spec = VethSpec::new("eth0", "cali12345678901");
        spec.peer_netns = Some(host_ns.clone());
        container.create_veth(&spec).await.unwrap();
        assert!(
            container
                .link_by_name("cali12345678901")
                .await
                .unwrap()
                .is_none()
        );
        let cali = host.link_by_name("cali12345678901").await.unwrap().unwrap();
        assert_eq!(cali.kind.as_deref(), Some("veth"));
        assert!(!cali.admin_up);
        // The same name again clashes in the host namespace.
        let err = container
            .create_veth(&VethSpec {
                name: "eth1".into(),
                ..spec.clone()
            })
            .await
            .unwrap_err();
        assert!(err.is_exists(), "{err}");
        assert!(
            container.link_by_name("eth1").await.unwrap().is_none(),
            "nothing half-created"
        );
        // Moving a link over.
        let eth0 = container.link_by_name("eth0").await.unwrap().unwrap();
        container.set_link_up(eth0.index, true).await.unwrap();
        assert!(
            container
                .link_by_index(eth0.index)
                .await
                .unwrap()
                .unwrap()
                .is_up()
        );
        container
            .move_link_to_netns(eth0.index, &host_ns)
            .await
            .unwrap();
        let moved = host.link_by_name("eth0").await.unwrap().unwrap();
        assert!(!moved.admin_up);
    }

    #[tokio::test]
    async fn injected_failures_and_call_log() {
        let nl = FakeNetlink::new();
        nl.fail_next("create_veth", libc::EPERM);
        let err = nl
            .create_veth(&VethSpec::new("cali1", "eth0x"))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "link cali1: create veth: operation not permitted"
        );
        nl.create_veth(&VethSpec::new("cali1", "eth0x"))
            .await
            .unwrap();
        assert_eq!(nl.calls().len(), 2);
        assert!(nl.calls()[0].starts_with("create_veth(cali1, eth0x"));
    }

    #[tokio::test]
    async fn monitor_sees_dump_in_sync_and_changes() {
        let nl = FakeNetlink::new();
        let mut events = nl.monitor_links().await.unwrap();
        assert!(matches!(events.next().await, Some(Ok(LinkEvent::Added(l))) if l.name == "lo"));
        assert_eq!(events.next().await.unwrap().unwrap(), LinkEvent::InSync);
        let eth = nl.add_existing_link("eth0", None, 1500, false);
        assert!(matches!(events.next().await, Some(Ok(LinkEvent::Added(l))) if l.name == "eth0"));
        nl.set_link_up(eth, true).await.unwrap();
        assert!(matches!(events.next().await, Some(Ok(LinkEvent::Up(l))) if l.index == eth));
        nl.delete_link(eth).await.unwrap();
        assert!(matches!(events.next().await, Some(Ok(LinkEvent::Removed(l))) if l.name == "eth0"));
    }

    #[tokio::test]
    async fn address_monitor_sees_dump_changes_and_link_removal() {
        let nl = FakeNetlink::new();
        let eth = nl.add_existing_link("eth0", None, 1500, true);
        nl.add_address(eth, "10.99.0.1/24".parse().unwrap())
            .await
            .unwrap();
        let mut events = nl.monitor_addresses().await.unwrap();
        let first = AddressInfo {
            index: eth,
            addr: "10.99.0.1/24".parse().unwrap(),
        };
        assert_eq!(
            events.next().await.unwrap().unwrap(),
            AddressEvent::Added(first.clone())
        );
        assert_eq!(events.next().await.unwrap().unwrap(), AddressEvent::InSync);
        let second = AddressInfo {
            index: eth,
            addr: "fd00::1/128".parse().unwrap(),
        };
        nl.add_address(eth, second.addr).await.unwrap();
        assert_eq!(
            events.next().await.unwrap().unwrap(),
            AddressEvent::Added(second.clone())
        );
        nl.del_address(eth, second.addr).await.unwrap();
        assert_eq!(
            events.next().await.unwrap().unwrap(),
            AddressEvent::Removed(second)
        );
        nl.delete_link(eth).await.unwrap();
        assert_eq!(
            events.next().await.unwrap().unwrap(),
            AddressEvent::Removed(first)
        );
    }

    #[tokio::test]
    async fn neighbours_fdb_and_vxlan() {
        let nl = FakeNetlink::new();
        let mut spec = VxlanSpec::calico("vxlan.calico");
        spec.mac = Some("66:00:00:00:00:01".parse().unwrap());
        nl.create_vxlan(&spec).await.unwrap();
        let vx = nl.link_by_name("vxlan.calico").await.unwrap().unwrap();
        assert_eq!(vx.kind.as_deref(), Some("vxlan"));
        let info = nl.vxlan_info(vx.index).await.unwrap().unwrap();
        assert_eq!((info.vni, info.port, info.learning), (4096, 4789, false));
        assert_eq!(info.mac, spec.mac);
        assert!(nl.vxlan_info(1).await.unwrap().is_none(), "lo is not vxlan");
        let mac: MacAddr = "66:00:00:00:00:02".parse().unwrap();
        let n = Neighbour {
            index: vx.index,
            ip: "10.65.2.0".parse().unwrap(),
            mac,
        };
        nl.replace_neighbour(&n).await.unwrap();
        nl.replace_neighbour(&n).await.unwrap();
        assert_eq!(
            nl.list_neighbours(Family::V4, None).await.unwrap(),
            vec![n.clone()]
        );
        let f = FdbEntry {
            index: vx.index,
            mac,
            dst: "10.99.0.2".parse().unwrap(),
        };
        nl.replace_fdb(&f).await.unwrap();
        assert_eq!(nl.list_fdb(vx.index).await.unwrap(), vec![f.clone()]);
        nl.del_fdb(&f).await.unwrap();
        assert!(nl.del_fdb(&f).await.unwrap_err().is_not_found());
    }
}
