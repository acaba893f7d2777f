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
//! - selectors by one label restriction (§2.7): a selector needing `app in {"a","b"}` is filed
//!   under `app = a` and `app = b`, one needing `has(app)` under the `app` wildcard; selectors
//!   without a usable restriction go to a "full scan" list and impossible selectors are not
//!   filed at all. A label-set update then evaluates only the selectors filed under its own
//!   (label, value) pairs plus the full-scan list.
//! - label sets by their effective (label, value) pairs: a selector update evaluates only the
//!   label sets holding the selector's filing label (or values).
//!
//! Which restricted label a selector is filed under is chosen by how many label sets it would
//! touch (counted in the live index), falling back to upstream's preference (contradiction,
//! then short value lists, then presence) when counts tie, e.g. while the index is empty.
//! Selectors are re-filed each time the number of label sets doubles, so a filing chosen before
//! any label set existed does not stay poor.
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

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;

use crate::selector::{LabelRestriction, LabelRestrictions, Labels, Node, Selector};

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
    /// Filed under each part (each a `Values` or `LabelName`): used for an `||` whose every
    /// branch has a usable restriction even though the whole has none in common.
    AnyOf(Vec<ScanStrategy>),
    /// No usable restriction: evaluated against every label set.
    FullScan,
}

impl ScanStrategy {
    /// The `Values` / `LabelName` parts this strategy files a selector under.
    pub fn parts(&self) -> &[ScanStrategy] {
        match self {
            ScanStrategy::Values { .. } | ScanStrategy::LabelName { .. } => {
                std::slice::from_ref(self)
            }
            ScanStrategy::AnyOf(parts) => parts,
            ScanStrategy::NoMatch | ScanStrategy::FullScan => &[],
        }
    }

    /// Upstream's choice without knowledge of the label sets: the most restrictive label (a
    /// contradiction beats a short value list beats mere presence; ties go to the greater label
    /// name so the choice is deterministic).
    pub fn for_restrictions(lrs: &LabelRestrictions) -> ScanStrategy {
        choose(lrs, |_, _| 0)
    }
}

/// Picks the filing for a selector: fewest candidate label sets by `cost`, then upstream's
/// restriction score, then the greater label name.
fn choose(
    lrs: &LabelRestrictions,
    cost: impl Fn(&str, &LabelRestriction) -> usize,
) -> ScanStrategy {
    if lrs.values().any(LabelRestriction::is_impossible) {
        return ScanStrategy::NoMatch;
    }
    let best = lrs
        .iter()
        .filter(|(_, r)| r.must_be_present)
        .min_by(|(ka, ra), (kb, rb)| {
            let a = (cost(ka, ra), Reverse(restriction_score(ra)), Reverse(*ka));
            let b = (cost(kb, rb), Reverse(restriction_score(rb)), Reverse(*kb));
            a.cmp(&b)
        });
    match best {
        None => ScanStrategy::FullScan,
        Some((k, r)) => match &r.must_have_one_of_values {
            Some(vs) => ScanStrategy::Values {
                label: k.clone(),
                values: vs.iter().cloned().collect(),
            },
            None => ScanStrategy::LabelName { label: k.clone() },
        },
    }
}

fn restriction_score(r: &LabelRestriction) -> usize {
    let mut score = 0;
    if r.must_be_present {
        score += 10;
    }
    if let Some(vs) = &r.must_have_one_of_values {
        score += 10_000usize.saturating_sub(vs.len()).max(100);
    }
    score
}

/// Effective labels stored flat, sorted by name, in one text buffer (two allocations per label
/// set, contiguous for the evaluator). Lookups compare lengths before bytes, which matters
/// because label names share long prefixes (`projectcalico.org/...`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlatLabels {
    text: Box<str>,
    /// Per label: end offset of the name and of the value in `text`; each name starts where
    /// the previous value ended.
    spans: Box<[(u32, u32)]>,
}

impl FlatLabels {
    /// Own labels over the parents' labels, first parent first.
    fn merge<'a>(own: &'a FlatLabels, parents: impl Iterator<Item = &'a LabelMap>) -> Self {
        let mut parents = parents.peekable();
        if parents.peek().is_none() {
            return own.clone();
        }
        let mut refs: BTreeMap<&str, &str> = own.iter().collect();
        for p in parents {
            for (k, v) in p {
                refs.entry(k.as_str()).or_insert(v.as_str());
            }
        }
        Self::from_sorted(refs.len(), refs.iter().map(|(k, v)| (*k, *v)))
    }

    /// From a label map.
    pub fn from_map(map: &LabelMap) -> Self {
        Self::from_sorted(map.len(), map.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// From pairs sorted by name, without duplicates.
    fn from_sorted<'a>(n: usize, pairs: impl Iterator<Item = (&'a str, &'a str)> + Clone) -> Self {
        let mut text = String::with_capacity(pairs.clone().map(|(k, v)| k.len() + v.len()).sum());
        let mut spans = Vec::with_capacity(n);
        for (k, v) in pairs {
            text.push_str(k);
            let name_end = offset(text.len());
            text.push_str(v);
            spans.push((name_end, offset(text.len())));
        }
        FlatLabels {
            text: text.into_boxed_str(),
            spans: spans.into_boxed_slice(),
        }
    }

    /// (name, value) pairs in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let mut start = 0usize;
        self.spans.iter().map(move |&(ke, ve)| {
            let (ke, ve) = (ke as usize, ve as usize);
            let pair = (&self.text[start..ke], &self.text[ke..ve]);
            start = ve;
            pair
        })
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// As an ordinary map.
    pub fn to_map(&self) -> LabelMap {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

/// Text offsets are stored as u32; a label set holding 4 GiB of text cannot be built from
/// API objects, so saturating is only a guard.
fn offset(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Labels for FlatLabels {
    fn get(&self, key: &str) -> Option<&str> {
        let mut start = 0usize;
        for &(ke, ve) in self.spans.iter() {
            let (ke, ve) = (ke as usize, ve as usize);
            if ke - start == key.len() && self.text.get(start..ke) == Some(key) {
                return self.text.get(ke..ve);
            }
            start = ve;
        }
        None
    }
}

/// A set that stays a short vector while small (a label set usually matches a handful of
/// selectors) and becomes a hash set when it grows.
#[derive(Debug, Clone)]
enum SmallSet<T> {
    Few(Vec<T>),
    Many(HashSet<T>),
}

/// Largest `SmallSet` kept as a vector.
const SMALL_SET_MAX: usize = 8;

impl<T> Default for SmallSet<T> {
    fn default() -> Self {
        SmallSet::Few(Vec::new())
    }
}

impl<T: Eq + Hash> SmallSet<T> {
    fn contains(&self, t: &T) -> bool {
        match self {
            SmallSet::Few(v) => v.contains(t),
            SmallSet::Many(h) => h.contains(t),
        }
    }

    fn insert(&mut self, t: T) -> bool {
        match self {
            SmallSet::Few(v) if v.contains(&t) => false,
            SmallSet::Few(v) if v.len() < SMALL_SET_MAX => {
                v.push(t);
                true
            }
            SmallSet::Few(v) => {
                let mut h: HashSet<T> = v.drain(..).collect();
                h.insert(t);
                *self = SmallSet::Many(h);
                true
            }
            SmallSet::Many(h) => h.insert(t),
        }
    }

    fn remove(&mut self, t: &T) -> bool {
        match self {
            SmallSet::Few(v) => match v.iter().position(|x| x == t) {
                Some(i) => {
                    v.swap_remove(i);
                    true
                }
                None => false,
            },
            SmallSet::Many(h) => h.remove(t),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            SmallSet::Few(v) => v.is_empty(),
            SmallSet::Many(h) => h.is_empty(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        let (few, many) = match self {
            SmallSet::Few(v) => (v.as_slice(), None),
            SmallSet::Many(h) => (&[][..], Some(h.iter())),
        };
        few.iter().chain(many.into_iter().flatten())
    }
}

fn small_insert<K: Eq + Hash, V: Eq + Hash>(map: &mut HashMap<K, SmallSet<V>>, k: K, v: V) {
    map.entry(k).or_default().insert(v);
}

fn small_remove<K: Eq + Hash, V: Eq + Hash>(map: &mut HashMap<K, SmallSet<V>>, k: &K, v: &V) {
    if let Some(set) = map.get_mut(k) {
        set.remove(v);
        if set.is_empty() {
            map.remove(k);
        }
    }
}

/// A set of ids that is usually a single id (one label set per unique label value), kept
/// without a hash table in that case.
enum IdSet<L> {
    One(L),
    Many(HashSet<L>),
}

impl<L: Eq + Hash + Clone> IdSet<L> {
    fn insert(&mut self, id: L) -> bool {
        match self {
            IdSet::One(x) if *x == id => false,
            IdSet::One(x) => {
                let set = HashSet::from([x.clone(), id]);
                *self = IdSet::Many(set);
                true
            }
            IdSet::Many(set) => set.insert(id),
        }
    }

    /// Removes `id`; returns (removed, now empty).
    fn remove(&mut self, id: &L) -> (bool, bool) {
        match self {
            IdSet::One(x) => (x == id, x == id),
            IdSet::Many(set) => {
                let removed = set.remove(id);
                (removed, set.is_empty())
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            IdSet::One(_) => 1,
            IdSet::Many(set) => set.len(),
        }
    }

    fn iter(&self) -> Box<dyn Iterator<Item = &L> + '_> {
        match self {
            IdSet::One(x) => Box::new(std::iter::once(x)),
            IdSet::Many(set) => Box::new(set.iter()),
        }
    }
}

struct SelectorEntry {
    selector: Selector,
    strategy: ScanStrategy,
}

struct LabelSetEntry<P> {
    own: FlatLabels,
    parents: Vec<P>,
    effective: FlatLabels,
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
    by_value: HashMap<Box<str>, IdSet<L>>,
}

impl<L> Default for LabelSetsByValue<L> {
    fn default() -> Self {
        Self {
            count: 0,
            by_value: HashMap::new(),
        }
    }
}

/// Label-set count at which selectors are first re-filed by live counts.
const FIRST_REFILE_AT: usize = 64;

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
    sets_by_label: HashMap<Box<str>, LabelSetsByValue<L>>,

    /// The match relation, both ways.
    matches_by_sel: HashMap<S, HashSet<L>>,
    matches_by_set: HashMap<L, SmallSet<S>>,

    /// Re-file selectors when the number of label sets reaches this.
    refile_at: usize,
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
            refile_at: FIRST_REFILE_AT,
        }
    }
}

fn set_insert<K: Eq + Hash, V: Eq + Hash>(map: &mut HashMap<K, HashSet<V>>, k: K, v: V) {
    map.entry(k).or_default().insert(v);
}

fn set_remove<K, V, Q>(map: &mut HashMap<K, HashSet<V>>, k: &Q, v: &V)
where
    K: Eq + Hash + std::borrow::Borrow<Q>,
    V: Eq + Hash,
    Q: Eq + Hash + ?Sized,
{
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
        let strategy = self.plan(selector.root());
        self.file_selector(&id, &strategy);
        let entry = SelectorEntry { selector, strategy };

        // Candidate label sets: those holding the filing label (or one of its values).
        let mut new: HashSet<L> = HashSet::new();
        let mut consider = |l: &L, e: &LabelSetEntry<P>| {
            if !new.contains(l) && entry.selector.evaluate(&e.effective) {
                new.insert(l.clone());
            }
        };
        if entry.strategy == ScanStrategy::FullScan {
            self.label_sets.iter().for_each(|(l, e)| consider(l, e));
        }
        for part in entry.strategy.parts() {
            match part {
                ScanStrategy::Values { label, values } => {
                    if let Some(byv) = self.sets_by_label.get(label.as_str()) {
                        for v in values {
                            for l in byv
                                .by_value
                                .get(v.as_str())
                                .into_iter()
                                .flat_map(IdSet::iter)
                            {
                                consider(l, &self.label_sets[l]);
                            }
                        }
                    }
                }
                ScanStrategy::LabelName { label } => {
                    if let Some(byv) = self.sets_by_label.get(label.as_str()) {
                        for l in byv.by_value.values().flat_map(IdSet::iter) {
                            consider(l, &self.label_sets[l]);
                        }
                    }
                }
                _ => {}
            }
        }
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

    /// Label sets holding `label` (with one of the restricted values, if any).
    fn restriction_cost(&self, label: &str, r: &LabelRestriction) -> usize {
        let Some(byv) = self.sets_by_label.get(label) else {
            return 0;
        };
        match &r.must_have_one_of_values {
            Some(vs) => vs
                .iter()
                .map(|v| byv.by_value.get(v.as_str()).map_or(0, IdSet::len))
                .sum(),
            None => byv.count,
        }
    }

    /// Label sets a selector filed this way is evaluated against when it is added.
    fn strategy_cost(&self, st: &ScanStrategy) -> usize {
        match st {
            ScanStrategy::NoMatch => 0,
            ScanStrategy::FullScan => usize::MAX,
            ScanStrategy::Values { label, values } => {
                self.sets_by_label.get(label.as_str()).map_or(0, |byv| {
                    values
                        .iter()
                        .map(|v| byv.by_value.get(v.as_str()).map_or(0, IdSet::len))
                        .sum()
                })
            }
            ScanStrategy::LabelName { label } => self
                .sets_by_label
                .get(label.as_str())
                .map_or(0, |byv| byv.count),
            ScanStrategy::AnyOf(parts) => parts
                .iter()
                .fold(0usize, |acc, p| acc.saturating_add(self.strategy_cost(p))),
        }
    }

    /// The cheapest sound filing for a subtree. Candidates: the subtree's own label
    /// restrictions; for `&&`, any operand's filing (a match satisfies every operand); for
    /// `||`, the union of the operands' filings (a match satisfies some operand). Ties keep the
    /// restriction-based (upstream) choice.
    fn plan(&self, node: &Node) -> ScanStrategy {
        let mut best = choose(&node.label_restrictions(), |k, r| {
            self.restriction_cost(k, r)
        });
        if best == ScanStrategy::NoMatch {
            return best;
        }
        let mut best_cost = self.strategy_cost(&best);
        let mut offer = |cand: ScanStrategy, this: &Self| {
            let c = this.strategy_cost(&cand);
            if c < best_cost {
                best = cand;
                best_cost = c;
            }
        };
        match node {
            Node::And(ns) => {
                for n in ns {
                    offer(self.plan(n), self);
                }
            }
            Node::Or(ns) => {
                let mut parts = Vec::new();
                let mut all_restricted = true;
                for n in ns {
                    match self.plan(n) {
                        ScanStrategy::NoMatch => {}
                        ScanStrategy::FullScan => {
                            all_restricted = false;
                            break;
                        }
                        ScanStrategy::AnyOf(ps) => parts.extend(ps),
                        p => parts.push(p),
                    }
                }
                if all_restricted {
                    offer(
                        if parts.is_empty() {
                            ScanStrategy::NoMatch
                        } else {
                            ScanStrategy::AnyOf(parts)
                        },
                        self,
                    );
                }
            }
            _ => {}
        }
        best
    }

    /// Re-files every selector by the current label-set counts.
    fn refile_all(&mut self) {
        let mut changes = Vec::new();
        for (id, e) in &self.selectors {
            let best = self.plan(e.selector.root());
            if best != e.strategy {
                changes.push((id.clone(), best));
            }
        }
        for (id, strategy) in changes {
            self.unfile_selector(&id);
            self.file_selector(&id, &strategy);
            if let Some(e) = self.selectors.get_mut(&id) {
                e.strategy = strategy;
            }
        }
    }

    fn file_selector(&mut self, id: &S, strategy: &ScanStrategy) {
        if *strategy == ScanStrategy::FullScan {
            self.sels_full_scan.insert(id.clone());
        }
        for part in strategy.parts() {
            self.file_part(id, part);
        }
    }

    fn file_part(&mut self, id: &S, part: &ScanStrategy) {
        let (label, values) = match part {
            ScanStrategy::LabelName { label } => (label, None),
            ScanStrategy::Values { label, values } => (label, Some(values)),
            _ => return,
        };
        let sub = self.sels_by_label.entry(label.clone()).or_default();
        match values {
            None => {
                sub.wildcard.insert(id.clone());
            }
            Some(values) => {
                for v in values {
                    set_insert(&mut sub.by_value, v.clone(), id.clone());
                }
            }
        }
    }

    fn unfile_selector(&mut self, id: &S) {
        let Some(strategy) = self.selectors.get(id).map(|e| e.strategy.clone()) else {
            return;
        };
        if strategy == ScanStrategy::FullScan {
            self.sels_full_scan.remove(id);
        }
        for part in strategy.parts() {
            let (label, values) = match part {
                ScanStrategy::LabelName { label } => (label, None),
                ScanStrategy::Values { label, values } => (label, Some(values)),
                _ => continue,
            };
            let Some(sub) = self.sels_by_label.get_mut(label) else {
                continue;
            };
            match values {
                None => {
                    sub.wildcard.remove(id);
                }
                Some(values) => {
                    for v in values {
                        set_remove(&mut sub.by_value, v, id);
                    }
                }
            }
            if sub.wildcard.is_empty() && sub.by_value.is_empty() {
                self.sels_by_label.remove(label);
            }
        }
    }

    /// Replaces the match set of one selector, emitting the differences.
    fn set_selector_matches(&mut self, id: &S, new: HashSet<L>) -> Vec<MatchEvent<S, L>> {
        let old = self.matches_by_sel.remove(id).unwrap_or_default();
        let mut events = Vec::new();
        for l in old.difference(&new) {
            small_remove(&mut self.matches_by_set, l, id);
            events.push(MatchEvent::Stopped {
                selector: id.clone(),
                labels: l.clone(),
            });
        }
        for l in new.difference(&old) {
            small_insert(&mut self.matches_by_set, l.clone(), id.clone());
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
        let labels = FlatLabels::from_map(&labels);
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
        let effective =
            FlatLabels::merge(&labels, parents.iter().filter_map(|p| self.parents.get(p)));
        self.set_effective(&id, labels, parents, effective, &mut events);
        if self.label_sets.len() >= self.refile_at {
            self.refile_at = self.label_sets.len().saturating_mul(2);
            self.refile_all();
        }
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
        for (k, v) in entry.effective.iter() {
            self.unindex_pair(id, k, v);
        }
        let mut events = Vec::new();
        let matched = self.matches_by_set.remove(id).unwrap_or_default();
        for s in matched.iter().cloned() {
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
            let parent_maps = entry.parents.iter().filter_map(|p| self.parents.get(p));
            let effective = FlatLabels::merge(&entry.own, parent_maps);
            if effective == entry.effective {
                continue;
            }
            let (own, parents) = (entry.own.clone(), entry.parents.clone());
            self.set_effective(&l, own, parents, effective, &mut events);
        }
        events.sort_unstable();
        events
    }

    /// Stores a label set with new effective labels, re-indexes the pairs that changed and
    /// recomputes its matches from the candidate selectors only.
    fn set_effective(
        &mut self,
        id: &L,
        own: FlatLabels,
        parents: Vec<P>,
        effective: FlatLabels,
        events: &mut Vec<MatchEvent<S, L>>,
    ) {
        let old = self
            .label_sets
            .remove(id)
            .map(|e| e.effective)
            .unwrap_or_default();
        self.reindex(id, &old, &effective);

        let mut new: SmallSet<S> = SmallSet::default();
        let mut consider = |s: &S| {
            if !new.contains(s) && self.selectors[s].selector.evaluate(&effective) {
                new.insert(s.clone());
            }
        };
        // A selector filed under several parts (`AnyOf`) can be reached more than once.
        for (k, v) in effective.iter() {
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
        for s in old.iter().filter(|s| !new.contains(s)) {
            set_remove(&mut self.matches_by_sel, s, id);
            events.push(MatchEvent::Stopped {
                selector: s.clone(),
                labels: id.clone(),
            });
        }
        for s in new.iter().filter(|s| !old.contains(s)) {
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

    /// Updates the label-set-side index for the pairs that differ between `old` and `new`
    /// (both sorted by name).
    fn reindex(&mut self, id: &L, old: &FlatLabels, new: &FlatLabels) {
        let (mut a, mut b) = (old.iter().peekable(), new.iter().peekable());
        loop {
            match (a.peek().copied(), b.peek().copied()) {
                (None, None) => break,
                (Some((k, v)), None) => {
                    self.unindex_pair(id, k, v);
                    a.next();
                }
                (None, Some((k, v))) => {
                    self.index_pair(id, k, v);
                    b.next();
                }
                (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                    Ordering::Less => {
                        self.unindex_pair(id, ka, va);
                        a.next();
                    }
                    Ordering::Greater => {
                        self.index_pair(id, kb, vb);
                        b.next();
                    }
                    Ordering::Equal => {
                        if va != vb {
                            self.unindex_pair(id, ka, va);
                            self.index_pair(id, kb, vb);
                        }
                        a.next();
                        b.next();
                    }
                },
            }
        }
    }

    fn index_pair(&mut self, id: &L, k: &str, v: &str) {
        let byv = match self.sets_by_label.get_mut(k) {
            Some(b) => b,
            None => self.sets_by_label.entry(k.into()).or_default(),
        };
        let added = match byv.by_value.get_mut(v) {
            Some(set) => set.insert(id.clone()),
            None => {
                byv.by_value.insert(v.into(), IdSet::One(id.clone()));
                true
            }
        };
        if added {
            byv.count += 1;
        }
    }

    fn unindex_pair(&mut self, id: &L, k: &str, v: &str) {
        let Some(byv) = self.sets_by_label.get_mut(k) else {
            return;
        };
        if let Some(set) = byv.by_value.get_mut(v) {
            let (removed, empty) = set.remove(id);
            if removed {
                byv.count -= 1;
            }
            if empty {
                byv.by_value.remove(v);
            }
        }
        if byv.count == 0 {
            self.sets_by_label.remove(k);
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
        self.matches_by_set
            .get(l)
            .into_iter()
            .flat_map(SmallSet::iter)
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

    /// How a stored selector is currently filed.
    pub fn scan_strategy(&self, s: &S) -> Option<&ScanStrategy> {
        self.selectors.get(s).map(|e| &e.strategy)
    }

    /// A label set's own labels and parents, as last given.
    pub fn own_labels(&self, l: &L) -> Option<(&FlatLabels, &[P])> {
        self.label_sets
            .get(l)
            .map(|e| (&e.own, e.parents.as_slice()))
    }

    /// A label set's effective labels (own over inherited).
    pub fn effective_labels(&self, l: &L) -> Option<&FlatLabels> {
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
        assert_eq!(
            idx.effective_labels(&"e1").unwrap().get("pcns.name"),
            Some("other")
        );
        assert_eq!(
            idx.update_labels("e1", lm(&[("app", "dns")]), vec!["p2"]),
            vec![stopped("role", "e1")]
        );
    }
}
