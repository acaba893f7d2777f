//! An incremental, inheritance-aware index of selectors against labelled items.
//!
//! Items (endpoints, network sets) have their own labels plus labels inherited from named
//! parents (profiles), own labels winning and earlier parents winning over later ones (§2.3).
//! Selectors are indexed by their label restrictions (§2.7), so a change to one item only
//! evaluates the selectors that could match it (those keyed on one of its labels, the few that
//! need a full scan, and those currently matching it); a new selector only scans the items
//! carrying its most restrictive label.
//!
//! Every change reports match start/stop events; the index keeps exact add/remove symmetry.

use std::collections::{BTreeMap, BTreeSet};

// foldhash instead of SipHash: the index is hashing on every label of every endpoint update.
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::hash::Hash;
use std::sync::Arc;

use calico_model::selector::{Labels, Selector};

pub(crate) type LabelMap = BTreeMap<String, String>;

/// An item's labels as the index keeps them: (key, value) pairs sorted by key, every string
/// interned. With 100,000 endpoints carrying the same few keys and mostly shared values, a
/// `BTreeMap<String, String>` per endpoint was the largest part of Felix's memory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Stored(Box<[(Arc<str>, Arc<str>)]>);

impl Labels for Stored {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &*self.0[i].1)
    }
}

impl Stored {
    fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    fn same_as(&self, m: &LabelMap) -> bool {
        self.0.len() == m.len()
            && self
                .iter()
                .zip(m)
                .all(|((k, v), (mk, mv))| k == mk && v == mv)
    }
}

/// Interned label strings; a string leaves when the last stored label set using it goes.
#[derive(Debug, Default)]
struct Interner(HashSet<Arc<str>>);

impl Interner {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.0.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.0.insert(a.clone());
        a
    }

    fn store(&mut self, m: &LabelMap) -> Stored {
        Stored(m.iter().map(|(k, v)| (self.get(k), self.get(v))).collect())
    }

    /// Drops `st`, forgetting strings only it (and the interner) held.
    fn release(&mut self, st: Stored) {
        for (k, v) in st.0.iter() {
            for a in [k, v] {
                if Arc::strong_count(a) == 2 {
                    self.0.remove(&**a);
                }
            }
        }
    }
}

/// A selector started or stopped matching an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MatchEvent<S, I> {
    Started(S, I),
    Stopped(S, I),
}

/// How candidate items are found for a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Strategy {
    /// The selector can never match.
    NoMatch,
    /// The label must have one of these values.
    Values(String, BTreeSet<String>),
    /// The label must be present.
    Key(String),
    /// No usable restriction: every item is a candidate.
    FullScan,
}

#[derive(Debug)]
struct ItemState {
    /// Own labels when they differ from `effective` (a parent contributed); `None` when they
    /// are the same, which is the common case.
    own: Option<Stored>,
    parents: Vec<String>,
    effective: Stored,
}

impl ItemState {
    fn own(&self) -> &Stored {
        self.own.as_ref().unwrap_or(&self.effective)
    }
}

#[derive(Debug)]
struct ParentState<I> {
    labels: Option<LabelMap>,
    children: HashSet<I>,
}

impl<I> Default for ParentState<I> {
    fn default() -> Self {
        ParentState {
            labels: None,
            children: HashSet::new(),
        }
    }
}

#[derive(Debug)]
struct SelState {
    sel: Selector,
    strategy: Strategy,
}

#[derive(Debug)]
pub(crate) struct LabelIndex<S, I> {
    strings: Interner,
    items: HashMap<I, ItemState>,
    parents: HashMap<String, ParentState<I>>,
    selectors: HashMap<S, SelState>,
    items_by_kv: HashMap<Arc<str>, HashMap<Arc<str>, HashSet<I>>>,
    sels_by_kv: HashMap<String, HashMap<String, HashSet<S>>>,
    sels_by_key: HashMap<String, HashSet<S>>,
    sels_full_scan: HashSet<S>,
    matches_by_sel: HashMap<S, HashSet<I>>,
    matches_by_item: HashMap<I, HashSet<S>>,
}

impl<S, I> Default for LabelIndex<S, I> {
    fn default() -> Self {
        Self {
            strings: Interner::default(),
            items: HashMap::new(),
            parents: HashMap::new(),
            selectors: HashMap::new(),
            items_by_kv: HashMap::new(),
            sels_by_kv: HashMap::new(),
            sels_by_key: HashMap::new(),
            sels_full_scan: HashSet::new(),
            matches_by_sel: HashMap::new(),
            matches_by_item: HashMap::new(),
        }
    }
}

impl<S: Clone + Eq + Hash, I: Clone + Eq + Hash> LabelIndex<S, I> {
    /// Adds or replaces an item.
    pub(crate) fn update_item(
        &mut self,
        id: I,
        own: LabelMap,
        parents: Vec<String>,
        out: &mut Vec<MatchEvent<S, I>>,
    ) {
        if let Some(old) = self.items.get(&id)
            && old.own().same_as(&own)
            && old.parents == parents
        {
            return;
        }
        let old_parents = self
            .items
            .get(&id)
            .map(|s| s.parents.clone())
            .unwrap_or_default();
        for p in &old_parents {
            if !parents.contains(p)
                && let Some(ps) = self.parents.get_mut(p)
            {
                ps.children.remove(&id);
                if ps.children.is_empty() && ps.labels.is_none() {
                    self.parents.remove(p);
                }
            }
        }
        for p in &parents {
            self.parents
                .entry(p.clone())
                .or_default()
                .children
                .insert(id.clone());
        }
        let effective_map =
            self.effective_labels(own.iter().map(|(k, v)| (k.as_str(), v.as_str())), &parents);
        let effective = self.strings.store(&effective_map);
        let own = (own != effective_map).then(|| self.strings.store(&own));
        let old_effective = match self.items.get_mut(&id) {
            Some(st) => {
                let old_own = std::mem::replace(&mut st.own, own);
                st.parents = parents;
                let old = std::mem::replace(&mut st.effective, effective);
                if let Some(o) = old_own {
                    self.strings.release(o);
                }
                Some(old)
            }
            None => {
                self.items.insert(
                    id.clone(),
                    ItemState {
                        own,
                        parents,
                        effective,
                    },
                );
                None
            }
        };
        self.reindex_item(&id, old_effective, out);
    }

    /// Removes an item, stopping all its matches.
    pub(crate) fn remove_item(&mut self, id: &I, out: &mut Vec<MatchEvent<S, I>>) {
        let Some(st) = self.items.remove(id) else {
            return;
        };
        for p in &st.parents {
            if let Some(ps) = self.parents.get_mut(p) {
                ps.children.remove(id);
                if ps.children.is_empty() && ps.labels.is_none() {
                    self.parents.remove(p);
                }
            }
        }
        self.unindex_item_labels(id, &st.effective);
        self.strings.release(st.effective);
        if let Some(o) = st.own {
            self.strings.release(o);
        }
        if let Some(sels) = self.matches_by_item.remove(id) {
            let mut sels: Vec<S> = sels.into_iter().collect();
            // Deterministic event order is not required, but keep symmetric bookkeeping.
            for s in sels.drain(..) {
                if let Some(m) = self.matches_by_sel.get_mut(&s) {
                    m.remove(id);
                }
                out.push(MatchEvent::Stopped(s, id.clone()));
            }
        }
    }

    /// Sets (or, with `None`, deletes) a parent's labels; children are re-evaluated.
    pub(crate) fn update_parent(
        &mut self,
        name: &str,
        labels: Option<LabelMap>,
        out: &mut Vec<MatchEvent<S, I>>,
    ) {
        let current = self.parents.get(name).and_then(|p| p.labels.as_ref());
        if current == labels.as_ref() {
            return;
        }
        let entry = self.parents.entry(name.to_string()).or_default();
        entry.labels = labels;
        let children: Vec<I> = entry.children.iter().cloned().collect();
        if entry.children.is_empty() && entry.labels.is_none() {
            self.parents.remove(name);
        }
        for child in children {
            let Some(st) = self.items.get(&child) else {
                continue;
            };
            let effective_map = self.effective_labels(st.own().iter(), &st.parents);
            if st.effective.same_as(&effective_map) {
                continue;
            }
            let own_map: LabelMap = st
                .own()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let effective = self.strings.store(&effective_map);
            let own = (own_map != effective_map).then(|| self.strings.store(&own_map));
            let old = self.items.get_mut(&child).map(|st| {
                let old_own = std::mem::replace(&mut st.own, own);
                (old_own, std::mem::replace(&mut st.effective, effective))
            });
            let old = old.map(|(old_own, old_eff)| {
                if let Some(o) = old_own {
                    self.strings.release(o);
                }
                old_eff
            });
            self.reindex_item(&child, old, out);
        }
    }

    /// Adds or replaces a selector.
    pub(crate) fn update_selector(
        &mut self,
        id: S,
        sel: Selector,
        out: &mut Vec<MatchEvent<S, I>>,
    ) {
        if let Some(old) = self.selectors.get(&id)
            && old.sel == sel
        {
            return;
        }
        self.unindex_selector(&id);
        let strategy = strategy_for(&sel);
        self.index_selector(&id, &strategy);
        let new_matches: HashSet<I> = self
            .candidates_for(&strategy)
            .into_iter()
            .filter(|i| {
                self.items
                    .get(i)
                    .is_some_and(|st| sel.evaluate(&st.effective))
            })
            .collect();
        self.selectors
            .insert(id.clone(), SelState { sel, strategy });
        let old_matches = self.matches_by_sel.remove(&id).unwrap_or_default();
        for i in old_matches.difference(&new_matches) {
            if let Some(m) = self.matches_by_item.get_mut(i) {
                m.remove(&id);
                if m.is_empty() {
                    self.matches_by_item.remove(i);
                }
            }
            out.push(MatchEvent::Stopped(id.clone(), i.clone()));
        }
        for i in new_matches.difference(&old_matches) {
            self.matches_by_item
                .entry(i.clone())
                .or_default()
                .insert(id.clone());
            out.push(MatchEvent::Started(id.clone(), i.clone()));
        }
        if !new_matches.is_empty() {
            self.matches_by_sel.insert(id, new_matches);
        }
    }

    /// Removes a selector, stopping all its matches.
    pub(crate) fn remove_selector(&mut self, id: &S, out: &mut Vec<MatchEvent<S, I>>) {
        if !self.selectors.contains_key(id) {
            return;
        }
        self.unindex_selector_raw(id);
        self.selectors.remove(id);
        if let Some(items) = self.matches_by_sel.remove(id) {
            for i in items {
                if let Some(m) = self.matches_by_item.get_mut(&i) {
                    m.remove(id);
                    if m.is_empty() {
                        self.matches_by_item.remove(&i);
                    }
                }
                out.push(MatchEvent::Stopped(id.clone(), i));
            }
        }
    }

    /// Items the selector currently matches.
    pub(crate) fn items_matching(&self, sel: &S) -> impl Iterator<Item = &I> {
        self.matches_by_sel.get(sel).into_iter().flatten()
    }

    /// Selectors currently matching the item.
    pub(crate) fn selectors_matching(&self, item: &I) -> impl Iterator<Item = &S> {
        self.matches_by_item.get(item).into_iter().flatten()
    }

    fn effective_labels<'a>(
        &self,
        own: impl IntoIterator<Item = (&'a str, &'a str)>,
        parents: &[String],
    ) -> LabelMap {
        let mut eff: LabelMap = own
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for p in parents {
            if let Some(labels) = self.parents.get(p).and_then(|ps| ps.labels.as_ref()) {
                for (k, v) in labels {
                    eff.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
        eff
    }

    /// Moves the item's label index entries from `old` to its current effective labels and
    /// re-evaluates the candidate selectors.
    fn reindex_item(&mut self, id: &I, old: Option<Stored>, out: &mut Vec<MatchEvent<S, I>>) {
        if let Some(old) = &old {
            self.unindex_item_labels(id, old);
        }
        let Some(st) = self.items.get(id) else {
            if let Some(o) = old {
                self.strings.release(o);
            }
            return;
        };
        let effective = st.effective.clone();
        for (k, v) in effective.0.iter() {
            self.items_by_kv
                .entry(k.clone())
                .or_default()
                .entry(v.clone())
                .or_default()
                .insert(id.clone());
        }
        // Candidates: selectors keyed on any old or new label, full-scan ones and current
        // matches (which may stop).
        let mut candidates: HashSet<S> = self.sels_full_scan.iter().cloned().collect();
        let empty = Stored::default();
        for labels in [&effective, old.as_ref().unwrap_or(&empty)] {
            for (k, v) in labels.iter() {
                if let Some(s) = self.sels_by_kv.get(k).and_then(|m| m.get(v)) {
                    candidates.extend(s.iter().cloned());
                }
                if let Some(s) = self.sels_by_key.get(k) {
                    candidates.extend(s.iter().cloned());
                }
            }
        }
        if let Some(cur) = self.matches_by_item.get(id) {
            candidates.extend(cur.iter().cloned());
        }
        for s in candidates {
            let Some(ss) = self.selectors.get(&s) else {
                continue;
            };
            let now = ss.sel.evaluate(&effective);
            let was = self.matches_by_item.get(id).is_some_and(|m| m.contains(&s));
            if now && !was {
                self.matches_by_item
                    .entry(id.clone())
                    .or_default()
                    .insert(s.clone());
                self.matches_by_sel
                    .entry(s.clone())
                    .or_default()
                    .insert(id.clone());
                out.push(MatchEvent::Started(s, id.clone()));
            } else if was && !now {
                if let Some(m) = self.matches_by_item.get_mut(id) {
                    m.remove(&s);
                    if m.is_empty() {
                        self.matches_by_item.remove(id);
                    }
                }
                if let Some(m) = self.matches_by_sel.get_mut(&s) {
                    m.remove(id);
                    if m.is_empty() {
                        self.matches_by_sel.remove(&s);
                    }
                }
                out.push(MatchEvent::Stopped(s, id.clone()));
            }
        }
        drop(effective);
        if let Some(o) = old {
            self.strings.release(o);
        }
    }

    fn unindex_item_labels(&mut self, id: &I, labels: &Stored) {
        for (k, v) in labels.iter() {
            if let Some(by_v) = self.items_by_kv.get_mut(k) {
                if let Some(set) = by_v.get_mut(v) {
                    set.remove(id);
                    if set.is_empty() {
                        by_v.remove(v);
                    }
                }
                if by_v.is_empty() {
                    self.items_by_kv.remove(k);
                }
            }
        }
    }

    fn candidates_for(&self, strategy: &Strategy) -> Vec<I> {
        match strategy {
            Strategy::NoMatch => Vec::new(),
            Strategy::Values(k, vals) => {
                let Some(by_v) = self.items_by_kv.get(k.as_str()) else {
                    return Vec::new();
                };
                vals.iter()
                    .filter_map(|v| by_v.get(v.as_str()))
                    .flatten()
                    .cloned()
                    .collect()
            }
            Strategy::Key(k) => self
                .items_by_kv
                .get(k.as_str())
                .into_iter()
                .flat_map(|m| m.values())
                .flatten()
                .cloned()
                .collect(),
            Strategy::FullScan => self.items.keys().cloned().collect(),
        }
    }

    fn index_selector(&mut self, id: &S, strategy: &Strategy) {
        match strategy {
            Strategy::NoMatch => {}
            Strategy::Values(k, vals) => {
                let by_v = self.sels_by_kv.entry(k.clone()).or_default();
                for v in vals {
                    by_v.entry(v.clone()).or_default().insert(id.clone());
                }
            }
            Strategy::Key(k) => {
                self.sels_by_key
                    .entry(k.clone())
                    .or_default()
                    .insert(id.clone());
            }
            Strategy::FullScan => {
                self.sels_full_scan.insert(id.clone());
            }
        }
    }

    fn unindex_selector(&mut self, id: &S) {
        if self.selectors.contains_key(id) {
            self.unindex_selector_raw(id);
        }
    }

    /// Removes the selector from the strategy indexes, using its stored strategy.
    fn unindex_selector_raw(&mut self, id: &S) {
        let Some(strategy) = self.selectors.get(id).map(|st| st.strategy.clone()) else {
            return;
        };
        match strategy {
            Strategy::NoMatch => {}
            Strategy::Values(k, vals) => {
                if let Some(by_v) = self.sels_by_kv.get_mut(&k) {
                    for v in &vals {
                        if let Some(s) = by_v.get_mut(v) {
                            s.remove(id);
                            if s.is_empty() {
                                by_v.remove(v);
                            }
                        }
                    }
                    if by_v.is_empty() {
                        self.sels_by_kv.remove(&k);
                    }
                }
            }
            Strategy::Key(k) => {
                if let Some(s) = self.sels_by_key.get_mut(&k) {
                    s.remove(id);
                    if s.is_empty() {
                        self.sels_by_key.remove(&k);
                    }
                }
            }
            Strategy::FullScan => {
                self.sels_full_scan.remove(id);
            }
        }
    }
}

/// Picks the most selective restriction: a value set (smallest first, preferring labels other
/// than Calico's own namespace/SA labels, which many items share), else a required label, else a
/// full scan.
fn strategy_for(sel: &Selector) -> Strategy {
    let restrictions = sel.label_restrictions();
    if restrictions.values().any(|r| r.is_impossible()) {
        return Strategy::NoMatch;
    }
    let shared = |k: &str| k.starts_with("projectcalico.org/");
    let best_values = restrictions
        .iter()
        .filter_map(|(k, r)| r.must_have_one_of_values.as_ref().map(|v| (k, v)))
        .min_by_key(|(k, v)| (v.len(), shared(k), (*k).clone()));
    if let Some((k, v)) = best_values {
        return Strategy::Values(k.clone(), v.clone());
    }
    let best_key = restrictions
        .iter()
        .filter(|(_, r)| r.must_be_present)
        .min_by_key(|(k, _)| (shared(k), (*k).clone()));
    if let Some((k, _)) = best_key {
        return Strategy::Key(k.clone());
    }
    Strategy::FullScan
}

#[cfg(test)]
mod tests {
    use super::*;
    use calico_model::selector::parse;

    fn labels(pairs: &[(&str, &str)]) -> LabelMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sorted(mut ev: Vec<MatchEvent<&'static str, &'static str>>) -> Vec<String> {
        let mut v: Vec<String> = ev
            .drain(..)
            .map(|e| match e {
                MatchEvent::Started(s, i) => format!("+{s}:{i}"),
                MatchEvent::Stopped(s, i) => format!("-{s}:{i}"),
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn strategies() {
        assert_eq!(
            strategy_for(&parse("a == 'x' && a == 'y'").unwrap()),
            Strategy::NoMatch
        );
        assert_eq!(
            strategy_for(&parse("projectcalico.org/namespace == 'n' && app == 'w'").unwrap()),
            Strategy::Values("app".into(), BTreeSet::from(["w".to_string()]))
        );
        assert_eq!(
            strategy_for(&parse("has(a) && b != 'x'").unwrap()),
            Strategy::Key("a".into())
        );
        assert_eq!(strategy_for(&parse("!has(a)").unwrap()), Strategy::FullScan);
        assert_eq!(strategy_for(&parse("all()").unwrap()), Strategy::FullScan);
    }

    #[test]
    fn item_and_selector_matching_is_symmetric() {
        let mut idx: LabelIndex<&str, &str> = LabelIndex::default();
        let mut ev = Vec::new();
        idx.update_selector("web", parse("app == 'web'").unwrap(), &mut ev);
        idx.update_selector("notweb", parse("app != 'web'").unwrap(), &mut ev);
        assert!(ev.is_empty());
        idx.update_item("e1", labels(&[("app", "web")]), vec![], &mut ev);
        idx.update_item("e2", labels(&[("app", "db")]), vec![], &mut ev);
        assert_eq!(sorted(std::mem::take(&mut ev)), ["+notweb:e2", "+web:e1"]);
        idx.update_item("e1", labels(&[("app", "db")]), vec![], &mut ev);
        assert_eq!(sorted(std::mem::take(&mut ev)), ["+notweb:e1", "-web:e1"]);
        idx.update_selector("web", parse("app == 'db'").unwrap(), &mut ev);
        assert_eq!(sorted(std::mem::take(&mut ev)), ["+web:e1", "+web:e2"]);
        idx.remove_item(&"e1", &mut ev);
        assert_eq!(sorted(std::mem::take(&mut ev)), ["-notweb:e1", "-web:e1"]);
        idx.remove_selector(&"web", &mut ev);
        assert_eq!(sorted(std::mem::take(&mut ev)), ["-web:e2"]);
        idx.remove_selector(&"notweb", &mut ev);
        assert_eq!(sorted(std::mem::take(&mut ev)), ["-notweb:e2"]);
        assert!(idx.matches_by_item.is_empty() && idx.matches_by_sel.is_empty());
    }

    #[test]
    fn interned_label_strings_leave_with_their_last_user() {
        let mut idx: LabelIndex<&str, &str> = LabelIndex::default();
        let mut ev = Vec::new();
        idx.update_selector("a", parse("app == 'a'").unwrap(), &mut ev);
        idx.update_item(
            "e1",
            labels(&[("app", "a"), ("pod", "p1")]),
            vec![],
            &mut ev,
        );
        idx.update_item(
            "e2",
            labels(&[("app", "a"), ("pod", "p2")]),
            vec![],
            &mut ev,
        );
        let strings = |idx: &LabelIndex<&str, &str>| {
            let mut v: Vec<String> = idx.strings.0.iter().map(|s| s.to_string()).collect();
            v.sort();
            v
        };
        assert_eq!(strings(&idx), ["a", "app", "p1", "p2", "pod"]);
        // A relabel drops the old unique value; shared strings stay.
        idx.update_item(
            "e1",
            labels(&[("app", "a"), ("pod", "p3")]),
            vec![],
            &mut ev,
        );
        assert_eq!(strings(&idx), ["a", "app", "p2", "p3", "pod"]);
        idx.remove_item(&"e2", &mut ev);
        assert_eq!(strings(&idx), ["a", "app", "p3", "pod"]);
        // Own labels survive a parent that adds and then drops labels.
        idx.update_item("e1", labels(&[("app", "b")]), vec!["kns.x".into()], &mut ev);
        idx.update_parent("kns.x", Some(labels(&[("app", "a"), ("t", "1")])), &mut ev);
        assert!(idx.items["e1"].own.is_some());
        assert_eq!(idx.items["e1"].effective.get("t"), Some("1"));
        assert_eq!(idx.items["e1"].effective.get("app"), Some("b"));
        idx.update_parent("kns.x", None, &mut ev);
        assert!(idx.items["e1"].own.is_none());
        assert_eq!(idx.items["e1"].effective.get("t"), None);
        idx.remove_item(&"e1", &mut ev);
        assert!(strings(&idx).is_empty(), "{:?}", strings(&idx));
        assert!(idx.items_by_kv.is_empty());
    }

    #[test]
    fn parent_labels_are_inherited_and_own_wins() {
        let mut idx: LabelIndex<&str, &str> = LabelIndex::default();
        let mut ev = Vec::new();
        idx.update_selector("ns", parse("pcns.team == 'a'").unwrap(), &mut ev);
        idx.update_selector("role", parse("role == 'db'").unwrap(), &mut ev);
        idx.update_item(
            "e1",
            labels(&[("role", "db")]),
            vec!["kns.x".into()],
            &mut ev,
        );
        assert_eq!(sorted(std::mem::take(&mut ev)), ["+role:e1"]);
        idx.update_parent(
            "kns.x",
            Some(labels(&[("pcns.team", "a"), ("role", "web")])),
            &mut ev,
        );
        assert_eq!(sorted(std::mem::take(&mut ev)), ["+ns:e1"]);
        idx.update_parent("kns.x", None, &mut ev);
        assert_eq!(sorted(std::mem::take(&mut ev)), ["-ns:e1"]);
        idx.update_item("e1", labels(&[]), vec!["kns.x".into()], &mut ev);
        assert_eq!(sorted(std::mem::take(&mut ev)), ["-role:e1"]);
    }
}
