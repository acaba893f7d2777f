//! IP set membership: for every active IP set, the addresses (or `ip,proto:port` for named
//! ports) of every endpoint and network set in the cluster that its selector matches, reference
//! counted so a member shared by several items goes only with the last of them (upstream's
//! `SelectorAndNamedPortIndex`).

use std::collections::{BTreeMap, BTreeSet};

use foldhash::{HashMap, HashMapExt};
use std::sync::Arc;

use crate::backend::{Item, ItemKey};
use crate::index::{LabelIndex, MatchEvent};
use crate::rules::IpSetData;

/// A member of an IP set appeared or went away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MemberEvent {
    Added(String, String),
    Removed(String, String),
}

#[derive(Debug)]
struct SelEntry {
    /// IDs of the active sets that use this selector.
    sets: BTreeSet<String>,
}

#[derive(Debug)]
struct SetState {
    data: IpSetData,
    members: HashMap<String, u32>,
}

/// What an item contributes to sets (its labels live in the index only).
#[derive(Debug, PartialEq)]
struct Addrs {
    nets: Vec<ipnet::IpNet>,
    ports: Vec<crate::backend::NamedPort>,
}

/// Item keys are shared (`Arc`) between the item table and every index entry that names the
/// item: with 100,000 remote endpoints each key used to be copied into a dozen maps.
type Key = Arc<ItemKey>;

#[derive(Debug, Default)]
pub(crate) struct IpSetCalc {
    index: LabelIndex<String, Key>,
    items: HashMap<Key, Addrs>,
    selectors: HashMap<String, SelEntry>,
    sets: HashMap<String, SetState>,
}

impl IpSetCalc {
    /// Adds or replaces an endpoint / network set.
    pub(crate) fn update_item(&mut self, key: ItemKey, item: Item, out: &mut Vec<MemberEvent>) {
        let mut ev = Vec::new();
        let Item {
            labels,
            profiles,
            nets,
            ports,
        } = item;
        let addrs = Addrs { nets, ports };
        match self.items.get_key_value(&key) {
            Some((k, old)) if *old == addrs => {
                // Only labels/profiles may differ: match events carry the whole change.
                let key = k.clone();
                self.index.update_item(key, labels, profiles, &mut ev);
                self.apply_events(ev, out);
            }
            Some((k, _)) => {
                // Contributions change: retract the old ones, then add the new ones.
                let key = k.clone();
                let old_sels: Vec<String> = self.index.selectors_matching(&key).cloned().collect();
                for s in &old_sels {
                    self.contribute(s, &key, false, out);
                }
                self.index
                    .update_item(key.clone(), labels, profiles, &mut ev);
                self.items.insert(key.clone(), addrs);
                let new_sels: Vec<String> = self.index.selectors_matching(&key).cloned().collect();
                for s in &new_sels {
                    self.contribute(s, &key, true, out);
                }
            }
            None => {
                let key = Arc::new(key);
                self.items.insert(key.clone(), addrs);
                self.index.update_item(key, labels, profiles, &mut ev);
                self.apply_events(ev, out);
            }
        }
    }

    pub(crate) fn remove_item(&mut self, key: &ItemKey, out: &mut Vec<MemberEvent>) {
        let Some((key, _)) = self.items.get_key_value(key) else {
            return;
        };
        let key = key.clone();
        let mut ev = Vec::new();
        self.index.remove_item(&key, &mut ev);
        self.apply_events(ev, out);
        self.items.remove(&key);
    }

    /// Sets or deletes the labels a profile passes on to the items that reference it.
    pub(crate) fn update_profile_labels(
        &mut self,
        name: &str,
        labels: Option<BTreeMap<String, String>>,
        out: &mut Vec<MemberEvent>,
    ) {
        let mut ev = Vec::new();
        self.index.update_parent(name, labels, &mut ev);
        self.apply_events(ev, out);
    }

    /// Activates an IP set; its initial members are then available from [`Self::members`].
    pub(crate) fn add_set(&mut self, id: &str, data: IpSetData, out: &mut Vec<MemberEvent>) {
        if self.sets.contains_key(id) {
            return;
        }
        let sel_id = data.selector.unique_id();
        let selector = data.selector.clone();
        self.sets.insert(
            id.to_string(),
            SetState {
                data,
                members: HashMap::new(),
            },
        );
        match self.selectors.get_mut(&sel_id) {
            Some(entry) => {
                entry.sets.insert(id.to_string());
                let items: Vec<Key> = self.index.items_matching(&sel_id).cloned().collect();
                for item in items {
                    self.contribute_to_set(id, &item, true, out);
                }
            }
            None => {
                self.selectors.insert(
                    sel_id.clone(),
                    SelEntry {
                        sets: BTreeSet::from([id.to_string()]),
                    },
                );
                let mut ev = Vec::new();
                self.index.update_selector(sel_id, selector, &mut ev);
                self.apply_events(ev, out);
            }
        }
    }

    /// Deactivates an IP set (no member events are reported for it).
    pub(crate) fn remove_set(&mut self, id: &str) {
        let Some(st) = self.sets.remove(id) else {
            return;
        };
        let sel_id = st.data.selector.unique_id();
        if let Some(entry) = self.selectors.get_mut(&sel_id) {
            entry.sets.remove(id);
            if entry.sets.is_empty() {
                self.selectors.remove(&sel_id);
                let mut ev = Vec::new();
                self.index.remove_selector(&sel_id, &mut ev);
            }
        }
    }

    /// Current members of an active set, sorted.
    pub(crate) fn members(&self, id: &str) -> Vec<String> {
        let mut m: Vec<String> = self
            .sets
            .get(id)
            .map(|s| s.members.keys().cloned().collect())
            .unwrap_or_default();
        m.sort();
        m
    }

    pub(crate) fn set_data(&self, id: &str) -> Option<&IpSetData> {
        self.sets.get(id).map(|s| &s.data)
    }

    fn apply_events(&mut self, ev: Vec<MatchEvent<String, Key>>, out: &mut Vec<MemberEvent>) {
        for e in ev {
            match e {
                MatchEvent::Started(s, i) => self.contribute(&s, &i, true, out),
                MatchEvent::Stopped(s, i) => self.contribute(&s, &i, false, out),
            }
        }
    }

    fn contribute(&mut self, sel_id: &str, item: &Key, add: bool, out: &mut Vec<MemberEvent>) {
        let Some(entry) = self.selectors.get(sel_id) else {
            return;
        };
        let sets: Vec<String> = entry.sets.iter().cloned().collect();
        for set in sets {
            self.contribute_to_set(&set, item, add, out);
        }
    }

    fn contribute_to_set(
        &mut self,
        set_id: &str,
        key: &Key,
        add: bool,
        out: &mut Vec<MemberEvent>,
    ) {
        let (Some(st), Some(item)) = (self.sets.get_mut(set_id), self.items.get(key)) else {
            return;
        };
        for m in item_members(&st.data, item) {
            if add {
                let c = st.members.entry(m.clone()).or_insert(0);
                *c += 1;
                if *c == 1 {
                    out.push(MemberEvent::Added(set_id.to_string(), m));
                }
            } else if let Some(c) = st.members.get_mut(&m) {
                *c -= 1;
                if *c == 0 {
                    st.members.remove(&m);
                    out.push(MemberEvent::Removed(set_id.to_string(), m));
                }
            }
        }
    }
}

/// What one item contributes to one set.
fn item_members(set: &IpSetData, item: &Addrs) -> Vec<String> {
    match &set.named_port {
        None => item.nets.iter().map(ToString::to_string).collect(),
        Some((proto, name)) => {
            let mut out = Vec::new();
            for p in item
                .ports
                .iter()
                .filter(|p| &p.name == name && &p.protocol == proto)
            {
                for net in &item.nets {
                    let addr = net.addr();
                    out.push(format!("{addr},{proto}:{}", p.port));
                }
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::NamedPort;
    use calico_model::selector::parse;

    fn item(labels: &[(&str, &str)], nets: &[&str]) -> Item {
        Item {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            profiles: vec![],
            nets: nets.iter().map(|n| n.parse().unwrap()).collect(),
            ports: vec![],
        }
    }

    #[test]
    fn shared_member_is_reference_counted() {
        let mut c = IpSetCalc::default();
        let mut out = Vec::new();
        let data = IpSetData {
            selector: parse("app == 'a'").unwrap(),
            named_port: None,
        };
        let id = data.unique_id();
        c.add_set(&id, data, &mut out);
        c.update_item(
            ItemKey::Host("h1".into()),
            item(&[("app", "a")], &["10.0.0.1/32"]),
            &mut out,
        );
        c.update_item(
            ItemKey::GlobalNetworkSet("g".into()),
            item(&[("app", "a")], &["10.0.0.1/32", "10.1.0.0/16"]),
            &mut out,
        );
        assert_eq!(c.members(&id), ["10.0.0.1/32", "10.1.0.0/16"]);
        out.clear();
        c.remove_item(&ItemKey::Host("h1".into()), &mut out);
        assert!(
            out.is_empty(),
            "still contributed by the network set: {out:?}"
        );
        c.update_item(
            ItemKey::GlobalNetworkSet("g".into()),
            item(&[("app", "b")], &["10.0.0.1/32"]),
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert!(c.members(&id).is_empty());
    }

    #[test]
    fn named_port_members() {
        let mut c = IpSetCalc::default();
        let mut out = Vec::new();
        let data = IpSetData {
            selector: parse("").unwrap(),
            named_port: Some(("tcp".into(), "http".into())),
        };
        let id = data.unique_id();
        let mut it = item(&[], &["10.0.0.1/32", "fd00::1/128"]);
        it.ports = vec![
            NamedPort {
                name: "http".into(),
                protocol: "tcp".into(),
                port: 8080,
            },
            NamedPort {
                name: "http".into(),
                protocol: "udp".into(),
                port: 9090,
            },
        ];
        c.update_item(ItemKey::Workload("ns".into(), "w".into()), it, &mut out);
        c.add_set(&id, data, &mut out);
        assert_eq!(c.members(&id), ["10.0.0.1,tcp:8080", "fd00::1,tcp:8080"]);
    }
}
