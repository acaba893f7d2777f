//! An incremental index of selectors against label sets (Felix's `labelindex`, §3.2 of the
//! reference note).
//!
//! The index holds selectors (by id `S`), label sets (by id `L`, e.g. endpoints or network sets)
//! and parents (by id `P`, e.g. profiles) whose labels a label set inherits. Every mutation
//! returns the match-started / match-stopped events it caused, sorted, so the result depends
//! only on the current state (no hysteresis) and the output is deterministic.
//!
//! Effective labels of a label set = its own labels, falling back to each parent's labels in the
//! order the parents are listed (own label wins; a parent that does not exist contributes
//! nothing).
//!
//! To keep updates cheap, both sides are indexed:
//! - selectors by their most restrictive label restriction (§2.7): a selector needing
//!   `app in {"a","b"}` is filed under `app = a` and `app = b`, one needing `has(app)` under the
//!   `app` wildcard; selectors without a usable restriction go to a small "full scan" list and
//!   impossible selectors are not filed at all. A label-set update then evaluates only the
//!   selectors filed under its own (label, value) pairs plus the full-scan list.
//! - label sets by their effective (label, value) pairs: a selector update evaluates only the
//!   label sets holding its best restricted label (picked by actual candidate count).
//!
//! ```
//! use std::collections::BTreeMap;
//! use calico_model::labelindex::{LabelIndex, MatchEvent};
//! use calico_model::selector::parse;
//!
//! let mut idx: LabelIndex<&str, &str> = LabelIndex::new();
//! idx.update_selector("web", parse("app == 'web'").unwrap());
//! let ev = idx.update_labels("pod1", BTreeMap::from([("app".into(), "web".into())]), vec![]);
//! assert_eq!(ev, vec![MatchEvent::Started { selector: "web", labels: "pod1" }]);
//! assert!(idx.is_match(&"web", &"pod1"));
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::Hash;

use crate::selector::{LabelRestriction, LabelRestrictions, Selector};

/// A label map (label name → value).
pub type LabelMap = BTreeMap<String, String>;

/// A change in the match relation between one selector and one label set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MatchEvent<S, L> {
    /// The selector stopped matching the label set (or one of them was removed).
    Stopped { selector: S, labels: L },
    /// The selector started matching the label set.
    Started { selector: S, labels: L },
}

/// How a selector is filed in the selector-side index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanStrategy {
    /// The selector's restrictions contradict each other; it can never match.
    NoMatch,
    /// Filed under `label` = each of `values`.
    Values { label: String, values: Vec<String> },
    /// Filed under `label` being present (any value).
    LabelName { label: String },
    /// No usable restriction: evaluated against every label set.
    FullScan,
}

impl ScanStrategy {
    /// Chooses how to file a selector, preferring the most restrictive label as upstream does
    /// (a contradiction beats a short value list beats mere presence; ties go to the greater
    /// label name so the choice is deterministic).
    pub fn for_restrictions(lrs: &LabelRestrictions) -> ScanStrategy {
        let best = lrs.iter().max_by(|(ka, ra), (kb, rb)| {
            restriction_score(ra)
                .cmp(&restriction_score(rb))
                .then_with(|| ka.cmp(kb))
        });
        match best {
            None => ScanStrategy::FullScan,
            Some((_, r)) if r.is_impossible() => ScanStrategy::NoMatch,
            Some((k, r)) => match &r.must_have_one_of_values {
                Some(vs) => ScanStrategy::Values {
                    label: k.clone(),
                    values: vs.iter().cloned().collect(),
                },
                None if r.must_be_present => ScanStrategy::LabelName { label: k.clone() },
                None => ScanStrategy::FullScan,
            },
        }
    }
}

fn restriction_score(r: &LabelRestriction) -> usize {
    if r.is_impossible() {
        return usize::MAX;
    }
    let mut score = 0;
    if r.must_be_present {
        score += 10;
    }
    if let Some(vs) = &r.must_have_one_of_values {
        score += 10_000usize.saturating_sub(vs.len()).max(100);
    }
    score
}

struct SelectorEntry {
    selector: Selector,
    strategy: ScanStrategy,
    restrictions: LabelRestrictions,
}

struct LabelSetEntry<P> {
    own: LabelMap,
    parents: Vec<P>,
    effective: LabelMap,
}

/// Selectors filed under one label name.
struct SelectorsByValue<S> {
    by_value: HashMap<String, HashSet<S>>,
    wildcard: HashSet<S>,
}

impl<S> Default for SelectorsByValue<S> {
    fn default() -> Self {
        Self {
            by_value: HashMap::new(),
            wildcard: HashSet::new(),
        }
    }
}

/// Label sets holding one label name, by value.
struct LabelSetsByValue<L> {
    count: usize,
    by_value: HashMap<String, HashSet<L>>,
}

impl<L> Default for LabelSetsByValue<L> {
    fn default() -> Self {
        Self {
            count: 0,
            by_value: HashMap::new(),
        }
    }
}

/// The incremental selector ↔ label-set index. See the module documentation.
pub struct LabelIndex<S, L, P = String> {
    selectors: HashMap<S, SelectorEntry>,
    label_sets: HashMap<L, LabelSetEntry<P>>,
    parents: HashMap<P, LabelMap>,
    /// Parent → label sets that list it.
    children: HashMap<P, HashSet<L>>,

    /// Selector-side index (label name → selectors filed under it).
    sels_by_label: HashMap<String, SelectorsByValue<S>>,
    sels_full_scan: HashSet<S>,

    /// Label-set-side index over effective labels.
    sets_by_label: HashMap<String, LabelSetsByValue<L>>,

    /// The match relation, both ways.
    matches_by_sel: HashMap<S, HashSet<L>>,
    matches_by_set: HashMap<L, HashSet<S>>,
}

impl<S, L, P> Default for LabelIndex<S, L, P> {
    fn default() -> Self {
        Self {
            selectors: HashMap::new(),
            label_sets: HashMap::new(),
            parents: HashMap::new(),
            children: HashMap::new(),
            sels_by_label: HashMap::new(),
            sels_full_scan: HashSet::new(),
            sets_by_label: HashMap::new(),
            matches_by_sel: HashMap::new(),
            matches_by_set: HashMap::new(),
        }
    }
}

/// Effective labels: own over parents, in parent order.
fn effective_labels<P: Eq + Hash>(
    own: &LabelMap,
    parents: &[P],
    parent_labels: &HashMap<P, LabelMap>,
) -> LabelMap {
    let mut eff = own.clone();
    for p in parents {
        if let Some(pl) = parent_labels.get(p) {
            for (k, v) in pl {
                if !eff.contains_key(k) {
                    eff.insert(k.clone(), v.clone());
                }
            }
        }
    }
    eff
}

fn set_insert<K: Eq + Hash, V: Eq + Hash>(map: &mut HashMap<K, HashSet<V>>, k: K, v: V) {
    map.entry(k).or_default().insert(v);
}

fn set_remove<K: Eq + Hash, V: Eq + Hash>(map: &mut HashMap<K, HashSet<V>>, k: &K, v: &V) {
    if let Some(set) = map.get_mut(k) {
        set.remove(v);
        if set.is_empty() {
            map.remove(k);
        }
    }
}

impl<S, L, P> LabelIndex<S, L, P>
where
    S: Clone + Eq + Hash + Ord,
    L: Clone + Eq + Hash + Ord,
    P: Clone + Eq + Hash,
{
    pub fn new() -> Self {
        Self::default()
    }

    // ----- selectors -----

    /// Adds or replaces a selector; returns the match changes, sorted.
    pub fn update_selector(&mut self, id: S, selector: Selector) -> Vec<MatchEvent<S, L>> {
        if self
            .selectors
            .get(&id)
            .is_some_and(|e| e.selector == selector)
        {
            return Vec::new();
        }
        self.unfile_selector(&id);
        let restrictions = selector.label_restrictions();
        let strategy = ScanStrategy::for_restrictions(&restrictions);
        self.file_selector(&id, &strategy);
        let entry = SelectorEntry {
            selector,
            strategy,
            restrictions,
        };

        // Candidate label sets: those holding the restricted label with the fewest holders.
        let new: HashSet<L> = if entry.strategy == ScanStrategy::NoMatch {
            HashSet::new()
        } else {
            let mut new = HashSet::new();
            let mut consider = |l: &L, e: &LabelSetEntry<P>| {
                if entry.selector.evaluate(&e.effective) {
                    new.insert(l.clone());
                }
            };
            match self.best_label_scan(&entry.restrictions) {
                Some((label, Some(values))) => {
                    if let Some(byv) = self.sets_by_label.get(label) {
                        for v in values {
                            for l in byv.by_value.get(v).into_iter().flatten() {
                                consider(l, &self.label_sets[l]);
                            }
                        }
                    }
                }
                Some((label, None)) => {
                    if let Some(byv) = self.sets_by_label.get(label) {
                        for l in byv.by_value.values().flatten() {
                            consider(l, &self.label_sets[l]);
                        }
                    }
                }
                None => self.label_sets.iter().for_each(|(l, e)| consider(l, e)),
            }
            new
        };
        self.selectors.insert(id.clone(), entry);
        self.set_selector_matches(&id, new)
    }

    /// Removes a selector; returns the match-stopped events, sorted.
    pub fn remove_selector(&mut self, id: &S) -> Vec<MatchEvent<S, L>> {
        if !self.selectors.contains_key(id) {
            return Vec::new();
        }
        self.unfile_selector(id);
        self.selectors.remove(id);
        self.set_selector_matches(id, HashSet::new())
    }

    /// Picks the restricted label whose candidate label sets are fewest (by the live index).
    /// `None` means a full scan; `Some((label, None))` means "every set holding label".
    fn best_label_scan<'r>(
        &self,
        lrs: &'r LabelRestrictions,
    ) -> Option<(&'r str, Option<&'r BTreeSet<String>>)> {
        let mut best: Option<(usize, &'r str, Option<&'r BTreeSet<String>>)> = None;
        for (label, r) in lrs {
            if !r.must_be_present {
                continue;
            }
            let byv = self.sets_by_label.get(label.as_str());
            let cost = match (&r.must_have_one_of_values, byv) {
                (_, None) => 0,
                (Some(vs), Some(byv)) => vs
                    .iter()
                    .map(|v| byv.by_value.get(v).map_or(0, HashSet::len))
                    .sum(),
                (None, Some(byv)) => byv.count,
            };
            if best.as_ref().is_none_or(|(c, _, _)| cost < *c) {
                best = Some((cost, label.as_str(), r.must_have_one_of_values.as_ref()));
            }
        }
        best.map(|(_, l, v)| (l, v))
    }

    fn file_selector(&mut self, id: &S, strategy: &ScanStrategy) {
        match strategy {
            ScanStrategy::NoMatch => {}
            ScanStrategy::FullScan => {
                self.sels_full_scan.insert(id.clone());
            }
            ScanStrategy::LabelName { label } => {
                self.sels_by_label
                    .entry(label.clone())
                    .or_default()
                    .wildcard
                    .insert(id.clone());
            }
            ScanStrategy::Values { label, values } => {
                let sub = self.sels_by_label.entry(label.clone()).or_default();
                for v in values {
                    set_insert(&mut sub.by_value, v.clone(), id.clone());
                }
            }
        }
    }

    fn unfile_selector(&mut self, id: &S) {
        let Some(entry) = self.selectors.get(id) else {
            return;
        };
        match &entry.strategy {
            ScanStrategy::NoMatch => {}
            ScanStrategy::FullScan => {
                self.sels_full_scan.remove(id);
            }
            ScanStrategy::LabelName { label } | ScanStrategy::Values { label, .. } => {
                if let Some(sub) = self.sels_by_label.get_mut(label) {
                    sub.wildcard.remove(id);
                    if let ScanStrategy::Values { values, .. } = &entry.strategy {
                        for v in values {
                            set_remove(&mut sub.by_value, v, id);
                        }
                    }
                    if sub.wildcard.is_empty() && sub.by_value.is_empty() {
                        self.sels_by_label.remove(label);
                    }
                }
            }
        }
    }

    /// Replaces the match set of one selector, emitting the differences.
    fn set_selector_matches(&mut self, id: &S, new: HashSet<L>) -> Vec<MatchEvent<S, L>> {
        let old = self.matches_by_sel.remove(id).unwrap_or_default();
        let mut events = Vec::new();
        for l in old.difference(&new) {
            set_remove(&mut self.matches_by_set, l, id);
            events.push(MatchEvent::Stopped {
                selector: id.clone(),
                labels: l.clone(),
            });
        }
        for l in new.difference(&old) {
            set_insert(&mut self.matches_by_set, l.clone(), id.clone());
            events.push(MatchEvent::Started {
                selector: id.clone(),
                labels: l.clone(),
            });
        }
        if !new.is_empty() {
            self.matches_by_sel.insert(id.clone(), new);
        }
        events.sort_unstable();
        events
    }

    // ----- label sets -----

    /// Adds or replaces a label set with its own labels and its parents (in priority order);
    /// returns the match changes, sorted.
    pub fn update_labels(
        &mut self,
        id: L,
        labels: LabelMap,
        parents: Vec<P>,
    ) -> Vec<MatchEvent<S, L>> {
        let mut events = Vec::new();
        if let Some(old) = self.label_sets.get(&id) {
            if old.own == labels && old.parents == parents {
                return events;
            }
            let old_parents = old.parents.clone();
            for p in &old_parents {
                set_remove(&mut self.children, p, &id);
            }
        }
        for p in &parents {
            set_insert(&mut self.children, p.clone(), id.clone());
        }
        let effective = effective_labels(&labels, &parents, &self.parents);
        self.set_effective(&id, labels, parents, effective, &mut events);
        events.sort_unstable();
        events
    }

    /// Removes a label set; returns the match-stopped events, sorted.
    pub fn remove_labels(&mut self, id: &L) -> Vec<MatchEvent<S, L>> {
        let Some(entry) = self.label_sets.remove(id) else {
            return Vec::new();
        };
        for p in &entry.parents {
            set_remove(&mut self.children, p, id);
        }
        self.unindex_label_set(id, &entry.effective);
        let mut events = Vec::new();
        for s in self.matches_by_set.remove(id).unwrap_or_default() {
            set_remove(&mut self.matches_by_sel, &s, id);
            events.push(MatchEvent::Stopped {
                selector: s,
                labels: id.clone(),
            });
        }
        events.sort_unstable();
        events
    }

    // ----- parents -----

    /// Adds or replaces a parent's labels; label sets listing it are re-evaluated.
    pub fn update_parent(&mut self, id: P, labels: LabelMap) -> Vec<MatchEvent<S, L>> {
        if self.parents.get(&id) == Some(&labels) {
            return Vec::new();
        }
        self.parents.insert(id.clone(), labels);
        self.refresh_children(&id)
    }

    /// Removes a parent; label sets listing it keep the reference and lose its labels.
    pub fn remove_parent(&mut self, id: &P) -> Vec<MatchEvent<S, L>> {
        if self.parents.remove(id).is_none() {
            return Vec::new();
        }
        self.refresh_children(id)
    }

    fn refresh_children(&mut self, parent: &P) -> Vec<MatchEvent<S, L>> {
        let mut events = Vec::new();
        let mut kids: Vec<L> = self
            .children
            .get(parent)
            .map(|c| c.iter().cloned().collect())
            .unwrap_or_default();
        kids.sort_unstable();
        for l in kids {
            let Some(entry) = self.label_sets.get(&l) else {
                continue;
            };
            let effective = effective_labels(&entry.own, &entry.parents, &self.parents);
            if effective == entry.effective {
                continue;
            }
            let (own, parents) = (entry.own.clone(), entry.parents.clone());
            self.set_effective(&l, own, parents, effective, &mut events);
        }
        events.sort_unstable();
        events
    }

    /// Stores a label set with new effective labels, re-indexes it and recomputes its matches
    /// from the candidate selectors only.
    fn set_effective(
        &mut self,
        id: &L,
        own: LabelMap,
        parents: Vec<P>,
        effective: LabelMap,
        events: &mut Vec<MatchEvent<S, L>>,
    ) {
        if let Some(old) = self.label_sets.remove(id) {
            self.unindex_label_set(id, &old.effective);
        }
        self.index_label_set(id, &effective);

        let mut new: HashSet<S> = HashSet::new();
        let mut consider = |s: &S| {
            if self.selectors[s].selector.evaluate(&effective) {
                new.insert(s.clone());
            }
        };
        // Each selector is filed under exactly one label, and a label set has one value per
        // label, so every candidate is visited once.
        for (k, v) in &effective {
            if let Some(sub) = self.sels_by_label.get(k) {
                sub.wildcard.iter().for_each(&mut consider);
                sub.by_value
                    .get(v)
                    .into_iter()
                    .flatten()
                    .for_each(&mut consider);
            }
        }
        self.sels_full_scan.iter().for_each(&mut consider);

        let old = self.matches_by_set.remove(id).unwrap_or_default();
        for s in old.difference(&new) {
            set_remove(&mut self.matches_by_sel, s, id);
            events.push(MatchEvent::Stopped {
                selector: s.clone(),
                labels: id.clone(),
            });
        }
        for s in new.difference(&old) {
            set_insert(&mut self.matches_by_sel, s.clone(), id.clone());
            events.push(MatchEvent::Started {
                selector: s.clone(),
                labels: id.clone(),
            });
        }
        if !new.is_empty() {
            self.matches_by_set.insert(id.clone(), new);
        }
        self.label_sets.insert(
            id.clone(),
            LabelSetEntry {
                own,
                parents,
                effective,
            },
        );
    }

    fn index_label_set(&mut self, id: &L, effective: &LabelMap) {
        for (k, v) in effective {
            let byv = match self.sets_by_label.get_mut(k) {
                Some(b) => b,
                None => self.sets_by_label.entry(k.clone()).or_default(),
            };
            byv.count += 1;
            match byv.by_value.get_mut(v) {
                Some(set) => {
                    set.insert(id.clone());
                }
                None => {
                    byv.by_value.insert(v.clone(), HashSet::from([id.clone()]));
                }
            }
        }
    }

    fn unindex_label_set(&mut self, id: &L, effective: &LabelMap) {
        for (k, v) in effective {
            if let Some(byv) = self.sets_by_label.get_mut(k) {
                if byv.by_value.get_mut(v).is_some_and(|set| set.remove(id)) {
                    byv.count -= 1;
                }
                if byv.by_value.get(v).is_some_and(HashSet::is_empty) {
                    byv.by_value.remove(v);
                }
                if byv.count == 0 {
                    self.sets_by_label.remove(k);
                }
            }
        }
    }

    // ----- queries -----

    /// Whether selector `s` currently matches label set `l`.
    pub fn is_match(&self, s: &S, l: &L) -> bool {
        self.matches_by_sel
            .get(s)
            .is_some_and(|set| set.contains(l))
    }

    /// Selectors matching a label set (unordered).
    pub fn selectors_matching(&self, l: &L) -> impl Iterator<Item = &S> + '_ {
        self.matches_by_set.get(l).into_iter().flatten()
    }

    /// Label sets matched by a selector (unordered).
    pub fn label_sets_matching(&self, s: &S) -> impl Iterator<Item = &L> + '_ {
        self.matches_by_sel.get(s).into_iter().flatten()
    }

    /// Number of label sets a selector matches.
    pub fn match_count(&self, s: &S) -> usize {
        self.matches_by_sel.get(s).map_or(0, HashSet::len)
    }

    /// The stored selector.
    pub fn selector(&self, s: &S) -> Option<&Selector> {
        self.selectors.get(s).map(|e| &e.selector)
    }

    /// How a stored selector is filed.
    pub fn scan_strategy(&self, s: &S) -> Option<&ScanStrategy> {
        self.selectors.get(s).map(|e| &e.strategy)
    }

    /// A label set's effective labels (own over inherited).
    pub fn effective_labels(&self, l: &L) -> Option<&LabelMap> {
        self.label_sets.get(l).map(|e| &e.effective)
    }

    /// A parent's labels.
    pub fn parent_labels(&self, p: &P) -> Option<&LabelMap> {
        self.parents.get(p)
    }

    /// Ids of all selectors.
    pub fn selector_ids(&self) -> impl Iterator<Item = &S> + '_ {
        self.selectors.keys()
    }

    /// Ids of all label sets.
    pub fn label_set_ids(&self) -> impl Iterator<Item = &L> + '_ {
        self.label_sets.keys()
    }

    pub fn num_selectors(&self) -> usize {
        self.selectors.len()
    }

    pub fn num_label_sets(&self) -> usize {
        self.label_sets.len()
    }

    /// Number of selectors evaluated against every label set (no usable restriction).
    pub fn num_full_scan_selectors(&self) -> usize {
        self.sels_full_scan.len()
    }

    /// All current matches, sorted (for tests and debugging).
    pub fn all_matches(&self) -> Vec<(S, L)> {
        let mut out: Vec<(S, L)> = self
            .matches_by_sel
            .iter()
            .flat_map(|(s, ls)| ls.iter().map(move |l| (s.clone(), l.clone())))
            .collect();
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::parse;

    fn lm(pairs: &[(&str, &str)]) -> LabelMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn started(s: &'static str, l: &'static str) -> MatchEvent<&'static str, &'static str> {
        MatchEvent::Started {
            selector: s,
            labels: l,
        }
    }

    fn stopped(s: &'static str, l: &'static str) -> MatchEvent<&'static str, &'static str> {
        MatchEvent::Stopped {
            selector: s,
            labels: l,
        }
    }

    #[test]
    fn strategies() {
        let st = |s: &str| ScanStrategy::for_restrictions(&parse(s).unwrap().label_restrictions());
        assert_eq!(st("all()"), ScanStrategy::FullScan);
        assert_eq!(st("a != 'x'"), ScanStrategy::FullScan);
        assert_eq!(st("!has(a)"), ScanStrategy::FullScan);
        assert_eq!(st("a == 'x' && a == 'y'"), ScanStrategy::NoMatch);
        assert_eq!(st("has(a) && !has(a)"), ScanStrategy::NoMatch);
        assert_eq!(st("has(b)"), ScanStrategy::LabelName { label: "b".into() });
        assert_eq!(
            st("has(b) && a in {'x', 'y'}"),
            ScanStrategy::Values {
                label: "a".into(),
                values: vec!["x".into(), "y".into()]
            }
        );
        assert_eq!(
            st("a in {'x', 'y'} && b == 'z'"),
            ScanStrategy::Values {
                label: "b".into(),
                values: vec!["z".into()]
            }
        );
    }

    #[test]
    fn basic_events() {
        let mut idx: LabelIndex<&str, &str> = LabelIndex::new();
        assert_eq!(
            idx.update_labels("e1", lm(&[("app", "web")]), vec![]),
            vec![]
        );
        assert_eq!(
            idx.update_selector("s1", parse("app == 'web'").unwrap()),
            vec![started("s1", "e1")]
        );
        // Same selector again: nothing.
        assert_eq!(
            idx.update_selector("s1", parse("app=='web'").unwrap()),
            vec![]
        );
        assert_eq!(
            idx.update_labels("e2", lm(&[("app", "web")]), vec![]),
            vec![started("s1", "e2")]
        );
        assert_eq!(
            idx.update_labels("e1", lm(&[("app", "db")]), vec![]),
            vec![stopped("s1", "e1")]
        );
        assert_eq!(
            idx.update_selector("s1", parse("has(app)").unwrap()),
            vec![started("s1", "e1")]
        );
        assert_eq!(idx.remove_labels(&"e2"), vec![stopped("s1", "e2")]);
        assert_eq!(idx.remove_selector(&"s1"), vec![stopped("s1", "e1")]);
        assert_eq!(idx.all_matches(), vec![]);
        assert_eq!(idx.remove_selector(&"s1"), vec![]);
    }

    #[test]
    fn inheritance() {
        let mut idx: LabelIndex<&str, &str, &str> = LabelIndex::new();
        idx.update_selector(
            "ns",
            parse("pcns.name == 'kube-system' && app == 'dns'").unwrap(),
        );
        idx.update_selector("role", parse("role == 'db'").unwrap());
        // Parent not there yet: no match.
        assert_eq!(
            idx.update_labels(
                "e1",
                lm(&[("app", "dns"), ("role", "db")]),
                vec!["p1", "p2"]
            ),
            vec![started("role", "e1")]
        );
        assert_eq!(
            idx.update_parent("p1", lm(&[("pcns.name", "kube-system")])),
            vec![started("ns", "e1")]
        );
        // Own label wins over the parent's.
        assert_eq!(idx.update_parent("p2", lm(&[("role", "web")])), vec![]);
        assert!(idx.is_match(&"role", &"e1"));
        // The first parent wins over the second.
        assert_eq!(
            idx.update_parent("p2", lm(&[("pcns.name", "other")])),
            vec![]
        );
        assert_eq!(idx.remove_parent(&"p1"), vec![stopped("ns", "e1")]);
        assert_eq!(idx.effective_labels(&"e1").unwrap()["pcns.name"], "other");
        assert_eq!(
            idx.update_labels("e1", lm(&[("app", "dns")]), vec!["p2"]),
            vec![stopped("role", "e1")]
        );
    }
}
