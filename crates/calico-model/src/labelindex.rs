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
//! To keep updates cheap, both sides are indexed, per label name that some selector mentions:
//! - selectors by a label restriction (§2.7): a selector needing `app in {"a","b"}` is filed
//!   under `app = a` and `app = b`, one needing `has(app)` under the `app` wildcard, an `||`
//!   whose every branch is restricted under each branch's label (`AnyOf`); selectors without a
//!   usable restriction go to a "full scan" list and impossible selectors are not filed at all.
//!   A label-set update evaluates only the selectors filed under its own (label, value) pairs
//!   plus the full-scan list.
//! - label sets by their effective (label, value) pairs: a selector update evaluates only the
//!   label sets holding its filing label (or values). Label names no selector mentions (pod
//!   template hashes, ...) are not indexed; a name's index is built when the first selector
//!   mentioning it arrives and dropped with the last one.
//!
//! Which restricted label a selector is filed under is chosen by how many label sets it would
//! touch (counted in the live index), falling back to upstream's preference (contradiction,
//! then short value lists, then presence) when counts tie, e.g. while the index is empty.
//! Selectors are re-filed each time the number of label sets doubles, so a filing chosen before
//! any label set existed does not stay poor.
//!
//! Internally, selectors and label sets live in slabs addressed by dense slot numbers; caller
//! ids are hashed once per call and every internal set holds slots. Label names and the values
//! selectors compare against are interned: selectors are compiled to ops over those ids and
//! each label set keeps its indexed labels as inline (name id, value id) pairs, so evaluation
//! compares integers (only `contains` / `starts with` / `ends with` read the label text). A
//! label-set update skips selectors that mention none of the labels whose value changed.
//!
//! ```
//! use std::collections::BTreeMap;
//! use calico_model::labelindex::{LabelIndex, MatchEvent};
//! use calico_model::selector::parse;
//!
//! let mut idx: LabelIndex<&str, &str> = LabelIndex::new();
//! idx.update_selector("web", parse("app == 'web'").unwrap());
//! let ev = idx.update_labels("pod1", &BTreeMap::from([("app".into(), "web".into())]), vec![]);
//! assert_eq!(ev, vec![MatchEvent::Started { selector: "web", labels: "pod1" }]);
//! assert!(idx.is_match(&"web", &"pod1"));
//! ```

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hash, Hasher};

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

/// Effective labels stored flat, sorted by name, in one text buffer; the offsets of up to
/// `INLINE_SPANS` labels are kept inline, so evaluating a selector against a cold label set
/// touches the entry and one allocation. Lookups compare lengths before bytes, which matters
/// because label names share long prefixes (`projectcalico.org/...`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlatLabels {
    text: Box<str>,
    /// Per label: end offset of the name and of the value in `text`; each name starts where
    /// the previous value ended.
    spans: Spans,
}

/// Labels whose offsets are stored inline.
const INLINE_SPANS: usize = 14;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Spans {
    /// Unused entries stay `(0, 0)`, so derived equality compares contents.
    Inline {
        n: u8,
        s: [(u16, u16); INLINE_SPANS],
    },
    Heap(Box<[(u32, u32)]>),
}

impl Default for Spans {
    fn default() -> Self {
        Spans::Inline {
            n: 0,
            s: [(0, 0); INLINE_SPANS],
        }
    }
}

impl Spans {
    fn from_vec(spans: Vec<(u32, u32)>, text_len: usize) -> Self {
        if spans.len() <= INLINE_SPANS && u16::try_from(text_len).is_ok() {
            let mut s = [(0u16, 0u16); INLINE_SPANS];
            for (dst, &(k, v)) in s.iter_mut().zip(&spans) {
                *dst = (
                    u16::try_from(k).unwrap_or(u16::MAX),
                    u16::try_from(v).unwrap_or(u16::MAX),
                );
            }
            Spans::Inline {
                n: u8::try_from(spans.len()).unwrap_or(u8::MAX),
                s,
            }
        } else {
            Spans::Heap(spans.into_boxed_slice())
        }
    }

    fn len(&self) -> usize {
        match self {
            Spans::Inline { n, .. } => usize::from(*n),
            Spans::Heap(h) => h.len(),
        }
    }

    /// (name end, value end) of label `i`.
    fn at(&self, i: usize) -> (usize, usize) {
        match self {
            Spans::Inline { s, .. } => s
                .get(i)
                .map_or((0, 0), |&(k, v)| (usize::from(k), usize::from(v))),
            Spans::Heap(h) => h.get(i).map_or((0, 0), |&(k, v)| (k as usize, v as usize)),
        }
    }
}

/// Finds `key` in a text buffer given (name end, value end) offsets.
fn find_label<'a>(
    text: &'a str,
    spans: impl Iterator<Item = (usize, usize)>,
    key: &str,
) -> Option<&'a str> {
    let mut start = 0usize;
    for (ke, ve) in spans {
        if ke - start == key.len() && text.get(start..ke) == Some(key) {
            return text.get(ke..ve);
        }
        start = ve;
    }
    None
}

impl FlatLabels {
    /// Own labels over the parents' labels, first parent first.
    fn merge<'a>(own: &'a FlatLabels, parents: impl Iterator<Item = &'a LabelMap>) -> Self {
        let mut parents = parents.peekable();
        if parents.peek().is_none() {
            return own.clone();
        }
        // Both sides are sorted by name: merge them pairwise, earlier sources winning.
        let mut acc: Vec<(&str, &str)> = own.iter().collect();
        let mut next: Vec<(&str, &str)> = Vec::new();
        for p in parents {
            next.clear();
            next.reserve(acc.len() + p.len());
            let mut ours = acc.iter().copied().peekable();
            let mut theirs = p.iter().map(|(k, v)| (k.as_str(), v.as_str())).peekable();
            loop {
                let pair = match (ours.peek(), theirs.peek()) {
                    (None, None) => break,
                    (Some(_), None) => ours.next(),
                    (None, Some(_)) => theirs.next(),
                    (Some(a), Some(b)) => match a.0.cmp(b.0) {
                        Ordering::Less => ours.next(),
                        Ordering::Greater => theirs.next(),
                        Ordering::Equal => {
                            theirs.next();
                            ours.next()
                        }
                    },
                };
                next.extend(pair);
            }
            std::mem::swap(&mut acc, &mut next);
        }
        Self::from_sorted(acc.len(), acc.iter().copied())
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
        let spans = Spans::from_vec(spans, text.len());
        FlatLabels {
            text: text.into_boxed_str(),
            spans,
        }
    }

    /// (name, value) pairs in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let mut start = 0usize;
        (0..self.spans.len()).map(move |i| {
            let (ke, ve) = self.spans.at(i);
            let pair = (
                self.text.get(start..ke).unwrap_or(""),
                self.text.get(ke..ve).unwrap_or(""),
            );
            start = ve;
            pair
        })
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.len() == 0
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
        match &self.spans {
            Spans::Inline { n, s } => find_label(
                &self.text,
                s.iter()
                    .take(usize::from(*n))
                    .map(|&(k, v)| (usize::from(k), usize::from(v))),
                key,
            ),
            Spans::Heap(h) => find_label(
                &self.text,
                h.iter().map(|&(k, v)| (k as usize, v as usize)),
                key,
            ),
        }
    }
}

/// Internal dense number of a selector or label set. Ids given by callers are mapped to slots
/// once per call; every internal set holds slots.
type Slot = u32;

/// Hasher for slots. Slots are small integers handed out by the index itself (never chosen by
/// whoever writes labels or names objects), so a multiplicative hash is safe and much cheaper
/// than SipHash.
#[derive(Default, Clone, Copy)]
struct SlotHasher(u64);

impl Hasher for SlotHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(26) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type SlotSet = HashSet<Slot, BuildHasherDefault<SlotHasher>>;

/// A set of slots that stays a short inline array while small (a label set usually matches a
/// handful of selectors, and an inline array costs no allocation per label set) and becomes a
/// hash set when it grows.
#[derive(Debug, Clone)]
enum SmallSet {
    Few { n: u8, s: [Slot; SMALL_SET_MAX] },
    Many(SlotSet),
}

/// Largest `SmallSet` kept inline.
const SMALL_SET_MAX: usize = 8;

impl Default for SmallSet {
    fn default() -> Self {
        SmallSet::Few {
            n: 0,
            s: [0; SMALL_SET_MAX],
        }
    }
}

impl SmallSet {
    fn one(t: Slot) -> Self {
        let mut s = [0; SMALL_SET_MAX];
        s[0] = t;
        SmallSet::Few { n: 1, s }
    }

    fn few(&self) -> &[Slot] {
        match self {
            SmallSet::Few { n, s } => s.get(..usize::from(*n)).unwrap_or(&[]),
            SmallSet::Many(_) => &[],
        }
    }

    fn contains(&self, t: Slot) -> bool {
        match self {
            SmallSet::Few { .. } => self.few().contains(&t),
            SmallSet::Many(h) => h.contains(&t),
        }
    }

    fn insert(&mut self, t: Slot) -> bool {
        if self.contains(t) {
            return false;
        }
        match self {
            SmallSet::Few { n, s } => {
                let len = usize::from(*n);
                if let Some(dst) = s.get_mut(len) {
                    *dst = t;
                    *n += 1;
                } else {
                    let mut h =
                        SlotSet::with_capacity_and_hasher(4 * SMALL_SET_MAX, Default::default());
                    h.extend(s.iter().copied());
                    h.insert(t);
                    *self = SmallSet::Many(h);
                }
                true
            }
            SmallSet::Many(h) => h.insert(t),
        }
    }

    fn remove(&mut self, t: Slot) -> bool {
        match self {
            SmallSet::Few { n, s } => {
                let len = usize::from(*n);
                match s.iter().take(len).position(|x| *x == t) {
                    Some(i) => {
                        s.swap(i, len - 1);
                        *n -= 1;
                        true
                    }
                    None => false,
                }
            }
            SmallSet::Many(h) => h.remove(&t),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn len(&self) -> usize {
        match self {
            SmallSet::Few { n, .. } => usize::from(*n),
            SmallSet::Many(h) => h.len(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = Slot> + '_ {
        let many = match self {
            SmallSet::Few { .. } => None,
            SmallSet::Many(h) => Some(h.iter()),
        };
        self.few().iter().chain(many.into_iter().flatten()).copied()
    }
}

/// Id of an interned string (a label name or a value some selector compares against).
type Sym = u32;

/// Value id of a label whose value no selector compares against.
const NO_SYM: Sym = Sym::MAX;

/// Interns the label names and compared values that selectors mention, so evaluation inside
/// the index compares integers instead of strings. Ids are never reused (the table only holds
/// strings some selector has mentioned, so it grows with selector churn, not label churn),
/// which keeps stale ids in a label set's `SymLabels` harmless.
#[derive(Default)]
struct Interner {
    ids: HashMap<Box<str>, Sym>,
}

impl Interner {
    fn get(&self, s: &str) -> Sym {
        self.ids.get(s).copied().unwrap_or(NO_SYM)
    }

    /// The id of `s` and whether it was new.
    fn intern(&mut self, s: &str) -> (Sym, bool) {
        if let Some(&id) = self.ids.get(s) {
            return (id, false);
        }
        let id = Sym::try_from(self.ids.len()).unwrap_or(NO_SYM - 1);
        self.ids.insert(s.into(), id);
        (id, true)
    }
}

/// Labels kept inline per label set in `SymLabels`.
const INLINE_SYMS: usize = 8;

/// A label set's labels under names some selector mentions, as (name id, value id) pairs
/// (value `NO_SYM` when no selector compares against it), inline while small.
#[derive(Debug, Clone)]
enum SymLabels {
    Inline { n: u8, p: [(Sym, Sym); INLINE_SYMS] },
    Heap(Vec<(Sym, Sym)>),
}

impl Default for SymLabels {
    fn default() -> Self {
        SymLabels::Inline {
            n: 0,
            p: [(NO_SYM, NO_SYM); INLINE_SYMS],
        }
    }
}

impl SymLabels {
    fn pairs(&self) -> &[(Sym, Sym)] {
        match self {
            SymLabels::Inline { n, p } => p.get(..usize::from(*n)).unwrap_or(&[]),
            SymLabels::Heap(v) => v,
        }
    }

    /// Value id of name `k`, if present.
    fn get(&self, k: Sym) -> Option<Sym> {
        self.pairs().iter().find(|(n, _)| *n == k).map(|&(_, v)| v)
    }

    /// Sets name `k` to value `v` (adds the name if missing).
    fn set(&mut self, k: Sym, v: Sym) {
        if let SymLabels::Heap(vec) = self {
            match vec.iter_mut().find(|(n, _)| *n == k) {
                Some(pair) => pair.1 = v,
                None => vec.push((k, v)),
            }
            return;
        }
        if let SymLabels::Inline { n, p } = self {
            let len = usize::from(*n);
            if let Some(pair) = p.iter_mut().take(len).find(|(name, _)| *name == k) {
                pair.1 = v;
                return;
            }
            if let Some(dst) = p.get_mut(len) {
                *dst = (k, v);
                *n += 1;
                return;
            }
            let mut vec = p.to_vec();
            vec.push((k, v));
            *self = SymLabels::Heap(vec);
        }
    }
}

/// A selector flattened for evaluation inside the index: the tree in prefix order with
/// subtree sizes; names and compared values as interned ids, the operands of the string
/// operators (`contains`, `starts with`, `ends with`) in one buffer. Evaluating a cold selector
/// then touches a few contiguous allocations and compares integers.
struct Compiled {
    ops: Box<[Op]>,
    text: Box<str>,
    /// Members of `in` / `not in` sets larger than `FEW`, each set sorted by id.
    members: Box<[Sym]>,
}

/// Largest `in` / `not in` set kept inside its op.
const FEW: usize = 3;

/// A string in `Compiled::text`.
#[derive(Clone, Copy)]
struct Str {
    start: u32,
    len: u32,
}

#[derive(Clone, Copy)]
enum Op {
    True,
    Has(Sym),
    Eq(Sym, Sym),
    Ne(Sym, Sym),
    Contains(Str, Str),
    StartsWith(Str, Str),
    EndsWith(Str, Str),
    /// Label, first member index, member count.
    In(Sym, u32, u32),
    NotIn(Sym, u32, u32),
    /// Sets of up to `FEW` members kept in the op (padded with `NO_SYM`), which saves a
    /// memory access per evaluation.
    InFew(Sym, [Sym; FEW]),
    NotInFew(Sym, [Sym; FEW]),
    /// Negates the following subtree.
    Not,
    /// Operand count and the number of ops in the whole subtree (this one included).
    And(u32, u32),
    Or(u32, u32),
}

impl Compiled {
    /// Compiles `root`, interning its names and values; strings interned for the first time
    /// are appended to `new_syms`.
    fn new(root: &Node, interner: &mut Interner, new_syms: &mut Vec<(Sym, String)>) -> Self {
        let mut c = CompiledBuilder {
            ops: Vec::new(),
            text: String::new(),
            members: Vec::new(),
            interner,
            new_syms,
        };
        c.push(root);
        Compiled {
            ops: c.ops.into_boxed_slice(),
            text: c.text.into_boxed_str(),
            members: c.members.into_boxed_slice(),
        }
    }

    fn s(&self, r: Str) -> &str {
        let start = r.start as usize;
        self.text.get(start..start + r.len as usize).unwrap_or("")
    }

    fn evaluate(&self, syms: &SymLabels, labels: &FlatLabels) -> bool {
        self.eval_at(0, syms, labels).0
    }

    /// Evaluates the subtree at `pos`; returns the result and the position after it.
    fn eval_at(&self, pos: usize, syms: &SymLabels, labels: &FlatLabels) -> (bool, usize) {
        let Some(op) = self.ops.get(pos) else {
            return (true, pos + 1);
        };
        let next = pos + 1;
        let get = |k: Str| labels.get(self.s(k));
        let value = match *op {
            Op::True => true,
            Op::Has(k) => syms.get(k).is_some(),
            Op::Eq(k, v) => syms.get(k) == Some(v),
            Op::Ne(k, v) => syms.get(k) != Some(v),
            Op::Contains(k, v) => get(k).is_some_and(|l| l.contains(self.s(v))),
            Op::StartsWith(k, v) => get(k).is_some_and(|l| l.starts_with(self.s(v))),
            Op::EndsWith(k, v) => get(k).is_some_and(|l| l.ends_with(self.s(v))),
            Op::In(k, first, n) => syms.get(k).is_some_and(|l| self.member(first, n, l)),
            Op::NotIn(k, first, n) => !syms.get(k).is_some_and(|l| self.member(first, n, l)),
            Op::InFew(k, set) => syms.get(k).is_some_and(|l| l != NO_SYM && set.contains(&l)),
            Op::NotInFew(k, set) => !syms.get(k).is_some_and(|l| l != NO_SYM && set.contains(&l)),
            Op::Not => {
                let (v, after) = self.eval_at(next, syms, labels);
                return (!v, after);
            }
            Op::And(n, size) | Op::Or(n, size) => {
                let is_and = matches!(op, Op::And(..));
                let end = pos + size as usize;
                let mut at = next;
                for _ in 0..n {
                    let (v, after) = self.eval_at(at, syms, labels);
                    if v != is_and {
                        // Short circuit: skip the remaining operands.
                        return (v, end);
                    }
                    at = after;
                }
                return (is_and, end);
            }
        };
        (value, next)
    }

    fn member(&self, first: u32, n: u32, value: Sym) -> bool {
        let start = first as usize;
        value != NO_SYM
            && self
                .members
                .get(start..start + n as usize)
                .is_some_and(|set| set.binary_search(&value).is_ok())
    }
}

struct CompiledBuilder<'a> {
    ops: Vec<Op>,
    text: String,
    members: Vec<Sym>,
    interner: &'a mut Interner,
    new_syms: &'a mut Vec<(Sym, String)>,
}

impl CompiledBuilder<'_> {
    fn str(&mut self, s: &str) -> Str {
        let start = offset(self.text.len());
        self.text.push_str(s);
        Str {
            start,
            len: offset(s.len()),
        }
    }

    fn sym(&mut self, s: &str) -> Sym {
        let (id, new) = self.interner.intern(s);
        if new {
            self.new_syms.push((id, s.to_string()));
        }
        id
    }

    /// Interns a set's members: inline when there are at most `FEW`, else in `members`.
    fn set(&mut self, values: &[String]) -> Result<[Sym; FEW], (u32, u32)> {
        let mut ids: Vec<Sym> = values.iter().map(|v| self.sym(v)).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() <= FEW {
            let mut few = [NO_SYM; FEW];
            for (dst, id) in few.iter_mut().zip(ids) {
                *dst = id;
            }
            return Ok(few);
        }
        let first = offset(self.members.len());
        let n = offset(ids.len());
        self.members.extend(ids);
        Err((first, n))
    }

    fn push(&mut self, node: &Node) {
        let op = match node {
            Node::All | Node::Global => Op::True,
            Node::Has(k) => Op::Has(self.sym(k)),
            Node::Eq(k, v) => Op::Eq(self.sym(k), self.sym(v)),
            Node::Ne(k, v) => Op::Ne(self.sym(k), self.sym(v)),
            Node::Contains(k, v) => Op::Contains(self.str(k), self.str(v)),
            Node::StartsWith(k, v) => Op::StartsWith(self.str(k), self.str(v)),
            Node::EndsWith(k, v) => Op::EndsWith(self.str(k), self.str(v)),
            Node::In(k, set) => {
                let k = self.sym(k);
                match self.set(set) {
                    Ok(few) => Op::InFew(k, few),
                    Err((first, n)) => Op::In(k, first, n),
                }
            }
            Node::NotIn(k, set) => {
                let k = self.sym(k);
                match self.set(set) {
                    Ok(few) => Op::NotInFew(k, few),
                    Err((first, n)) => Op::NotIn(k, first, n),
                }
            }
            Node::Not(inner) => {
                self.ops.push(Op::Not);
                self.push(inner);
                return;
            }
            Node::And(ns) | Node::Or(ns) => {
                let at = self.ops.len();
                self.ops.push(Op::True);
                for n in ns {
                    self.push(n);
                }
                let size = offset(self.ops.len() - at);
                let n = offset(ns.len());
                if let Some(slot) = self.ops.get_mut(at) {
                    *slot = if matches!(node, Node::And(_)) {
                        Op::And(n, size)
                    } else {
                        Op::Or(n, size)
                    };
                }
                return;
            }
        };
        self.ops.push(op);
    }
}

struct SelectorEntry<S> {
    id: S,
    selector: Selector,
    compiled: Compiled,
    strategy: ScanStrategy,
    /// Slots of the label sets this selector matches.
    matches: SlotSet,
}

struct LabelSetEntry<L, P> {
    id: L,
    own: FlatLabels,
    parents: Vec<P>,
    effective: FlatLabels,
    /// The effective labels under names some selector mentions, interned.
    syms: SymLabels,
    /// Slots of the selectors matching this label set.
    matches: SmallSet,
}

/// Selectors filed under one label name.
#[derive(Default)]
struct SelectorsByValue {
    by_value: HashMap<String, SlotSet>,
    wildcard: SlotSet,
}

/// Label sets holding one label name, by value.
#[derive(Default)]
struct LabelSetsByValue {
    count: usize,
    by_value: HashMap<Box<str>, SmallSet>,
}

impl LabelSetsByValue {
    fn insert(&mut self, slot: Slot, v: &str) {
        let added = match self.by_value.get_mut(v) {
            Some(set) => set.insert(slot),
            None => {
                self.by_value.insert(v.into(), SmallSet::one(slot));
                true
            }
        };
        if added {
            self.count += 1;
        }
    }

    fn remove(&mut self, slot: Slot, v: &str) {
        if let Some(set) = self.by_value.get_mut(v) {
            if set.remove(slot) {
                self.count -= 1;
            }
            if set.is_empty() {
                self.by_value.remove(v);
            }
        }
    }
}

/// The distinct label names a selector mentions.
fn label_names(root: &Node) -> BTreeSet<&str> {
    let mut names = BTreeSet::new();
    root.walk(&mut |n| {
        if let Some(k) = n.label() {
            names.insert(k);
        }
    });
    names
}

/// Everything indexed under one label name. Only names that some selector mentions are
/// indexed (`refs` counts those selectors), so labels no selector looks at (pod template
/// hashes, ...) cost a single lookup per label-set update.
#[derive(Default)]
struct LabelEntry {
    refs: usize,
    /// The interned label name.
    name_id: Sym,
    sels: SelectorsByValue,
    sets: LabelSetsByValue,
}

/// Label-set count at which selectors are first re-filed by live counts.
const FIRST_REFILE_AT: usize = 64;

/// The incremental selector ↔ label-set index. See the module documentation.
pub struct LabelIndex<S, L, P = String> {
    selectors: Vec<Option<SelectorEntry<S>>>,
    sel_slots: HashMap<S, Slot>,
    free_sel_slots: Vec<Slot>,

    label_sets: Vec<Option<LabelSetEntry<L, P>>>,
    set_slots: HashMap<L, Slot>,
    free_set_slots: Vec<Slot>,

    parents: HashMap<P, LabelMap>,
    /// Parent → label sets that list it.
    children: HashMap<P, SlotSet>,

    /// Per label name mentioned by a selector: the selectors filed under it and the label sets
    /// holding it (by value).
    labels: HashMap<Box<str>, LabelEntry>,
    sels_full_scan: SlotSet,
    /// Per selector slot: `name_bit` of every label name it mentions (a dense array, so
    /// checking whether a changed label can affect a selector touches no selector entry).
    sel_masks: Vec<u64>,
    interner: Interner,

    /// Re-file selectors when the number of label sets reaches this.
    refile_at: usize,
}

impl<S, L, P> Default for LabelIndex<S, L, P> {
    fn default() -> Self {
        Self {
            selectors: Vec::new(),
            sel_slots: HashMap::new(),
            free_sel_slots: Vec::new(),
            label_sets: Vec::new(),
            set_slots: HashMap::new(),
            free_set_slots: Vec::new(),
            parents: HashMap::new(),
            children: HashMap::new(),
            labels: HashMap::new(),
            sels_full_scan: SlotSet::default(),
            sel_masks: Vec::new(),
            interner: Interner::default(),
            refile_at: FIRST_REFILE_AT,
        }
    }
}

/// Events of one selector, sorted: stopped before started, each by label-set id.
fn events_for_selector<S: Clone, L: Ord>(
    selector: &S,
    mut stopped: Vec<L>,
    mut started: Vec<L>,
) -> Vec<MatchEvent<S, L>> {
    stopped.sort_unstable();
    started.sort_unstable();
    let mut events = Vec::with_capacity(stopped.len() + started.len());
    events.extend(stopped.into_iter().map(|labels| MatchEvent::Stopped {
        selector: selector.clone(),
        labels,
    }));
    events.extend(started.into_iter().map(|labels| MatchEvent::Started {
        selector: selector.clone(),
        labels,
    }));
    events
}

/// Takes a free slot or appends one.
fn alloc_slot<T>(slab: &mut Vec<Option<T>>, free: &mut Vec<Slot>) -> Slot {
    if let Some(s) = free.pop() {
        return s;
    }
    slab.push(None);
    Slot::try_from(slab.len() - 1).unwrap_or(Slot::MAX)
}

/// A label name's bit in a selector's mask of mentioned names (a 64-bit Bloom filter: a
/// collision only costs an evaluation).
fn name_bit(name_id: Sym) -> u64 {
    1u64 << (name_id % 64)
}

fn slot_index(s: Slot) -> usize {
    s as usize
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

    fn sel(&self, s: Slot) -> Option<&SelectorEntry<S>> {
        self.selectors.get(slot_index(s)).and_then(Option::as_ref)
    }

    fn sel_mut(&mut self, s: Slot) -> Option<&mut SelectorEntry<S>> {
        self.selectors
            .get_mut(slot_index(s))
            .and_then(Option::as_mut)
    }

    fn set(&self, l: Slot) -> Option<&LabelSetEntry<L, P>> {
        self.label_sets.get(slot_index(l)).and_then(Option::as_ref)
    }

    fn set_mut(&mut self, l: Slot) -> Option<&mut LabelSetEntry<L, P>> {
        self.label_sets
            .get_mut(slot_index(l))
            .and_then(Option::as_mut)
    }

    // ----- selectors -----

    /// Adds or replaces a selector; returns the match changes, sorted.
    pub fn update_selector(&mut self, id: S, selector: Selector) -> Vec<MatchEvent<S, L>> {
        let (slot, old) = match self.sel_slots.get(&id).copied() {
            Some(slot) => {
                if self.sel(slot).is_some_and(|e| e.selector == selector) {
                    return Vec::new();
                }
                self.unfile_selector(slot);
                (slot, self.selectors[slot_index(slot)].take())
            }
            None => {
                let slot = alloc_slot(&mut self.selectors, &mut self.free_sel_slots);
                self.sel_slots.insert(id.clone(), slot);
                (slot, None)
            }
        };
        // Reference the new selector's label names before releasing the old one's, so shared
        // names keep their index.
        let mut new_syms = Vec::new();
        self.retain_labels(selector.root(), &mut new_syms);
        let old_matches = match old {
            Some(e) => {
                self.release_labels(e.selector.root());
                e.matches
            }
            None => SlotSet::default(),
        };
        let strategy = self.plan(selector.root());
        let compiled = Compiled::new(selector.root(), &mut self.interner, &mut new_syms);
        self.patch_syms(&new_syms);
        self.file_selector(slot, &strategy);
        let mask = label_names(selector.root())
            .into_iter()
            .filter_map(|n| self.labels.get(n))
            .fold(0u64, |m, le| m | name_bit(le.name_id));
        if self.sel_masks.len() <= slot_index(slot) {
            self.sel_masks.resize(slot_index(slot) + 1, u64::MAX);
        }
        if let Some(m) = self.sel_masks.get_mut(slot_index(slot)) {
            *m = mask;
        }

        // Candidate label sets: those holding a filing label (or one of its values). Buckets
        // of one label are disjoint, so only several parts (`AnyOf`) can repeat a candidate.
        let mut matched: Vec<Slot> = Vec::new();
        {
            let sets = &self.label_sets;
            let consider = |l: Slot, matched: &mut Vec<Slot>| {
                if let Some(Some(e)) = sets.get(slot_index(l))
                    && compiled.evaluate(&e.syms, &e.effective)
                {
                    matched.push(l);
                }
            };
            if strategy == ScanStrategy::FullScan {
                for (i, e) in sets.iter().enumerate() {
                    if let Some(e) = e
                        && compiled.evaluate(&e.syms, &e.effective)
                    {
                        matched.push(Slot::try_from(i).unwrap_or(Slot::MAX));
                    }
                }
            }
            for part in strategy.parts() {
                match part {
                    ScanStrategy::Values { label, values } => {
                        if let Some(byv) = self.labels.get(label.as_str()).map(|e| &e.sets) {
                            for v in values {
                                if let Some(ls) = byv.by_value.get(v.as_str()) {
                                    ls.iter().for_each(|l| consider(l, &mut matched));
                                }
                            }
                        }
                    }
                    ScanStrategy::LabelName { label } => {
                        if let Some(byv) = self.labels.get(label.as_str()).map(|e| &e.sets) {
                            for ls in byv.by_value.values() {
                                ls.iter().for_each(|l| consider(l, &mut matched));
                            }
                        }
                    }
                    _ => {}
                }
            }
            if strategy.parts().len() > 1 {
                matched.sort_unstable();
                matched.dedup();
            }
        }
        // Headroom: growing a set of thousands of matches rehashes all of them, a latency
        // spike for whichever label-set update happens to cross the capacity.
        let mut new = SlotSet::with_capacity_and_hasher(
            matched.len().saturating_mul(2).max(16),
            BuildHasherDefault::default(),
        );
        new.extend(matched.iter().copied());

        // One selector: sorting each list by label-set id sorts the events.
        let mut stopped = Vec::new();
        for &l in old_matches.iter().filter(|l| !new.contains(l)) {
            if let Some(e) = self.set_mut(l) {
                e.matches.remove(slot);
                stopped.push(e.id.clone());
            }
        }
        let mut started = Vec::with_capacity(matched.len());
        for &l in matched.iter().filter(|l| !old_matches.contains(l)) {
            if let Some(e) = self.set_mut(l) {
                e.matches.insert(slot);
                started.push(e.id.clone());
            }
        }
        let events = events_for_selector(&id, stopped, started);
        self.selectors[slot_index(slot)] = Some(SelectorEntry {
            id,
            selector,
            compiled,
            strategy,
            matches: new,
        });
        events
    }

    /// Removes a selector; returns the match-stopped events, sorted.
    pub fn remove_selector(&mut self, id: &S) -> Vec<MatchEvent<S, L>> {
        let Some(slot) = self.sel_slots.remove(id) else {
            return Vec::new();
        };
        self.unfile_selector(slot);
        let mut events = Vec::new();
        if let Some(entry) = self.selectors[slot_index(slot)].take() {
            self.release_labels(entry.selector.root());
            let mut stopped = Vec::new();
            for &l in &entry.matches {
                if let Some(e) = self.set_mut(l) {
                    e.matches.remove(slot);
                    stopped.push(e.id.clone());
                }
            }
            events = events_for_selector(&entry.id, stopped, Vec::new());
        }
        self.free_sel_slots.push(slot);
        events
    }

    /// Label sets holding `label` (with one of the restricted values, if any).
    fn restriction_cost(&self, label: &str, r: &LabelRestriction) -> usize {
        let Some(byv) = self.labels.get(label).map(|e| &e.sets) else {
            return 0;
        };
        match &r.must_have_one_of_values {
            Some(vs) => vs
                .iter()
                .map(|v| byv.by_value.get(v.as_str()).map_or(0, SmallSet::len))
                .sum(),
            None => byv.count,
        }
    }

    /// Label sets a selector filed this way is evaluated against when it is added.
    fn strategy_cost(&self, st: &ScanStrategy) -> usize {
        match st {
            ScanStrategy::NoMatch => 0,
            ScanStrategy::FullScan => usize::MAX,
            ScanStrategy::Values { label, values } => self
                .labels
                .get(label.as_str())
                .map(|e| &e.sets)
                .map_or(0, |byv| {
                    values
                        .iter()
                        .map(|v| byv.by_value.get(v.as_str()).map_or(0, SmallSet::len))
                        .sum()
                }),
            ScanStrategy::LabelName { label } => {
                self.labels.get(label.as_str()).map_or(0, |e| e.sets.count)
            }
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
        for (i, e) in self.selectors.iter().enumerate() {
            if let Some(e) = e {
                let best = self.plan(e.selector.root());
                if best != e.strategy {
                    changes.push((Slot::try_from(i).unwrap_or(Slot::MAX), best));
                }
            }
        }
        for (slot, strategy) in changes {
            self.unfile_selector(slot);
            self.file_selector(slot, &strategy);
            if let Some(e) = self.sel_mut(slot) {
                e.strategy = strategy;
            }
        }
    }

    fn file_selector(&mut self, slot: Slot, strategy: &ScanStrategy) {
        if *strategy == ScanStrategy::FullScan {
            self.sels_full_scan.insert(slot);
        }
        for part in strategy.parts() {
            let (label, values) = match part {
                ScanStrategy::LabelName { label } => (label, None),
                ScanStrategy::Values { label, values } => (label, Some(values)),
                _ => continue,
            };
            // The selector references its own labels, so the entry exists.
            let Some(sub) = self.labels.get_mut(label.as_str()).map(|e| &mut e.sels) else {
                continue;
            };
            match values {
                None => {
                    sub.wildcard.insert(slot);
                }
                Some(values) => {
                    for v in values {
                        sub.by_value.entry(v.clone()).or_default().insert(slot);
                    }
                }
            }
        }
    }

    fn unfile_selector(&mut self, slot: Slot) {
        let Some(strategy) = self.sel(slot).map(|e| e.strategy.clone()) else {
            return;
        };
        if strategy == ScanStrategy::FullScan {
            self.sels_full_scan.remove(&slot);
        }
        for part in strategy.parts() {
            let (label, values) = match part {
                ScanStrategy::LabelName { label } => (label, None),
                ScanStrategy::Values { label, values } => (label, Some(values)),
                _ => continue,
            };
            let Some(sub) = self.labels.get_mut(label.as_str()).map(|e| &mut e.sels) else {
                continue;
            };
            match values {
                None => {
                    sub.wildcard.remove(&slot);
                }
                Some(values) => {
                    for v in values {
                        if let Some(set) = sub.by_value.get_mut(v) {
                            set.remove(&slot);
                            if set.is_empty() {
                                sub.by_value.remove(v);
                            }
                        }
                    }
                }
            }
        }
    }

    // ----- label sets -----

    /// Adds or replaces a label set with its own labels and its parents (in priority order);
    /// returns the match changes, sorted.
    pub fn update_labels(
        &mut self,
        id: L,
        labels: &LabelMap,
        parents: Vec<P>,
    ) -> Vec<MatchEvent<S, L>> {
        let own = FlatLabels::from_map(labels);
        let fresh = !self.set_slots.contains_key(&id);
        let slot = match self.set_slots.get(&id).copied() {
            Some(slot) => {
                let Some(old) = self.set(slot) else {
                    return Vec::new();
                };
                if old.own == own && old.parents == parents {
                    return Vec::new();
                }
                let old_parents = old.parents.clone();
                for p in &old_parents {
                    self.unlink_child(p, slot);
                }
                slot
            }
            None => {
                let slot = alloc_slot(&mut self.label_sets, &mut self.free_set_slots);
                self.set_slots.insert(id.clone(), slot);
                self.label_sets[slot_index(slot)] = Some(LabelSetEntry {
                    id,
                    own: FlatLabels::default(),
                    parents: Vec::new(),
                    effective: FlatLabels::default(),
                    syms: SymLabels::default(),
                    matches: SmallSet::default(),
                });
                slot
            }
        };
        for p in &parents {
            self.children.entry(p.clone()).or_default().insert(slot);
        }
        let effective = FlatLabels::merge(&own, parents.iter().filter_map(|p| self.parents.get(p)));
        if let Some(e) = self.set_mut(slot) {
            e.own = own;
            e.parents = parents;
        }
        // Events of a single label set come out of `set_effective` sorted.
        let mut events = Vec::new();
        self.set_effective(slot, effective, fresh, &mut events);
        if self.set_slots.len() >= self.refile_at {
            self.refile_at = self.set_slots.len().saturating_mul(2);
            self.refile_all();
        }
        events
    }

    fn unlink_child(&mut self, parent: &P, slot: Slot) {
        if let Some(kids) = self.children.get_mut(parent) {
            kids.remove(&slot);
            if kids.is_empty() {
                self.children.remove(parent);
            }
        }
    }

    /// Removes a label set; returns the match-stopped events, sorted.
    pub fn remove_labels(&mut self, id: &L) -> Vec<MatchEvent<S, L>> {
        let Some(slot) = self.set_slots.remove(id) else {
            return Vec::new();
        };
        let Some(entry) = self.label_sets[slot_index(slot)].take() else {
            return Vec::new();
        };
        for p in &entry.parents {
            self.unlink_child(p, slot);
        }
        for (k, v) in entry.effective.iter() {
            if let Some(le) = self.labels.get_mut(k) {
                le.sets.remove(slot, v);
            }
        }
        let mut events = Vec::new();
        for s in entry.matches.iter() {
            if let Some(e) = self.sel_mut(s) {
                e.matches.remove(&slot);
                events.push(MatchEvent::Stopped {
                    selector: e.id.clone(),
                    labels: entry.id.clone(),
                });
            }
        }
        self.free_set_slots.push(slot);
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
        let kids: Vec<Slot> = self
            .children
            .get(parent)
            .map(|c| c.iter().copied().collect())
            .unwrap_or_default();
        for l in kids {
            let Some(entry) = self.set(l) else {
                continue;
            };
            let parent_maps = entry.parents.iter().filter_map(|p| self.parents.get(p));
            let effective = FlatLabels::merge(&entry.own, parent_maps);
            if effective != entry.effective {
                self.set_effective(l, effective, false, &mut events);
            }
        }
        events.sort_unstable();
        events
    }

    /// Gives a label set new effective labels, re-indexes the pairs that changed and
    /// recomputes its matches from the candidate selectors only.
    ///
    /// A `fresh` label set has never been evaluated; otherwise a candidate selector that
    /// mentions none of the labels whose value changed keeps its previous result unevaluated.
    fn set_effective(
        &mut self,
        slot: Slot,
        effective: FlatLabels,
        fresh: bool,
        events: &mut Vec<MatchEvent<S, L>>,
    ) {
        let Some(entry) = self.set_mut(slot) else {
            return;
        };
        let old_effective = std::mem::take(&mut entry.effective);
        let old_matches = std::mem::take(&mut entry.matches);

        // One walk over old and new labels (both sorted by name) re-indexes the changed pairs
        // and collects the candidate selectors filed under the new pairs, with one lookup per
        // label name.
        let mut candidates: Vec<Slot> = Vec::new();
        let mut syms = SymLabels::default();
        let mut changed = 0u64;
        let (mut a, mut b) = (old_effective.iter().peekable(), effective.iter().peekable());
        'walk: loop {
            let (name, old_v, new_v) = match (a.peek().copied(), b.peek().copied()) {
                (None, None) => break 'walk,
                (Some((k, v)), None) => {
                    a.next();
                    (k, Some(v), None)
                }
                (None, Some((k, v))) => {
                    b.next();
                    (k, None, Some(v))
                }
                (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                    Ordering::Less => {
                        a.next();
                        (ka, Some(va), None)
                    }
                    Ordering::Greater => {
                        b.next();
                        (kb, None, Some(vb))
                    }
                    Ordering::Equal => {
                        a.next();
                        b.next();
                        (ka, Some(va), Some(vb))
                    }
                },
            };
            let Some(le) = self.labels.get_mut(name) else {
                continue;
            };
            if old_v != new_v {
                changed |= name_bit(le.name_id);
                if let Some(v) = old_v {
                    le.sets.remove(slot, v);
                }
                if let Some(v) = new_v {
                    le.sets.insert(slot, v);
                }
            }
            if let Some(v) = new_v {
                syms.set(le.name_id, self.interner.get(v));
                candidates.extend(le.sels.wildcard.iter().copied());
                if let Some(ss) = le.sels.by_value.get(v) {
                    candidates.extend(ss.iter().copied());
                }
            }
        }
        drop((a, b));
        candidates.extend(self.sels_full_scan.iter().copied());

        // A selector filed under several parts (`AnyOf`) can be reached more than once (its
        // second evaluation is merely redundant). The selectors to evaluate are gathered first
        // and their ops touched in a separate pass: those loads do not depend on each other,
        // so their cache misses overlap instead of stalling one evaluation after another.
        let mut new = SmallSet::default();
        let mut to_eval: Vec<&Compiled> = Vec::with_capacity(candidates.len());
        let mut to_eval_slots: Vec<Slot> = Vec::with_capacity(candidates.len());
        for &s in &candidates {
            let affected = fresh
                || self
                    .sel_masks
                    .get(slot_index(s))
                    .is_none_or(|m| m & changed != 0);
            if !affected {
                if old_matches.contains(s) {
                    new.insert(s);
                }
            } else if let Some(Some(e)) = self.selectors.get(slot_index(s)) {
                to_eval.push(&e.compiled);
                to_eval_slots.push(s);
            }
        }
        let touched = to_eval
            .iter()
            .filter(|c| matches!(c.ops.first(), Some(Op::And(..))))
            .count();
        std::hint::black_box(touched);
        for (c, &s) in to_eval.iter().zip(&to_eval_slots) {
            if c.evaluate(&syms, &effective) {
                new.insert(s);
            }
        }
        drop(to_eval);

        let Some(label_id) = self.set(slot).map(|e| e.id.clone()) else {
            return;
        };
        // One label set: sorting each list by selector id sorts the events.
        let mut stopped = Vec::new();
        for s in old_matches.iter().filter(|s| !new.contains(*s)) {
            if let Some(e) = self.sel_mut(s) {
                e.matches.remove(&slot);
                stopped.push(e.id.clone());
            }
        }
        let mut started = Vec::new();
        for s in new.iter().filter(|s| !old_matches.contains(*s)) {
            if let Some(e) = self.sel_mut(s) {
                e.matches.insert(slot);
                started.push(e.id.clone());
            }
        }
        stopped.sort_unstable();
        started.sort_unstable();
        events.extend(stopped.into_iter().map(|selector| MatchEvent::Stopped {
            selector,
            labels: label_id.clone(),
        }));
        events.extend(started.into_iter().map(|selector| MatchEvent::Started {
            selector,
            labels: label_id.clone(),
        }));
        if let Some(entry) = self.set_mut(slot) {
            entry.effective = effective;
            entry.syms = syms;
            entry.matches = new;
        }
    }

    /// Takes a reference on every label name `root` mentions; a name indexed for the first
    /// time gets its label-set index built from the current label sets. Names interned for
    /// the first time are appended to `new_syms`.
    fn retain_labels(&mut self, root: &Node, new_syms: &mut Vec<(Sym, String)>) {
        for name in label_names(root) {
            if let Some(le) = self.labels.get_mut(name) {
                le.refs += 1;
                continue;
            }
            let (name_id, new) = self.interner.intern(name);
            if new {
                new_syms.push((name_id, name.to_string()));
            }
            let mut le = LabelEntry {
                refs: 1,
                name_id,
                ..LabelEntry::default()
            };
            // Also refreshes pairs a set kept from an earlier time this name was indexed.
            for (i, e) in self.label_sets.iter_mut().enumerate() {
                if let Some(e) = e
                    && let Some(v) = e.effective.get(name)
                {
                    le.sets.insert(Slot::try_from(i).unwrap_or(Slot::MAX), v);
                    e.syms.set(name_id, self.interner.get(v));
                }
            }
            self.labels.insert(name.into(), le);
        }
    }

    /// Strings interned for the first time may already be values of label sets under indexed
    /// names; those sets learn the new id.
    fn patch_syms(&mut self, new_syms: &[(Sym, String)]) {
        for (id, s) in new_syms {
            for le in self.labels.values() {
                if let Some(slots) = le.sets.by_value.get(s.as_str()) {
                    for l in slots.iter() {
                        if let Some(Some(e)) = self.label_sets.get_mut(slot_index(l)) {
                            e.syms.set(le.name_id, *id);
                        }
                    }
                }
            }
        }
    }

    /// Drops the references `retain_labels` took for `root`; unreferenced names lose their
    /// index.
    fn release_labels(&mut self, root: &Node) {
        for name in label_names(root) {
            if let Some(le) = self.labels.get_mut(name) {
                le.refs = le.refs.saturating_sub(1);
                if le.refs == 0 {
                    self.labels.remove(name);
                }
            }
        }
    }

    // ----- queries -----

    /// Whether selector `s` currently matches label set `l`.
    pub fn is_match(&self, s: &S, l: &L) -> bool {
        match (self.sel_slots.get(s), self.set_slots.get(l)) {
            (Some(&ss), Some(&ls)) => self.sel(ss).is_some_and(|e| e.matches.contains(&ls)),
            _ => false,
        }
    }

    /// Selectors matching a label set (unordered).
    pub fn selectors_matching(&self, l: &L) -> impl Iterator<Item = &S> + '_ {
        self.set_slots
            .get(l)
            .and_then(|&ls| self.set(ls))
            .into_iter()
            .flat_map(|e| e.matches.iter())
            .filter_map(|s| self.sel(s).map(|e| &e.id))
    }

    /// Label sets matched by a selector (unordered).
    pub fn label_sets_matching(&self, s: &S) -> impl Iterator<Item = &L> + '_ {
        self.sel_slots
            .get(s)
            .and_then(|&ss| self.sel(ss))
            .into_iter()
            .flat_map(|e| e.matches.iter())
            .filter_map(|&l| self.set(l).map(|e| &e.id))
    }

    /// Number of label sets a selector matches.
    pub fn match_count(&self, s: &S) -> usize {
        self.sel_slots
            .get(s)
            .and_then(|&ss| self.sel(ss))
            .map_or(0, |e| e.matches.len())
    }

    /// The stored selector.
    pub fn selector(&self, s: &S) -> Option<&Selector> {
        self.sel(*self.sel_slots.get(s)?).map(|e| &e.selector)
    }

    /// How a stored selector is currently filed.
    pub fn scan_strategy(&self, s: &S) -> Option<&ScanStrategy> {
        self.sel(*self.sel_slots.get(s)?).map(|e| &e.strategy)
    }

    /// A label set's own labels and parents, as last given.
    pub fn own_labels(&self, l: &L) -> Option<(&FlatLabels, &[P])> {
        self.set(*self.set_slots.get(l)?)
            .map(|e| (&e.own, e.parents.as_slice()))
    }

    /// A label set's effective labels (own over inherited).
    pub fn effective_labels(&self, l: &L) -> Option<&FlatLabels> {
        self.set(*self.set_slots.get(l)?).map(|e| &e.effective)
    }

    /// A parent's labels.
    pub fn parent_labels(&self, p: &P) -> Option<&LabelMap> {
        self.parents.get(p)
    }

    /// Ids of all selectors.
    pub fn selector_ids(&self) -> impl Iterator<Item = &S> + '_ {
        self.sel_slots.keys()
    }

    /// Ids of all label sets.
    pub fn label_set_ids(&self) -> impl Iterator<Item = &L> + '_ {
        self.set_slots.keys()
    }

    pub fn num_selectors(&self) -> usize {
        self.sel_slots.len()
    }

    pub fn num_label_sets(&self) -> usize {
        self.set_slots.len()
    }

    /// Number of selectors evaluated against every label set (no usable restriction).
    pub fn num_full_scan_selectors(&self) -> usize {
        self.sels_full_scan.len()
    }

    /// All current matches, sorted (for tests and debugging).
    pub fn all_matches(&self) -> Vec<(S, L)> {
        let mut out: Vec<(S, L)> = self
            .selectors
            .iter()
            .flatten()
            .flat_map(|e| {
                e.matches
                    .iter()
                    .filter_map(|&l| self.set(l).map(|le| (e.id.clone(), le.id.clone())))
            })
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
    fn flat_labels_inline_and_heap() {
        let small = lm(&[
            ("b", "2"),
            ("a", "1"),
            ("projectcalico.org/namespace", "ns"),
        ]);
        let many: LabelMap = (0..40)
            .map(|i| (format!("k{i:02}"), format!("v{i}")))
            .collect();
        let long_value = "x".repeat(70_000);
        let long = lm(&[("a", "1"), ("big", long_value.as_str())]);
        for map in [&small, &many, &long] {
            let flat = FlatLabels::from_map(map);
            assert_eq!(flat.len(), map.len());
            assert_eq!(&flat.to_map(), map);
            for (k, v) in map {
                assert_eq!(flat.get(k), Some(v.as_str()));
            }
            assert_eq!(flat.get("missing"), None);
            assert_eq!(flat, FlatLabels::from_map(map));
        }
        assert!(matches!(
            FlatLabels::from_map(&small).spans,
            Spans::Inline { .. }
        ));
        assert!(matches!(FlatLabels::from_map(&many).spans, Spans::Heap(_)));
        assert!(matches!(FlatLabels::from_map(&long).spans, Spans::Heap(_)));
        assert!(FlatLabels::from_map(&LabelMap::new()).is_empty());
        assert_ne!(FlatLabels::from_map(&small), FlatLabels::from_map(&many));
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
            idx.update_labels("e1", &lm(&[("app", "web")]), vec![]),
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
            idx.update_labels("e2", &lm(&[("app", "web")]), vec![]),
            vec![started("s1", "e2")]
        );
        assert_eq!(
            idx.update_labels("e1", &lm(&[("app", "db")]), vec![]),
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
    fn interned_ids_follow_selector_and_label_churn() {
        let mut idx: LabelIndex<&str, &str> = LabelIndex::new();
        idx.update_selector("a", parse("app == 'a'").unwrap());
        assert_eq!(
            idx.update_labels("e1", &lm(&[("app", "a"), ("tier", "app")]), vec![]),
            vec![started("a", "e1")]
        );
        // `app` stops being indexed while e1 still holds its old interned pair.
        assert_eq!(idx.remove_selector(&"a"), vec![stopped("a", "e1")]);
        idx.update_labels("e1", &lm(&[("app", "b"), ("tier", "app")]), vec![]);
        // Re-indexed name, values interned after the label set was stored, a value that is
        // also a label name, and sets too large to sit inside their op.
        assert_eq!(
            idx.update_selector("b", parse("app == 'b'").unwrap()),
            vec![started("b", "e1")]
        );
        assert_eq!(
            idx.update_selector("has", parse("has(app)").unwrap()),
            vec![started("has", "e1")]
        );
        assert_eq!(
            idx.update_selector("name", parse("tier == 'app'").unwrap()),
            vec![started("name", "e1")]
        );
        assert_eq!(
            idx.update_selector("in", parse("app in {'w', 'x', 'y', 'b'}").unwrap()),
            vec![started("in", "e1")]
        );
        assert_eq!(
            idx.update_selector("notin", parse("app not in {'b', 'c', 'd', 'e'}").unwrap()),
            vec![]
        );
        assert_eq!(
            idx.update_selector("few", parse("app not in {'c', 'd'}").unwrap()),
            vec![started("few", "e1")]
        );
        // A change of a label no selector of e1 mentions keeps every match.
        assert_eq!(
            idx.update_labels(
                "e1",
                &lm(&[("app", "b"), ("tier", "app"), ("x", "1")]),
                vec![]
            ),
            vec![]
        );
        assert_eq!(
            idx.update_labels("e1", &lm(&[("app", "c"), ("tier", "app")]), vec![]),
            vec![
                stopped("b", "e1"),
                stopped("few", "e1"),
                stopped("in", "e1")
            ]
        );
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
                &lm(&[("app", "dns"), ("role", "db")]),
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
            idx.update_labels("e1", &lm(&[("app", "dns")]), vec!["p2"]),
            vec![stopped("role", "e1")]
        );
    }
}
